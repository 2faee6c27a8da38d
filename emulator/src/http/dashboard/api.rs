//! The dashboard's JSON routes: reads through the hub's views, changes through the hub's
//! operations (the same ones the control API and the registry use). Display arithmetic only;
//! every rule (limits, validation, state changes) is the hub's, and its errors come back as the
//! hub's error answers.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::time_format::format_millis;
use iothub_protocol::{AckMode, HubError, Message, MessageId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::guard::{Read, Write};
use crate::credentials;
use crate::http::AppState;
use crate::http::control::checked_advance;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::hub::views::C2dState;

/// Most devices per page.
const MAX_PAGE: usize = 500;
/// Recent telemetry shown for one device.
const RECENT_TELEMETRY: usize = 20;

type ApiResult = Result<Json<Value>, ApiError>;

/// `GET /dashboard/api/overview`.
pub async fn overview(State(st): State<AppState>, _: Read) -> ApiResult {
    let hub = &st.ctx.hub;
    let (devices, feedback, s) = hub.read(|h| {
        let fb = h.feedback_view();
        let records: usize = fb.batches.iter().map(|b| b.records.len()).sum();
        (
            h.device_count(),
            json!({ "pending": fb.pending.len(), "batches": fb.batches.len(), "records": records }),
            h.settings().clone(),
        )
    });
    let secs = |d: Duration| d.as_secs_f64();
    Ok(Json(json!({
        "hubName": st.ctx.hub_name,
        "hostName": st.ctx.host_name,
        "now": format_millis(hub.now()),
        "virtualClock": hub.clock().is_virtual(),
        "deviceCount": devices,
        "connectionCount": hub.connection_count(),
        "feedback": feedback,
        "endpoints": {
            "https": st.ctx.info.endpoints.https,
            "mqtt": st.ctx.info.endpoints.mqtt,
            "amqp": st.ctx.info.endpoints.amqp,
            "http": st.ctx.info.endpoints.http,
        },
        "settings": {
            "queueDepth": s.queue_depth,
            "defaultTtlSeconds": secs(s.default_ttl),
            "maxDeliveryCount": s.max_delivery_count,
            "lockDurationSeconds": secs(s.lock_duration),
            "deliveryCountRule": format!("{:?}", s.delivery_count_rule),
            "feedbackWindowSeconds": secs(s.feedback_window),
            "feedbackBatchSize": s.feedback_batch_size,
            "feedbackTtlSeconds": secs(s.feedback_ttl),
            "feedbackLockDurationSeconds": secs(s.feedback_lock_duration),
            "feedbackMaxDeliveryCount": s.feedback_max_delivery_count,
            "d2cRetention": s.d2c_retention,
        },
    })))
}

/// `GET /dashboard/api/devices?after=<id>&limit=<n>&filter=<text>`: one page in id order;
/// `nextAfter` is the cursor of the next page (absent on the last).
pub async fn devices(State(st): State<AppState>, _: Read, query: Query) -> ApiResult {
    let after = query.get("after").filter(|a| !a.is_empty());
    let filter = query.get("filter").filter(|f| !f.is_empty());
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, MAX_PAGE);
    // One more than asked tells whether a next page exists.
    let (mut page, total) = st.ctx.hub.read(|h| {
        (
            h.device_summaries_page(after, limit + 1, filter),
            h.device_count(),
        )
    });
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more
        .then(|| page.last().map(|d| d.device_id.clone()))
        .flatten();
    // Which protocol a device speaks is known to the connection registry, not to the hub.
    let protocols: serde_json::Map<String, serde_json::Value> = page
        .iter()
        .filter_map(|d| {
            let p = st.ctx.hub.connection_protocols(&d.device_id);
            (!p.is_empty()).then(|| (d.device_id.clone(), json!(p)))
        })
        .collect();
    Ok(Json(
        json!({ "devices": page, "total": total, "nextAfter": next, "protocols": protocols }),
    ))
}

fn required_id(query: &Query) -> Result<String, ApiError> {
    query
        .get("id")
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| HubError::argument("the device id is missing").into())
}

/// `GET /dashboard/api/device?id=<id>`.
pub async fn device(State(st): State<AppState>, _: Read, query: Query) -> ApiResult {
    let id = required_id(&query)?;
    let (device, c2d, d2c) = st.ctx.hub.read(|h| -> Result<_, HubError> {
        Ok((h.get_device(&id)?, h.c2d_view(&id)?, h.d2c_view(&id)?))
    })?;
    let locked = c2d.iter().filter(|m| m.state == C2dState::Locked).count();
    let recent: Vec<_> = d2c.iter().rev().take(RECENT_TELEMETRY).collect();
    let connection_string = credentials::device_connection_string(
        &st.ctx.host_name,
        &id,
        device.primary_key().unwrap_or_default(),
    );
    Ok(Json(json!({
        "device": device,
        "protocols": st.ctx.hub.connection_protocols(&id),
        "connectionString": connection_string,
        "lockedMessageCount": locked,
        "c2d": c2d,
        "telemetry": recent,
        "telemetryCount": d2c.len(),
    })))
}

/// `GET /dashboard/api/feedback`.
pub async fn feedback(State(st): State<AppState>, _: Read) -> ApiResult {
    Ok(Json(json!(st.ctx.hub.read(|h| h.feedback_view()))))
}

/// Names a device.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    device_id: String,
}

/// `POST /dashboard/api/devices/create` `{deviceId}`: a device with generated keys.
pub async fn create_device(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<DeviceRef>,
) -> ApiResult {
    let d = st
        .ctx
        .hub
        .run(|h, now| h.create_device(Device::new(r.device_id), now))?;
    Ok(Json(json!(d)))
}

/// Enables or disables a device.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    device_id: String,
    enabled: bool,
}

/// `POST /dashboard/api/device/status` `{deviceId, enabled}`.
pub async fn set_status(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<StatusChange>,
) -> ApiResult {
    let d = st.ctx.hub.run(|h, now| {
        let mut d = h.get_device(&r.device_id)?;
        d.status = if r.enabled {
            DeviceStatus::Enabled
        } else {
            DeviceStatus::Disabled
        };
        h.update_device(d, "*", now)
    })?;
    Ok(Json(json!(d)))
}

/// `POST /dashboard/api/device/delete` `{deviceId}`.
pub async fn delete_device(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<DeviceRef>,
) -> ApiResult {
    st.ctx
        .hub
        .run(|h, now| h.delete_device(&r.device_id, None, now))?;
    Ok(Json(json!({ "deviceId": r.device_id })))
}

/// `POST /dashboard/api/device/disconnect` `{deviceId}`: closes its MQTT and AMQP connections.
pub async fn disconnect(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<DeviceRef>,
) -> ApiResult {
    st.ctx.hub.read(|h| h.get_device(&r.device_id))?;
    let closed = st.ctx.hub.disconnect_device(&r.device_id);
    Ok(Json(
        json!({ "deviceId": r.device_id, "connectionsClosed": closed }),
    ))
}

/// A C2D message composed on the page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dSend {
    device_id: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    ack: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// `POST /dashboard/api/c2d/send`: enqueues a message, as the control API's send route does.
pub async fn send_c2d(State(st): State<AppState>, _: Write, Json(r): Json<C2dSend>) -> ApiResult {
    let mut m = Message::new(r.body.into_bytes());
    if let Some(ack) = r.ack.as_deref().filter(|a| !a.is_empty()) {
        m.system.ack = AckMode::parse(ack).ok_or_else(|| {
            HubError::argument(format!(
                "ack must be none, positive, negative or full (got '{ack}')"
            ))
        })?;
    }
    m.system.correlation_id = r
        .correlation_id
        .filter(|c| !c.is_empty())
        .map(MessageId::from);
    m.system.message_id = r.message_id.filter(|i| !i.is_empty()).map(MessageId::from);
    for (k, v) in r.properties {
        m.properties.insert(k, v);
    }
    let id = r.device_id;
    let (message_id, e) = st.ctx.hub.run(|h, now| {
        let mid = m
            .system
            .message_id
            .get_or_insert_with(|| MessageId::from(h.ids().guid()))
            .canonical();
        h.enqueue_c2d(&id, m, now).map(|e| (mid, e))
    })?;
    Ok(Json(json!({
        "deviceId": id,
        "messageId": message_id,
        "sequenceNumber": e.sequence_number,
        "expiresAt": format_millis(e.expires_at),
    })))
}

/// `POST /dashboard/api/c2d/purge` `{deviceId}`.
pub async fn purge_c2d(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<DeviceRef>,
) -> ApiResult {
    let n = st.ctx.hub.run(|h, now| h.purge_c2d(&r.device_id, now))?;
    Ok(Json(
        json!({ "deviceId": r.device_id, "totalMessagesPurged": n }),
    ))
}

/// `POST /dashboard/api/feedback/flush`.
pub async fn flush_feedback(State(st): State<AppState>, _: Write) -> ApiResult {
    let available = st.ctx.hub.run(|h, now| {
        h.flush_feedback(now);
        h.has_feedback_available()
    });
    Ok(Json(json!({ "feedbackAvailable": available })))
}

/// How far to move the virtual clock.
#[derive(Debug, Deserialize)]
pub struct Advance {
    seconds: f64,
}

/// `POST /dashboard/api/clock/advance` `{seconds}`.
pub async fn advance_clock(
    State(st): State<AppState>,
    _: Write,
    Json(r): Json<Advance>,
) -> ApiResult {
    let hub = &st.ctx.hub;
    let by = checked_advance(hub, r.seconds, &r.seconds.to_string())?;
    hub.advance_clock(by);
    Ok(Json(json!({ "now": format_millis(hub.now()) })))
}

/// `POST /dashboard/api/reset`: removes every device, message and feedback record.
pub async fn reset(State(st): State<AppState>, _: Write) -> ApiResult {
    let removed = st.ctx.hub.run(|h, _| {
        let n = h.device_count();
        h.reset();
        n
    });
    Ok(Json(json!({ "devicesRemoved": removed })))
}
