//! Telemetry (D2C) over MQTT: each send waits for the hub's PUBACK; a send whose connection
//! drops first is published again on the next connection (at-least-once).

use std::collections::BTreeMap;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;
use tokio::sync::oneshot;

use super::connection::Connection;
use super::driver::Driver;
use crate::error::Error;

/// Telemetry waiting for the hub's PUBACK.
struct PendingSend {
    /// The PUBLISH, ready but for its packet id (each connection gives it one).
    publish: Publish,
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
                publish: Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic,
                    pkid: 0,
                    payload,
                },
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
    /// Publishes waiting send `id` on `conn`, or queues it there until the in-flight window
    /// has room.
    pub(super) fn publish(&mut self, conn: &mut Connection, id: u64) {
        if !conn.has_room() {
            conn.waiting.push_back(id);
            return;
        }
        let Some(p) = self.telemetry.pending.get_mut(&id) else {
            return;
        };
        let subscriptions = &self.subscriptions;
        p.publish.pkid = conn.next_pkid(|pkid| subscriptions.holds(pkid));
        match conn.publish(&p.publish) {
            Ok(()) => {
                conn.inflight.insert(p.publish.pkid, id);
            }
            // The client checks sizes before it queues a send, so this is not expected; the
            // send fails rather than the connection.
            Err(e) => {
                if let Some(reply) = self.telemetry.pending.remove(&id).and_then(|p| p.reply) {
                    let _ = reply.send(Err(Error::ArgumentInvalid {
                        message: format!("the message cannot be sent over MQTT: {e:?}"),
                    }));
                }
            }
        }
    }

    /// The hub acknowledged packet `pkid`: that send is done, and the next waiting one may go.
    pub(super) fn on_puback(&mut self, conn: &mut Connection, pkid: u16) {
        if let Some(id) = conn.inflight.remove(&pkid)
            && let Some(p) = self.telemetry.pending.remove(&id)
            && let Some(reply) = p.reply
        {
            let _ = reply.send(Ok(()));
        }
        while conn.has_room()
            && let Some(id) = conn.waiting.pop_front()
        {
            self.publish(conn, id);
        }
    }
}
