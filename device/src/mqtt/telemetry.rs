//! Telemetry (D2C) over MQTT: each send waits for the hub's PUBACK; a send whose connection
//! drops first is published again on the next connection (at-least-once).

use std::collections::BTreeMap;

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::oneshot;

use super::connection::Connection;
use super::driver::Driver;
use crate::error::Error;

/// Telemetry waiting for the hub's PUBACK.
struct PendingSend {
    topic: String,
    payload: Bytes,
    reply: Option<oneshot::Sender<Result<(), Error>>>,
}

/// Every send not yet acknowledged, in the order the application made them.
#[derive(Default)]
pub(super) struct Telemetry {
    pending: BTreeMap<u64, PendingSend>,
    next: u64,
}

impl Telemetry {
    /// Records a send; returns its id.
    pub fn queue(
        &mut self,
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    ) -> u64 {
        let id = self.next;
        self.next += 1;
        self.pending.insert(
            id,
            PendingSend {
                topic,
                payload,
                reply: Some(reply),
            },
        );
        id
    }

    /// The ids of every waiting send, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Fails every waiting send with `err` (the client stopped).
    pub fn fail_all(&mut self, err: &Error) {
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

impl Driver {
    /// Publishes waiting send `id` on `conn`.
    pub(super) async fn publish(&mut self, conn: &mut Connection, id: u64) {
        let Some(p) = self.telemetry.pending.get(&id) else {
            return;
        };
        let publish = conn
            .client
            .publish_bytes(p.topic.clone(), QoS::AtLeastOnce, false, p.payload.clone())
            .await;
        match publish {
            Ok(()) => conn.unassigned.push_back(id),
            Err(e) => {
                // Only a closed event loop refuses a publish; the pump reports why and the
                // message goes out again on the next connection.
                tracing::debug!(error = %e, "PUBLISH not queued");
            }
        }
    }

    /// rumqttc gave the oldest unassigned PUBLISH packet id `pkid`.
    pub(super) fn on_publish_sent(&mut self, conn: &mut Connection, pkid: u16) {
        if let Some(id) = conn.unassigned.pop_front() {
            conn.inflight.insert(pkid, id);
        }
    }

    /// The hub acknowledged packet `pkid`: that send is done.
    pub(super) fn on_puback(&mut self, conn: &mut Connection, pkid: u16) {
        if let Some(id) = conn.inflight.remove(&pkid)
            && let Some(p) = self.telemetry.pending.remove(&id)
            && let Some(reply) = p.reply
        {
            let _ = reply.send(Ok(()));
        }
    }
}
