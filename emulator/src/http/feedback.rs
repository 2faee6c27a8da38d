//! Delivery feedback for the service over HTTPS.
//!
//! Reference: iothub-protocol.md 2.6 (swagger operations) and 2.3 (the batch). `GET
//! /messages/serviceBound/feedback` locks the oldest released batch and answers 200 with the
//! JSON array of records, `Content-Type: application/vnd.microsoft.iothub.feedback.json` and the
//! lock token as a quoted `ETag` (the swagger does not say how the token is returned; `ETag` is
//! what device C2D over HTTPS uses), or 204 when no batch is waiting. `DELETE .../{lock}`
//! completes the batch and `POST .../{lock}/abandon` offers it again; both answer 204, or 412
//! `DeviceMessageLockLost` for an unknown or expired lock. Every route needs ServiceConnect.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use iothub_protocol::HubError;
use iothub_protocol::feedback::FEEDBACK_CONTENT_TYPE;
use iothub_protocol::time_format::format_millis;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::LockParam;
use super::message_headers::{DELIVERY_COUNT, ENQUEUED_TIME, USER_ID, header_value};
use crate::auth::Need;
use crate::credentials::Permissions;

const SERVICE: Need<'static> = Need::Permissions(Permissions::SERVICE_CONNECT);

/// `GET /messages/serviceBound/feedback`.
pub async fn receive(State(st): State<AppState>, token: Token) -> Result<Response, ApiError> {
    token.authorize(&st.ctx, SERVICE)?;
    let Some(d) = st.ctx.hub.run(|hub, now| hub.receive_feedback(now)) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // A record reports an outcome (a completion, a rejection); the service must not see it
    // before that outcome is on disk, or a crash could undo an outcome it was told about.
    st.ctx
        .hub
        .synced()
        .await
        .map_err(|e| HubError::ServerError {
            detail: e.to_string(),
        })?;
    let headers = [
        (
            header::ETAG.as_str(),
            header_value(&format!("\"{}\"", d.lock_token)),
        ),
        (
            header::CONTENT_TYPE.as_str(),
            header_value(FEEDBACK_CONTENT_TYPE),
        ),
        (
            ENQUEUED_TIME,
            header_value(&format_millis(d.batch.enqueued_time)),
        ),
        (USER_ID, header_value(&d.batch.user_id)),
        (DELIVERY_COUNT, header_value(&d.delivery_count.to_string())),
    ];
    Ok((StatusCode::OK, headers, d.batch.body_json()).into_response())
}

/// `DELETE /messages/serviceBound/feedback/{lock}`.
pub async fn complete(
    State(st): State<AppState>,
    token: Token,
    LockParam(lock): LockParam,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, SERVICE)?;
    st.ctx
        .hub
        .run(|hub, now| hub.complete_feedback(&lock, now))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /messages/serviceBound/feedback/{lock}/abandon`.
pub async fn abandon(
    State(st): State<AppState>,
    token: Token,
    LockParam(lock): LockParam,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, SERVICE)?;
    st.ctx
        .hub
        .run(|hub, now| hub.abandon_feedback(&lock, now))?;
    Ok(StatusCode::NO_CONTENT)
}
