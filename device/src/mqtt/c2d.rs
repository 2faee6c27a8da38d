//! Cloud-to-device messages over MQTT: incoming PUBLISHes handed to the client, and their
//! settlement by PUBACK, in arrival order ([MQTT-4.6.0-2]). The subscription (renewed when
//! the hub lost the session) is in `subscriptions.rs`.

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};

use super::C2dSender;
use super::connection::Connection;
use super::driver::Driver;
use super::topics::{Inbound, inbound};
use crate::message::{ReceivedMessage, Settle};

/// The C2D side of the driver.
pub(super) struct C2d {
    /// Where messages go.
    tx: C2dSender,
}

impl C2d {
    pub fn new(tx: C2dSender) -> Self {
        C2d { tx }
    }
}

impl Driver {
    pub(super) fn on_publish(&mut self, conn: &mut Connection, p: Publish) {
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
            Inbound::Twin(t) => {
                self.on_twin_publish(t, &p.topic, &p.payload);
                if qos1 {
                    self.settle(conn, p.pkid, true);
                }
            }
            Inbound::Unreadable(why) => {
                // Acknowledge it so the hub does not send it forever; nothing can read it.
                tracing::warn!(device = %self.params.device_id, topic = %p.topic, %why, "dropping an unreadable PUBLISH");
                if qos1 {
                    self.settle(conn, p.pkid, true);
                }
            }
        }
    }

    /// Records a settlement and sends the PUBACKs it releases, in order.
    pub(super) fn settle(&mut self, conn: &mut Connection, pkid: u16, ack: bool) {
        for id in conn.acks.settle(pkid, ack) {
            // Four bytes; it always encodes.
            let _ = conn.send(&Packet::PubAck(PubAck::new(id)));
        }
    }
}
