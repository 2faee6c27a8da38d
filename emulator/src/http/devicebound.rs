//! Cloud-to-device messages for a device polling over HTTPS.
//!
//! Reference: iothub-protocol.md 4.1 and 4.2. `GET /devices/{id}/messages/deviceBound` locks the
//! oldest available message and answers 200 with its body and headers (the quoted lock token in
//! `ETag`), or 204 when nothing is available. The lock token then settles it:
//! `DELETE .../{lock}` completes, `DELETE .../{lock}?reject` rejects, `POST .../{lock}/abandon`
//! abandons; an unknown or expired lock is 412 `DeviceMessageLockLost`. The `If-Match` header
//! the SDKs also send (quoted or not) is not needed: the path carries the token. Every route
//! needs the device's own token, or a policy with DeviceConnect.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, LockParam, Query};
use super::message_headers::devicebound_headers;
use crate::auth::Need;

/// `GET /devices/{id}/messages/deviceBound`.
pub async fn receive(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Response, ApiError> {
    token.authorize(&st.ctx, Need::Device(&id))?;
    let got = st.ctx.hub.run(|hub, now| hub.receive_c2d(&id, now))?;
    Ok(match got {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(m) => {
            let headers = devicebound_headers(&m);
            (StatusCode::OK, headers, m.body).into_response()
        }
    })
}

/// `DELETE /devices/{id}/messages/deviceBound/{lock}` (complete), with `?reject` (reject).
pub async fn settle(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    LockParam(lock): LockParam,
    query: Query,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, Need::Device(&id))?;
    if query.has("reject") {
        st.ctx.hub.run(|hub, now| hub.reject_c2d(&id, &lock, now))?;
    } else {
        st.ctx
            .hub
            .run(|hub, now| hub.complete_c2d(&id, &lock, now))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /devices/{id}/messages/deviceBound/{lock}/abandon`.
pub async fn abandon(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    LockParam(lock): LockParam,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, Need::Device(&id))?;
    st.ctx
        .hub
        .run(|hub, now| hub.abandon_c2d(&id, &lock, now))?;
    Ok(StatusCode::NO_CONTENT)
}
