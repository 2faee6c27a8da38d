//! The emulator's control API under `/_emulator/`: inspect and steer the hub from tests.
//!
//! Reference: anchors.md 3.9 item 8. Every route needs a token of a policy with all
//! permissions (`iothubowner`). What the hub holds is answered with the hub's read-only views
//! ([`crate::hub::views`]): JSON with camelCase names, times in RFC 3339 with milliseconds,
//! bodies as base64 (`body`) and, when they are UTF-8, as text (`bodyText`). The routes are
//! listed in the `http` module documentation.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use iothub_protocol::HubError;
use iothub_protocol::time_format::format_millis;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, Query};
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::driver::HubHandle;
use crate::hub::views::{C2dMessageView, D2cRecordView, DeviceSummary};

const OWNER: Need<'static> = Need::Permissions(Permissions::ALL);
/// Longest single clock advance: ten years. Larger steps would soon overflow the calendar.
pub const MAX_ADVANCE_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// `POST /_emulator/reset`: removes every device, message and feedback record.
pub async fn reset(State(st): State<AppState>, token: Token) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let removed = st.ctx.hub.run(|hub, _| {
        let n = hub.device_count();
        hub.reset();
        n
    });
    Ok(Json(json!({ "devicesRemoved": removed })))
}

/// `GET /_emulator/devices`: every device with its queue counts and connection state.
pub async fn devices(
    State(st): State<AppState>,
    token: Token,
) -> Result<Json<Vec<DeviceSummary>>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    Ok(Json(st.ctx.hub.read(|hub| hub.device_summaries())))
}

/// `GET /_emulator/devices/{id}/c2d`: the device's pending C2D messages, oldest first.
pub async fn peek_c2d(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Vec<C2dMessageView>>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    Ok(Json(st.ctx.hub.read(|hub| hub.c2d_view(&id))?))
}

/// `GET /_emulator/devices/{id}/d2c`: the device's recorded telemetry, oldest first.
pub async fn d2c(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Vec<D2cRecordView>>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    Ok(Json(st.ctx.hub.read(|hub| hub.d2c_view(&id))?))
}

/// `POST /_emulator/feedback/flush`: releases the feedback records waiting for the batch window.
pub async fn flush_feedback(
    State(st): State<AppState>,
    token: Token,
) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let available = st.ctx.hub.run(|hub, now| {
        hub.flush_feedback(now);
        hub.has_feedback_available()
    });
    Ok(Json(json!({ "feedbackAvailable": available })))
}

/// `POST /_emulator/clock/advance?seconds=N`: moves a virtual clock forward and fires what
/// became due (lock expiry, TTL, feedback windows).
pub async fn advance_clock(
    State(st): State<AppState>,
    token: Token,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let hub = &st.ctx.hub;
    let raw = query.get("seconds").unwrap_or_default();
    let seconds = raw.trim().parse::<f64>().unwrap_or(f64::NAN);
    let by = checked_advance(hub, seconds, raw)?;
    hub.advance_clock(by);
    Ok(Json(json!({
        "advancedSeconds": seconds,
        "now": format_millis(hub.now()),
    })))
}

/// How far `seconds` moves the clock, if the clock is virtual and the step is allowed (0 to
/// [`MAX_ADVANCE_SECONDS`], and not past the year 9000). Shared with the dashboard.
/// `raw` is what the caller sent, for the error message.
pub fn checked_advance(hub: &HubHandle, seconds: f64, raw: &str) -> Result<Duration, HubError> {
    if !hub.clock().is_virtual() {
        return Err(HubError::InvalidOperation {
            detail: "the clock is real; start the emulator with --virtual-clock to move it".into(),
        });
    }
    if !(seconds.is_finite() && (0.0..=MAX_ADVANCE_SECONDS).contains(&seconds)) {
        return Err(HubError::argument(format!(
            "seconds must be a number from 0 to {MAX_ADVANCE_SECONDS} (got '{raw}')"
        )));
    }
    let by = Duration::from_secs_f64(seconds);
    let fits = time::Duration::try_from(by)
        .ok()
        .and_then(|d| hub.now().checked_add(d))
        .is_some_and(|t| t.year() < 9000);
    if !fits {
        return Err(HubError::argument(
            "the clock cannot be moved past the year 9000",
        ));
    }
    Ok(by)
}

/// `POST /_emulator/devices/{id}/disconnect`: closes the device's MQTT and AMQP connections.
pub async fn disconnect(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    st.ctx.hub.read(|hub| hub.get_device(&id))?;
    let closed = st.ctx.hub.disconnect_device(&id);
    Ok(Json(json!({ "deviceId": id, "connectionsClosed": closed })))
}
