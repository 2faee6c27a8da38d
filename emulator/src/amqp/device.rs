//! Device links: C2D receive from `/devices/{id}/messages/devicebound` and telemetry to
//! `/devices/{id}/messages/events` (iothub-protocol.md 5.6; the Node AMQP device transport uses
//! them). Both need a token for that device. While one is open the device counts as connected,
//! and deleting or disabling the device detaches it.

use std::sync::Arc;

use fe2o3_amqp::{Receiver, Sender};
use iothub_protocol::HubError;

use super::connection::Conn;
use super::convert::{self, Incoming, Outgoing};
use super::errors::error_for;
use super::outbound::{Outbox, Settle, Wake};
use super::tokens::Access;
use super::{inbound, outbound};
use crate::driver::{DeviceProtocol, HubHandle};
use crate::hub::{Identity, Origin};

/// Serves a device's receiver: C2D messages are locked as they are transferred, and the
/// device's disposition completes, rejects or abandons them, producing their feedback.
pub async fn serve_c2d(conn: Arc<Conn>, sender: Sender, device_id: String) {
    let access = Access::Device(device_id.clone());
    let auth = match conn.tokens.authorize_link(&conn.ctx, access) {
        Ok(auth) => auth,
        Err(e) => return outbound::refuse(sender, error_for(&e)).await,
    };
    let hub = conn.ctx.hub.clone();
    let registration = hub.register_connection(&device_id, DeviceProtocol::Amqp);
    let outbox = DeviceOutbox {
        wake: hub.c2d_notify(&device_id),
        hub,
        device_id,
    };
    let revoked = registration.cancelled().clone();
    outbound::run(&conn, sender, outbox, auth, revoked).await;
}

/// Serves a device's sender: telemetry goes to the hub as it does over MQTT.
pub async fn serve_events(conn: Arc<Conn>, receiver: Receiver, device_id: String) {
    serve_telemetry(conn, receiver, Identity::device(device_id)).await;
}

/// Serves the telemetry sender of a device or module (whose events carry
/// `iothub-connection-module-id`).
pub async fn serve_telemetry(conn: Arc<Conn>, receiver: Receiver, identity: Identity) {
    let auth = match conn.tokens.authorize_link(&conn.ctx, Access::of(&identity)) {
        Ok(auth) => auth,
        Err(e) => return inbound::refuse(receiver, error_for(&e)).await,
    };
    let hub = conn.ctx.hub.clone();
    // Keyed `{device}` or `{device}/{module}`, as the MQTT client id.
    let registration = hub.register_connection(&identity.to_string(), DeviceProtocol::Amqp);
    let origin = Origin {
        identity,
        auth: auth.grant().auth_method(),
    };
    let revoked = registration.cancelled().clone();
    // A burst of pipelined telemetry is one hub operation, as on MQTT.
    inbound::run_batches(
        &conn,
        receiver,
        Some(auth),
        revoked,
        |batch: Vec<Incoming>| {
            let prepared: Vec<_> = batch.into_iter().map(convert::to_hub).collect();
            inbound::all_done(hub.run(|hub, now| {
                prepared
                    .into_iter()
                    .map(|m| hub.send_telemetry(&origin, m?, now).map(|_| ()))
                    .collect()
            }))
        },
    )
    .await;
}

/// One device's C2D queue as seen by one receiver link.
struct DeviceOutbox {
    hub: HubHandle,
    device_id: String,
    wake: Arc<tokio::sync::Notify>,
}

impl Outbox for DeviceOutbox {
    fn take(&mut self) -> Result<Option<(String, Outgoing)>, HubError> {
        let Some(m) = self
            .hub
            .run(|hub, now| hub.receive_c2d(&self.device_id, now))?
        else {
            return Ok(None);
        };
        let token = m.system.lock_token.clone().unwrap_or_default();
        match convert::c2d_delivery(&m) {
            Some(out) => Ok(Some((token, out))),
            None => Err(HubError::ServerError {
                detail: "the hub handed out a C2D message without a lock token".into(),
            }),
        }
    }

    fn wake(&self) -> Wake {
        Wake::Shared(self.wake.clone())
    }

    fn settle(&mut self, lock_token: &str, how: Settle) -> Result<(), HubError> {
        let id = &self.device_id;
        self.hub.run(|hub, now| match how {
            Settle::Complete => hub.complete_c2d(id, lock_token, now),
            Settle::Reject => hub.reject_c2d(id, lock_token, now),
            Settle::Abandon => hub.abandon_c2d(id, lock_token, now),
        })
    }

    fn unsettled(&mut self, lock_token: &str) {
        let id = &self.device_id;
        let _ = self
            .hub
            .run(|hub, now| hub.release_c2d_lock(id, lock_token, now));
    }
}
