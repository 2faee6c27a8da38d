//! `POST /twins/{id}/methods`: the service invokes a direct method and waits for the outcome.
//!
//! Reference: iothub-beyond-c2d.md 2.1. The body is a `CloudToDeviceMethod`
//! (`{methodName, payload, connectTimeoutInSeconds, responseTimeoutInSeconds}`); the answer is
//! 200 `{"status": <device's status>, "payload": <device's payload>}` whatever status the device
//! chose, or one of the hub's errors (404103 `DeviceNotOnline`, 504101 `GatewayTimeout`, ...)
//! in the JSON-in-`Message` body shape the SDKs parse for method errors. The request stays
//! open up to connect + response timeout: the request-timeout layer gives this route
//! [`LONGEST_CALL`] more than other routes.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use iothub_protocol::method::{
    CONNECT_TIMEOUT_SECS, CloudToDeviceMethod, CloudToDeviceMethodResult, MAX_PAYLOAD_BYTES,
    RESPONSE_TIMEOUT_SECS,
};

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, read_body, require_json};
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::hub::Identity;

const SERVICE: Need<'static> = Need::Permissions(Permissions::SERVICE_CONNECT);

/// The longest a method call can stay open: the largest connect plus response timeout.
pub const LONGEST_CALL: Duration =
    Duration::from_secs(*CONNECT_TIMEOUT_SECS.end() as u64 + *RESPONSE_TIMEOUT_SECS.end() as u64);

/// Room for the fields around a payload of the largest size: a larger body is refused before
/// it is parsed; a payload over 128 KB inside a smaller one gets `MessageTooLarge` from the
/// parser.
const MAX_BODY: usize = MAX_PAYLOAD_BYTES + 16 * 1024;

/// True for the paths of this module (`.../methods`), which the request-timeout layer lets run
/// for [`LONGEST_CALL`].
pub fn is_method_call(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p.len() >= "/methods".len()
        && p.get(p.len() - "/methods".len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("/methods"))
        && p.get(..7)
            .is_some_and(|head| head.eq_ignore_ascii_case("/twins/"))
}

/// `POST /twins/{id}/methods`.
pub async fn invoke(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CloudToDeviceMethodResult>, ApiError> {
    token.authorize(&st.ctx, SERVICE)?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, MAX_BODY).await?;
    let call = CloudToDeviceMethod::from_json(&bytes)?.into_call()?;
    let pending = st.ctx.hub.invoke_method(&Identity::device(id), call)?;
    Ok(Json(pending.outcome().await?))
}

/// `POST /twins/{id}/modules/{mid}/methods`: as [`invoke`], for a module (404010
/// `ModuleNotFound` when it is not registered).
pub async fn invoke_module(
    State(st): State<AppState>,
    token: Token,
    path: super::modules::ModulePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CloudToDeviceMethodResult>, ApiError> {
    token.authorize(&st.ctx, SERVICE)?;
    require_json(&headers)?;
    let bytes = read_body(body, &headers, MAX_BODY).await?;
    let call = CloudToDeviceMethod::from_json(&bytes)?.into_call()?;
    let identity = Identity::module(path.device_id, path.module_id);
    let pending = st.ctx.hub.invoke_method(&identity, call)?;
    Ok(Json(pending.outcome().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_are_recognised_in_any_case() {
        for p in [
            "/twins/d1/methods",
            "/twins/d1/methods/",
            "/TWINS/d1/Methods",
            "/twins/d1/modules/m1/methods",
        ] {
            assert!(is_method_call(p), "{p}");
        }
        for p in [
            "/devices/d1/methods",
            "/twins/d1",
            "/methods",
            "",
            "/twins/",
        ] {
            assert!(!is_method_call(p), "{p}");
        }
        assert_eq!(LONGEST_CALL, Duration::from_secs(600));
    }
}
