//! Direct methods over MQTT (iothub-beyond-c2d.md 2.2): the subscription that makes a
//! connection a method listener, the request PUBLISH, and the device's answer.
//!
//! - A device listens by subscribing to `$iothub/methods/POST/#` (granted as any SDK filter);
//!   the connection then holds a [`crate::driver::MethodListener`] until it unsubscribes or
//!   closes. With clean session 0 the subscription is restored on the next CONNECT.
//! - Requests go out at QoS 0, as the hub sends them, on
//!   `$iothub/methods/POST/{name}/?$rid={rid}` with the payload as the body, never empty
//!   (`null` when the service sent none).
//! - Answers come on `$iothub/methods/res/{status}/?$rid={rid}`; a topic that cannot be read
//!   (no rid, a status that is not an integer) closes the connection like any topic the hub
//!   does not accept.

use iothub_protocol::method::{RESPONSE_TOPIC_PREFIX, ResponseTopic, parse_response_topic};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

use crate::hub::MethodRequest;

/// True for a topic under `$iothub/methods/res/`.
pub fn is_response_topic(topic: &str) -> bool {
    topic.starts_with(RESPONSE_TOPIC_PREFIX)
}

/// Reads an answer topic; the error is the reason the connection is closed.
pub fn response(topic: &str) -> Result<ResponseTopic, String> {
    parse_response_topic(topic).map_err(|e| format!("{e}: '{topic}'"))
}

/// The PUBLISH that delivers a method request.
pub fn request_publish(request: &MethodRequest) -> Publish {
    Publish::new(
        request.mqtt_topic(),
        QoS::AtMostOnce,
        request.payload.as_bytes().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ConnectionId, Identity, InvocationId, RequestId};
    use iothub_protocol::method::JsonPayload;

    #[test]
    fn request_publish_is_qos0_on_the_request_topic() {
        let request = MethodRequest {
            invocation: InvocationId(1),
            connection: ConnectionId(2),
            identity: Identity::device("d1"),
            rid: RequestId(42),
            name: "reboot".into(),
            payload: JsonPayload::null(),
        };
        let p = request_publish(&request);
        assert_eq!(p.topic, "$iothub/methods/POST/reboot/?$rid=42");
        assert_eq!(p.qos, QoS::AtMostOnce);
        assert_eq!(&p.payload[..], b"null");
    }

    #[test]
    fn answers_are_read_leniently_and_bad_ones_refused() {
        let r = response("$iothub/methods/res/201/?$rid=7").unwrap();
        assert_eq!((r.status, r.rid.as_str()), (201, "7"));
        let r = response("$iothub/methods/res/%2D1?$rid=%37&x=1").unwrap();
        assert_eq!((r.status, r.rid.as_str()), (-1, "7"));
        assert!(response("$iothub/methods/res/ok/?$rid=1").is_err());
        assert!(response("$iothub/methods/res/200/").is_err());
        assert!(is_response_topic("$iothub/methods/res/200/?$rid=1"));
        assert!(!is_response_topic("$iothub/methods/POST/x/?$rid=1"));
    }
}
