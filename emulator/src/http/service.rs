//! Service-side C2D over HTTPS: purging a device's queue, and the emulator's own send route.
//!
//! Reference: iothub-protocol.md 5.7. `DELETE /devices/{id}/commands` is the hub's purge (200
//! with `PurgeMessageQueueResult`). The hub has no HTTPS send; every SDK sends C2D over AMQP.
//! For people who only have curl, `POST /_emulator/devices/{id}/messages` enqueues a message:
//! the body is the message body, and headers carry the rest (`iothub-messageid`,
//! `iothub-correlationid`, `iothub-userid`, `iothub-ack`, `iothub-expiry` as RFC 3339,
//! `iothub-contenttype`, `iothub-contentencoding`, one `iothub-app-<name>` per property). A
//! message without an id gets a GUID, so its feedback can be matched. Both need ServiceConnect.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use iothub_protocol::MessageId;
use iothub_protocol::message::MAX_C2D_SIZE;
use iothub_protocol::registry::PurgeMessageQueueResult;
use iothub_protocol::time_format::format_millis;
use serde::Serialize;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, read_body};
use super::message_headers::message_from_headers;
use crate::auth::Need;
use crate::credentials::Permissions;

/// ServiceConnect on `resource`: a policy token scoped to one device acts on that device only.
fn service_on(resource: &str) -> Need<'_> {
    Need::Scoped {
        permissions: Permissions::SERVICE_CONNECT,
        resource,
    }
}

/// `DELETE /devices/{id}/commands`.
pub async fn purge(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
) -> Result<Json<PurgeMessageQueueResult>, ApiError> {
    token.authorize(&st.ctx, service_on(&format!("devices/{id}/commands")))?;
    let n = st.ctx.hub.run(|hub, now| hub.purge_c2d(&id, now))?;
    Ok(Json(PurgeMessageQueueResult {
        total_messages_purged: n as u64,
        device_id: id,
        module_id: None,
    }))
}

/// Body of the send route's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// The device.
    pub device_id: String,
    /// The message id (given, or generated).
    pub message_id: String,
    /// Its sequence number in the device's queue.
    pub sequence_number: u64,
    /// When it expires, RFC 3339 with milliseconds.
    pub expires_at: String,
}

/// `POST /_emulator/devices/{id}/messages`.
pub async fn send(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Sent>, ApiError> {
    let resource = format!("devices/{id}/messages/devicebound");
    token.authorize(&st.ctx, service_on(&resource))?;
    let bytes = read_body(body, &headers, MAX_C2D_SIZE).await?;
    let mut message = message_from_headers(&headers, bytes.to_vec())?;
    let (message_id, enqueued) = st.ctx.hub.run(|hub, now| {
        let mid = message
            .system
            .message_id
            .get_or_insert_with(|| MessageId::from(hub.ids().guid()))
            .canonical();
        hub.enqueue_c2d(&id, message, now).map(|e| (mid, e))
    })?;
    Ok(Json(Sent {
        device_id: id,
        message_id,
        sequence_number: enqueued.sequence_number,
        expires_at: format_millis(enqueued.expires_at),
    }))
}
