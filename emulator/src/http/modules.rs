//! Module identities and module twins over the service REST API (iothub-beyond-c2d.md 4).
//!
//! | Method and path | Needs | Answer |
//! |---|---|---|
//! | `PUT /devices/{id}/modules/{mid}` | RegistryWrite | 200 module JSON + `ETag`; no `If-Match` creates (409 `ModuleAlreadyExistsOnDevice`), `If-Match: *` or an etag updates (404, 412) |
//! | `GET /devices/{id}/modules/{mid}` | RegistryRead | 200 module JSON + `ETag`, 404 `DeviceNotFound`/`ModuleNotFound` |
//! | `DELETE /devices/{id}/modules/{mid}` | RegistryWrite | 204; optional `If-Match` (412) |
//! | `GET /devices/{id}/modules` | RegistryRead | 200 array of the device's modules |
//! | `GET/PATCH/PUT /twins/{id}/modules/{mid}` | as `/twins/{id}` | the module twin |
//!
//! Create answers 200 like the device registry (Python accepts 200 and 201, Node any 2xx).

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iothub_protocol::HubError;
use iothub_protocol::module::{Module, validate_module_id};

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, header_text, parse_json, path_param, read_body, require_json};
use super::registry::DEVICE_BODY_LIMIT;
use super::twins::{authorize_either, twin_response, write_body};
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::hub::Identity;

const READ: Need<'static> = Need::Permissions(Permissions::REGISTRY_READ);
const WRITE: Need<'static> = Need::Permissions(Permissions::REGISTRY_WRITE);

/// The `{id}` and `{mid}` path segments, both checked against the id rules.
#[derive(Debug, Clone)]
pub struct ModulePath {
    /// The device id.
    pub device_id: String,
    /// The module id.
    pub module_id: String,
}

impl ModulePath {
    fn identity(&self) -> Identity {
        Identity::module(&self.device_id, &self.module_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ModulePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let DeviceIdParam(device_id) = DeviceIdParam::from_request_parts(parts, state).await?;
        let module_id = path_param(parts, state, "mid").await?;
        validate_module_id(&module_id).map_err(HubError::argument)?;
        Ok(ModulePath {
            device_id,
            module_id,
        })
    }
}

/// 200 with the module JSON and `ETag: "<etag>"`.
fn module_response(m: Module) -> Response {
    let etag = format!("\"{}\"", m.etag.as_deref().unwrap_or_default());
    let mut r = Json(m).into_response();
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

/// `GET /devices/{id}/modules/{mid}`.
pub async fn get_module(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
) -> Result<Response, ApiError> {
    token.authorize(&st.ctx, READ)?;
    let m = st
        .ctx
        .hub
        .read(|hub| hub.get_module(&path.device_id, &path.module_id))?;
    Ok(module_response(m))
}

/// `PUT /devices/{id}/modules/{mid}`: create without `If-Match`, update with it.
pub async fn put_module(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    token.authorize(&st.ctx, WRITE)?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, DEVICE_BODY_LIMIT).await?;
    let mut module: Module = parse_json(&bytes, "module JSON")?;
    for (what, body_id, path_id) in [
        ("deviceId", &module.device_id, &path.device_id),
        ("moduleId", &module.module_id, &path.module_id),
    ] {
        // The SDKs always send both; an empty one is filled from the path.
        if !body_id.is_empty() && body_id != path_id {
            return Err(HubError::argument(format!(
                "the {what} in the body ('{body_id}') differs from the one in the path ('{path_id}'); they must be equal"
            ))
            .into());
        }
    }
    module.device_id = path.device_id;
    module.module_id = path.module_id;
    let m = if_match(&headers);
    let created = st
        .ctx
        .hub
        .run(|hub, now| hub.put_module(module, m.as_deref(), now))?;
    Ok(module_response(created))
}

/// `DELETE /devices/{id}/modules/{mid}`.
pub async fn delete_module(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, WRITE)?;
    let m = if_match(&headers);
    st.ctx
        .hub
        .run(|hub, now| hub.delete_module(&path.device_id, &path.module_id, m.as_deref(), now))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices/{id}/modules`: the device's modules in id order.
pub async fn list_modules(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Vec<Module>>, ApiError> {
    token.authorize(&st.ctx, READ)?;
    Ok(Json(st.ctx.hub.read(|hub| hub.list_modules(&id))?))
}

/// `GET /twins/{id}/modules/{mid}`.
pub async fn get_module_twin(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_READ)?;
    let t = st.ctx.hub.read(|hub| hub.get_twin(&path.identity()))?;
    Ok(twin_response(t))
}

/// `PATCH /twins/{id}/modules/{mid}`: merge tags and desired properties.
pub async fn patch_module_twin(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_WRITE)?;
    let w = write_body(&headers, body).await?;
    let m = if_match(&headers);
    let identity = path.identity();
    let t = st
        .ctx
        .hub
        .run(|hub, now| hub.update_twin(&identity, &w, m.as_deref(), now))?;
    Ok(twin_response(t))
}

/// `PUT /twins/{id}/modules/{mid}`: replace tags and desired properties.
pub async fn put_module_twin(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_either(&st, &token, Permissions::REGISTRY_WRITE)?;
    let w = write_body(&headers, body).await?;
    let m = if_match(&headers);
    let identity = path.identity();
    let t = st
        .ctx
        .hub
        .run(|hub, now| hub.replace_twin(&identity, &w, m.as_deref(), now))?;
    Ok(twin_response(t))
}
