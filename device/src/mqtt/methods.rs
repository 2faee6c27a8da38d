//! Direct methods over MQTT: the `$iothub/methods/POST/#` subscription (through
//! `subscriptions.rs`, so it is renewed after a lost session), incoming requests handed to the
//! client, and answers published at QoS 0 on `$iothub/methods/res/{status}/?$rid={rid}` (as
//! the Node and C SDKs do; QoS 0 keeps them out of the telemetry PUBACK bookkeeping).

use bytes::Bytes;
use iothub_protocol::method::{
    JsonPayload, REQUEST_TOPIC_FILTER, REQUEST_TOPIC_PREFIX, parse_request_topic, response_topic,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

use super::Command;
use super::connection::Connection;
use super::driver::Driver;
use super::subscriptions::SubscribeWaiter;
use crate::methods::{Incoming, MethodRequest};

/// True for a topic under `$iothub/methods/POST/`.
pub(super) fn is_request(topic: &str) -> bool {
    topic.starts_with(REQUEST_TOPIC_PREFIX)
}

impl Driver {
    /// The application registered a handler: listen for requests.
    pub(super) fn enable_methods(
        &mut self,
        conn: Option<&mut Connection>,
        waiter: SubscribeWaiter,
    ) {
        self.want_subscription(conn, REQUEST_TOPIC_FILTER, QoS::AtMostOnce, Some(waiter));
    }

    /// A request: handed to the client with a reply that publishes the answer.
    pub(super) fn on_method_request(&mut self, p: &Publish) {
        let Some(topic) = parse_request_topic(&p.topic) else {
            tracing::warn!(device = %self.params.device_id, topic = %p.topic, "dropping an unreadable method request");
            return;
        };
        let payload = match JsonPayload::from_body(&p.payload) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(device = %self.params.device_id, error = %e, "method request payload is not JSON; passing null");
                JsonPayload::null()
            }
        };
        let rid = topic.rid.clone();
        let commands = self.own_commands.clone();
        let incoming = Incoming {
            request: MethodRequest {
                name: topic.name.to_owned(),
                payload,
            },
            reply: Box::new(move |response| {
                // The driver outlives every request it handed out, or the client is gone.
                let _ = commands.send(Command::MethodResponse {
                    topic: response_topic(response.status, &rid),
                    payload: Bytes::from(response.payload.as_bytes().to_vec()),
                });
            }),
        };
        let _ = self.methods.send(incoming);
    }

    /// Publishes an answer; one lost with the connection is lost (the service gets 504101).
    pub(super) fn send_method_response(
        &mut self,
        conn: &mut Connection,
        topic: String,
        payload: Bytes,
    ) {
        conn.publish_qos0(topic, payload);
    }
}
