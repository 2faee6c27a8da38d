//! Twins, queries and bulk registry writes over the service REST API (iothub-beyond-c2d.md
//! 1.6, 1.7; swagger `BulkRegistry_UpdateRegistry`).
//!
//! | Method and path | Needs | Answer |
//! |---|---|---|
//! | `GET /twins/{id}` | RegistryRead or ServiceConnect | 200 service view + `ETag` |
//! | `PATCH /twins/{id}` | RegistryWrite or ServiceConnect | 200 updated twin; merges tags and desired; `If-Match` (412) |
//! | `PUT /twins/{id}` | RegistryWrite or ServiceConnect | 200; replaces tags and desired |
//! | `POST /devices/query` | RegistryRead or ServiceConnect | 200 JSON array + `x-ms-item-type`, `x-ms-continuation` only when more pages follow |
//! | `POST /devices` | RegistryWrite | 200 `BulkRegistryOperationResult` (per-device errors inside) |
//!
//! The hub decides everything (etags, merge rules, limits, paging); this file moves headers
//! and bodies. Either permission is enough for twins because the SDK samples use both the
//! `registryReadWrite` and the `service` policies for them.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use iothub_protocol::HubError;
use iothub_protocol::bulk::{BulkRegistryOperationResult, ExportImportDevice};
use iothub_protocol::query::{
    CONTINUATION_HEADER, ITEM_TYPE_HEADER, MAX_ITEM_COUNT_HEADER, QuerySpecification, page_size,
};
use iothub_protocol::twin::{Twin, TwinWrite};
use serde_json::Value;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, header_text, parse_json, read_body, require_json};
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::hub::Identity;

/// Largest twin write body: the section limits (8 + 32 KB) with room for metadata clients
/// echo back.
pub const TWIN_BODY_LIMIT: usize = 256 * 1024;
/// Largest bulk body: 100 devices, each with a full twin.
pub const BULK_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Largest query body.
pub const QUERY_BODY_LIMIT: usize = 512 * 1024;

pub(super) fn authorize_either(
    st: &AppState,
    token: &Token,
    a: Permissions,
) -> Result<(), HubError> {
    match token.authorize(&st.ctx, Need::Permissions(a)) {
        Ok(_) => Ok(()),
        Err(first) => token
            .authorize(&st.ctx, Need::Permissions(Permissions::SERVICE_CONNECT))
            .map(|_| ())
            .map_err(|_| first),
    }
}

/// 200 with the twin and `ETag: "<etag>"`.
pub(super) fn twin_response(t: Twin) -> Response {
    let etag = t.etag.as_deref().map(|e| format!("\"{e}\""));
    let mut r = Json(t).into_response();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    header_text(headers, header::IF_MATCH.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `GET /twins/{id}`.
pub async fn get_twin(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_READ)?;
    let t = st
        .ctx
        .hub
        .read(|hub| hub.get_twin(&Identity::device(&id)))?;
    Ok(twin_response(t))
}

pub(super) async fn write_body(headers: &HeaderMap, body: Body) -> Result<TwinWrite, HubError> {
    require_json(headers)?;
    let bytes = read_body(body, headers, TWIN_BODY_LIMIT).await?;
    let v: Value = parse_json(&bytes, "twin JSON")?;
    TwinWrite::from_json(&v)
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch_twin(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_WRITE)?;
    let w = write_body(&headers, body).await?;
    let m = if_match(&headers);
    let identity = Identity::device(&id);
    let t = st
        .ctx
        .hub
        .run(|hub, now| hub.update_twin(&identity, &w, m.as_deref(), now))?;
    Ok(twin_response(t))
}

/// `PUT /twins/{id}`: replace tags and desired properties.
pub async fn put_twin(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_WRITE)?;
    let w = write_body(&headers, body).await?;
    let m = if_match(&headers);
    let identity = Identity::device(&id);
    let t = st
        .ctx
        .hub
        .run(|hub, now| hub.replace_twin(&identity, &w, m.as_deref(), now))?;
    Ok(twin_response(t))
}

/// `POST /devices/query`: one page of results.
pub async fn query(
    State(st): State<AppState>,
    token: Token,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_READ)?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, QUERY_BODY_LIMIT).await?;
    let spec: QuerySpecification = parse_json(&bytes, "query specification")?;
    let size = page_size(header_text(&headers, MAX_ITEM_COUNT_HEADER));
    let continuation = header_text(&headers, CONTINUATION_HEADER).map(str::to_owned);
    let page = st
        .ctx
        .hub
        .read(|hub| hub.query_twins(&spec.query, size, continuation.as_deref()))?;
    let mut r = Json(page.items).into_response();
    let h = r.headers_mut();
    h.insert(
        ITEM_TYPE_HEADER,
        HeaderValue::from_static(page.item_type.as_str()),
    );
    if let Some(v) = page
        .continuation_token
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        h.insert(CONTINUATION_HEADER, v);
    }
    Ok(r)
}

/// `POST /devices`: bulk create, update and delete.
pub async fn bulk(
    State(st): State<AppState>,
    token: Token,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BulkRegistryOperationResult>, ApiError> {
    token.authorize(&st.ctx, Need::Permissions(Permissions::REGISTRY_WRITE))?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, BULK_BODY_LIMIT).await?;
    let ops: Vec<ExportImportDevice> = parse_json(&bytes, "array of ExportImportDevice")?;
    let result = st.ctx.hub.run(|hub, now| hub.bulk_registry(&ops, now))?;
    Ok(Json(result))
}
