//! The identity registry over REST: `PUT/GET/DELETE /devices/{id}`, `GET /devices`,
//! `GET /statistics/devices`.
//!
//! Reference: iothub-protocol.md 6; official-sdks.md 2.2 and 2.4. Create and update answer 200
//! (the Python SDK expects 200, not 201) with the device JSON and its quoted `ETag`; delete
//! answers 204. `If-Match` is absent on create, `*`, `"*"`, or an etag on update and delete
//! (the hub's [`crate::hub::if_match_allows`] decides). Reads need RegistryRead, writes
//! RegistryWrite.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iothub_protocol::HubError;
use iothub_protocol::registry::{Device, DeviceStatus};
use serde::Serialize;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, Query, header_text, parse_json, read_body, require_json};
use crate::auth::Need;
use crate::credentials::Permissions;

/// Largest registry request body (a device JSON is well under 2 KB).
pub const DEVICE_BODY_LIMIT: usize = 64 * 1024;
/// `top` when absent or outside 1..=1000.
pub const MAX_TOP: usize = 1000;

/// The registry permission `permissions` on `resource`: a policy token scoped to the device
/// (or to `/devices`) may read or write that device, not others, and lists nothing.
fn on(permissions: Permissions, resource: &str) -> Need<'_> {
    Need::Scoped {
        permissions,
        resource,
    }
}

/// The resource path of a device, for scope checks.
fn device_resource(id: &str) -> String {
    format!("devices/{id}")
}

/// 200 with the device JSON and `ETag: "<etag>"`.
fn device_response(d: Device) -> Response {
    let etag = format!("\"{}\"", d.etag.as_deref().unwrap_or_default());
    let mut r = Json(d).into_response();
    if let Ok(v) = etag.parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// The `If-Match` value; an empty header counts as absent.
fn if_match(headers: &HeaderMap) -> Option<String> {
    header_text(headers, header::IF_MATCH.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `GET /devices/{id}`.
pub async fn get_device(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Response, ApiError> {
    token.authorize(
        &st.ctx,
        on(Permissions::REGISTRY_READ, &device_resource(&id)),
    )?;
    let d = st.ctx.hub.read(|hub| hub.get_device(&id))?;
    Ok(device_response(d))
}

/// `PUT /devices/{id}`: create without `If-Match`, update with it.
pub async fn put_device(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    token.authorize(
        &st.ctx,
        on(Permissions::REGISTRY_WRITE, &device_resource(&id)),
    )?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, DEVICE_BODY_LIMIT).await?;
    let device: Device = parse_json(&bytes, "device JSON")?;
    if device.device_id != id {
        return Err(HubError::argument(format!(
            "the deviceId in the body ('{}') differs from the device id in the path ('{id}'); they must be equal",
            device.device_id
        ))
        .into());
    }
    let m = if_match(&headers);
    let d = st
        .ctx
        .hub
        .run(|hub, now| hub.put_device(device, m.as_deref(), now))?;
    Ok(device_response(d))
}

/// `DELETE /devices/{id}`.
pub async fn delete_device(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    token.authorize(
        &st.ctx,
        on(Permissions::REGISTRY_WRITE, &device_resource(&id)),
    )?;
    let m = if_match(&headers);
    st.ctx
        .hub
        .run(|hub, now| hub.delete_device(&id, m.as_deref(), now))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices?top=N`: devices in id order; `top` outside 1..=1000 means 1000.
pub async fn list_devices(
    State(st): State<AppState>,
    token: Token,
    query: Query,
) -> Result<Json<Vec<Device>>, ApiError> {
    token.authorize(&st.ctx, on(Permissions::REGISTRY_READ, "devices"))?;
    let top = query
        .get("top")
        .and_then(|t| t.trim().parse::<usize>().ok())
        .filter(|t| (1..=MAX_TOP).contains(t))
        .unwrap_or(MAX_TOP);
    Ok(Json(st.ctx.hub.read(|hub| hub.list_devices(top))))
}

/// Body of `GET /statistics/devices`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    /// Every device.
    pub total_device_count: usize,
    /// Devices with `status: enabled`.
    pub enabled_device_count: usize,
    /// Devices with `status: disabled`.
    pub disabled_device_count: usize,
}

/// `GET /statistics/devices`.
pub async fn statistics(
    State(st): State<AppState>,
    token: Token,
) -> Result<Json<RegistryStatistics>, ApiError> {
    token.authorize(
        &st.ctx,
        on(Permissions::REGISTRY_READ, "statistics/devices"),
    )?;
    let (total, enabled) = st.ctx.hub.read(|hub| {
        let all = hub.list_devices(usize::MAX);
        let enabled = all
            .iter()
            .filter(|d| d.status == DeviceStatus::Enabled)
            .count();
        (all.len(), enabled)
    });
    Ok(Json(RegistryStatistics {
        total_device_count: total,
        enabled_device_count: enabled,
        disabled_device_count: total - enabled,
    }))
}
