//! The dashboard's twin and direct-method routes: the same hub operations as the service REST
//! API (`GET`/`PATCH /twins/{id}`, `POST /twins/{id}/methods`), behind the dashboard's guard.
//!
//! - `GET /dashboard/api/twin?id=` answers the service view of the device twin.
//! - `POST /dashboard/api/twin/desired` `{deviceId, desired, etag}` merges `desired` into the
//!   desired properties (a `null` removes a property), with `If-Match` semantics on `etag`.
//! - `POST /dashboard/api/method/invoke` `{deviceId, call: CloudToDeviceMethod}` invokes a
//!   direct method and answers `{status, payload}` as the device did.

use axum::Json;
use axum::extract::State;
use iothub_protocol::HubError;
use iothub_protocol::method::CloudToDeviceMethod;
use iothub_protocol::twin::TwinWrite;
use serde::Deserialize;
use serde_json::{Value, json};

use super::guard::{Read, Write};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::hub::Identity;

/// Longest method call the page may wait for (connect plus response timeout): the dashboard's
/// requests end within the plain port's request timeout, unlike the service route.
pub const MAX_CALL_SECONDS: u32 = 25;

/// `GET /dashboard/api/twin?id=<device>`.
pub async fn twin(
    State(st): State<AppState>,
    _: Read,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let id = query.get("id").unwrap_or_default().to_owned();
    let t = st.ctx.hub.read(|h| h.get_twin(&Identity::device(&id)))?;
    Ok(Json(json!(t)))
}

/// A desired-properties patch from the page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredPatch {
    device_id: String,
    desired: Value,
    #[serde(default)]
    etag: Option<String>,
}

/// `POST /dashboard/api/twin/desired`.
pub async fn patch_desired(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<DesiredPatch>,
) -> Result<Json<Value>, ApiError> {
    let w = TwinWrite::from_json(&json!({ "properties": { "desired": r.desired } }))?;
    let identity = Identity::device(&r.device_id);
    let etag = r.etag.filter(|e| !e.is_empty());
    let t = st
        .ctx
        .hub
        .run(|h, now| h.update_twin(&identity, &w, etag.as_deref(), now))?;
    Ok(Json(json!(t)))
}

/// A method call from the page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoke {
    device_id: String,
    call: Value,
}

/// `POST /dashboard/api/method/invoke`.
pub async fn invoke_method(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<Invoke>,
) -> Result<Json<Value>, ApiError> {
    let call = CloudToDeviceMethod::from_json(r.call.to_string().as_bytes())?.into_call()?;
    if call.connect_timeout_secs + call.response_timeout_secs > MAX_CALL_SECONDS {
        return Err(HubError::argument(format!(
            "the dashboard waits at most {MAX_CALL_SECONDS} s: lower the connect and response timeouts (the service API allows longer calls)"
        ))
        .into());
    }
    let pending = st
        .ctx
        .hub
        .invoke_method(&Identity::device(r.device_id), call)?;
    Ok(Json(json!(pending.outcome().await?)))
}
