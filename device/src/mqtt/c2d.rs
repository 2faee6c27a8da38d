//! Cloud-to-device messages over MQTT: the subscription (renewed when the hub lost the
//! session), incoming PUBLISHes handed to the client, and their settlement by PUBACK, in
//! arrival order ([MQTT-4.6.0-2]).

use rumqttc::{Publish, QoS, SubAck, SubscribeReasonCode};

use super::C2dSender;
use super::connection::Connection;
use super::driver::Driver;
use super::topics::{Inbound, c2d_filter, inbound};
use crate::message::{ReceivedMessage, Settle};

/// The C2D side of the driver.
pub(super) struct C2d {
    /// Where messages go.
    tx: C2dSender,
    /// The application asked for messages.
    pub wanted: bool,
    /// The hub's session holds our subscription.
    pub session_subscribed: bool,
}

impl C2d {
    pub fn new(tx: C2dSender) -> Self {
        C2d {
            tx,
            wanted: false,
            session_subscribed: false,
        }
    }
}

impl Driver {
    /// Subscribes to the C2D topic unless the session or this connection already did.
    pub(super) async fn subscribe(&mut self, conn: &mut Connection) {
        if self.c2d.session_subscribed || conn.subscribe_sent {
            return;
        }
        conn.subscribe_sent = true;
        let filter = c2d_filter(&self.params.device_id);
        if let Err(e) = conn.client.subscribe(filter, QoS::AtLeastOnce).await {
            tracing::debug!(error = %e, "SUBSCRIBE not queued; the connection is going away");
        }
    }

    pub(super) fn on_suback(&mut self, ack: &SubAck) {
        if ack
            .return_codes
            .iter()
            .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
        {
            self.c2d.session_subscribed = true;
        } else {
            tracing::warn!(
                device = %self.params.device_id,
                "the hub refused the C2D subscription; no cloud-to-device messages will arrive"
            );
        }
    }

    pub(super) async fn on_publish(&mut self, conn: &mut Connection, p: Publish) {
        let qos1 = p.qos != QoS::AtMostOnce;
        if qos1 {
            conn.acks.received(p.pkid);
        }
        match inbound(&self.params.device_id, &p.topic) {
            Inbound::C2d(mut message) => {
                message.body = p.payload.to_vec();
                let settle = if qos1 {
                    Settle::Mqtt {
                        generation: conn.generation,
                        pkid: p.pkid,
                        tx: self.own_commands.clone(),
                    }
                } else {
                    Settle::Done
                };
                let msg = ReceivedMessage::new(*message, settle, self.params.transport);
                // The receiver lives as long as the client; if it is gone, so is the client.
                let _ = self.c2d.tx.send(msg);
            }
            Inbound::Unreadable(why) => {
                // Acknowledge it so the hub does not send it forever; nothing can read it.
                tracing::warn!(device = %self.params.device_id, topic = %p.topic, %why, "dropping an unreadable PUBLISH");
                if qos1 {
                    self.settle(conn, p.pkid, true).await;
                }
            }
        }
    }

    /// Records a settlement and sends the PUBACKs it releases, in order.
    pub(super) async fn settle(&mut self, conn: &mut Connection, pkid: u16, ack: bool) {
        for id in conn.acks.settle(pkid, ack) {
            let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
            publish.pkid = id;
            if let Err(e) = conn.client.ack(&publish).await {
                tracing::debug!(error = %e, "PUBACK not queued; the connection is going away");
            }
        }
    }
}
