//! The emulator's control API under `/_emulator/`: inspect and steer the hub from tests.
//!
//! Reference: anchors.md 3.9 item 8. Every route needs a token of a policy with all
//! permissions (`iothubowner`). Answers are JSON with camelCase names; times are RFC 3339 with
//! milliseconds; bodies are given as base64 (`body`) and, when they are UTF-8, as text
//! (`bodyText`). The routes are listed in the `http` module documentation.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::time_format::format_millis;
use iothub_protocol::{HubError, Message};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, Query};
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::hub::{MessageState, QueuedMessage, Store};

const OWNER: Need<'static> = Need::Permissions(Permissions::ALL);
/// Longest single clock advance: ten years. Larger steps would soon overflow the calendar.
pub const MAX_ADVANCE_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// The fields every message view shares.
fn message_fields(m: &Message) -> Map<String, Value> {
    let s = &m.system;
    let mut o = Map::new();
    o.insert(
        "messageId".into(),
        json!(s.message_id.as_ref().map(|i| i.canonical())),
    );
    o.insert(
        "correlationId".into(),
        json!(s.correlation_id.as_ref().map(|i| i.canonical())),
    );
    o.insert("userId".into(), json!(s.user_id));
    o.insert("to".into(), json!(s.to));
    o.insert("contentType".into(), json!(s.content_type));
    o.insert("contentEncoding".into(), json!(s.content_encoding));
    o.insert("ack".into(), json!(s.ack.as_str()));
    o.insert("expiry".into(), json!(s.absolute_expiry.map(format_millis)));
    let props: Map<String, Value> = m
        .properties
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    o.insert("properties".into(), Value::Object(props));
    o.insert("body".into(), json!(STANDARD.encode(&m.body)));
    o.insert("bodyText".into(), json!(std::str::from_utf8(&m.body).ok()));
    o
}

fn c2d_view(q: &QueuedMessage) -> Value {
    let mut o = message_fields(&q.message);
    o.insert("sequenceNumber".into(), json!(q.sequence_number()));
    o.insert(
        "enqueuedTime".into(),
        json!(q.message.system.enqueued_time.map(format_millis)),
    );
    o.insert("expiresAt".into(), json!(format_millis(q.expires_at)));
    o.insert("deliveryCount".into(), json!(q.delivery_count));
    match &q.state {
        MessageState::Enqueued => {
            o.insert("state".into(), json!("enqueued"));
            o.insert("lockToken".into(), Value::Null);
            o.insert("lockedUntil".into(), Value::Null);
        }
        MessageState::Locked { token, until, .. } => {
            o.insert("state".into(), json!("locked"));
            o.insert("lockToken".into(), json!(token));
            o.insert("lockedUntil".into(), json!(format_millis(*until)));
        }
    }
    Value::Object(o)
}

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
pub async fn devices(State(st): State<AppState>, token: Token) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let list: Vec<Value> = st.ctx.hub.read(|hub| {
        hub.store()
            .list(None, usize::MAX)
            .into_iter()
            .map(|e| {
                let d = &e.device;
                json!({
                    "deviceId": d.device_id,
                    "status": d.status,
                    "connectionState": d.connection_state,
                    "lastActivityTime": d.last_activity_time,
                    "cloudToDeviceMessageCount": e.queue.len(),
                    "lockedMessageCount": e.queue.iter().filter(|m| m.is_locked()).count(),
                    "deviceToCloudMessageCount": e.d2c_count,
                })
            })
            .collect()
    });
    Ok(Json(Value::Array(list)))
}

/// `GET /_emulator/devices/{id}/c2d`: the device's pending C2D messages, oldest first.
pub async fn peek_c2d(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let msgs = st.ctx.hub.read(|hub| hub.peek_c2d(&id))?;
    Ok(Json(Value::Array(msgs.iter().map(c2d_view).collect())))
}

/// `GET /_emulator/devices/{id}/d2c`: the device's recorded telemetry, oldest first.
pub async fn d2c(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<Value>, ApiError> {
    token.authorize(&st.ctx, OWNER)?;
    let records = st.ctx.hub.read(|hub| hub.d2c_messages(&id))?;
    let list = records
        .iter()
        .map(|r| {
            let mut o = message_fields(&r.message);
            o.insert("sequenceNumber".into(), json!(r.sequence_number));
            o.insert("receivedAt".into(), json!(format_millis(r.received)));
            Value::Object(o)
        })
        .collect();
    Ok(Json(Value::Array(list)))
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
    if !hub.clock().is_virtual() {
        return Err(HubError::InvalidOperation {
            detail: "the clock is real; start the emulator with --virtual-clock to move it".into(),
        }
        .into());
    }
    let raw = query.get("seconds").unwrap_or_default();
    let seconds = raw
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=MAX_ADVANCE_SECONDS).contains(s))
        .ok_or_else(|| {
            HubError::argument(format!(
                "seconds must be a number from 0 to {MAX_ADVANCE_SECONDS} (got '{raw}')"
            ))
        })?;
    let by = Duration::from_secs_f64(seconds);
    let fits = time::Duration::try_from(by)
        .ok()
        .and_then(|d| hub.now().checked_add(d))
        .is_some_and(|t| t.year() < 9000);
    if !fits {
        return Err(HubError::argument("the clock cannot be moved past the year 9000").into());
    }
    hub.advance_clock(by);
    Ok(Json(json!({
        "advancedSeconds": seconds,
        "now": format_millis(hub.now()),
    })))
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
