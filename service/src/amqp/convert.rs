//! What the client sends over AMQP: a C2D message for a device.
//!
//! The message mapping is `iothub_protocol::amqp`, shared with the emulator; what goes on the
//! wire mirrors the Node service SDK (iothub-protocol.md 5.4, official-sdks.md 2.4): `to` =
//! `/devices/{encoded id}/messages/devicebound`, the body as one data section, the settable
//! system properties in the AMQP properties section, and the ack mode as the application
//! property `iothub-ack`.

use fe2o3_amqp::types::messaging::{Data, Message as AmqpMessage};
use fe2o3_amqp::types::primitives::Binary;
use iothub_protocol::Message;
use iothub_protocol::amqp;
use iothub_protocol::device_id::encode_path_segment;

/// The `to` of a C2D message for this device.
pub(crate) fn devicebound_to(device_id: &str) -> String {
    format!(
        "/devices/{}/messages/devicebound",
        encode_path_segment(device_id)
    )
}

/// The AMQP message for a C2D send to `device_id`.
///
/// `to` is always set here (any `to` in `message` is ignored: the hub routes by it). The ack
/// mode, when not [`AckMode::None`](iothub_protocol::AckMode::None), replaces an `iothub-ack`
/// application property of the same message; with `None` such a property is sent as given.
pub(crate) fn c2d_message(device_id: &str, message: &Message) -> AmqpMessage<Data> {
    let mut properties = amqp::properties(&message.system);
    properties.to = Some(devicebound_to(device_id));
    let app = amqp::application_properties(message);
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(if app.0.is_empty() { None } else { Some(app) })
        .data(Binary::from(message.body.clone()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::primitives::{SimpleValue, Uuid};
    use iothub_protocol::{AckMode, MessageId, Properties as AppProperties};
    use time::macros::datetime;

    #[test]
    fn the_device_id_is_encoded_in_to() {
        assert_eq!(
            devicebound_to("dev-1"),
            "/devices/dev-1/messages/devicebound"
        );
        assert_eq!(
            devicebound_to("a b#c?d%e/f"),
            "/devices/a%20b%23c%3Fd%25e%2Ff/messages/devicebound"
        );
    }

    #[test]
    fn every_property_goes_where_the_hub_reads_it() {
        let mut m = Message::new(b"{\"a\":1}".to_vec());
        m.system.message_id = Some("message_0".into());
        m.system.correlation_id = Some(MessageId::Uuid(uuid::Uuid::from_bytes([7; 16])));
        m.system.user_id = Some("svc".into());
        m.system.absolute_expiry = Some(datetime!(2030-01-02 03:04:05.678 UTC));
        m.system.content_type = Some("application/json".into());
        m.system.content_encoding = Some("utf-8".into());
        m.system.ack = AckMode::Full;
        m.system.to = Some("/devices/other/messages/devicebound".into());
        m.properties = [("Property", "PropMsg_0"), ("iothub-ack", "none")]
            .into_iter()
            .collect::<AppProperties>();

        let a = c2d_message("dev 1", &m);
        let p = a.properties.as_ref().unwrap();
        assert_eq!(
            p.message_id,
            Some(fe2o3_amqp::types::messaging::MessageId::String(
                "message_0".into()
            ))
        );
        assert_eq!(
            p.correlation_id,
            Some(fe2o3_amqp::types::messaging::MessageId::Uuid(Uuid::from(
                [7u8; 16]
            )))
        );
        assert_eq!(
            p.user_id.as_ref().map(|b| b.to_vec()),
            Some(b"svc".to_vec())
        );
        assert_eq!(
            p.to.as_deref(),
            Some("/devices/dev%201/messages/devicebound")
        );
        assert_eq!(
            p.content_type.as_ref().map(|s| s.0.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.content_encoding.as_ref().map(|s| s.0.as_str()),
            Some("utf-8")
        );
        let ts = p.absolute_expiry_time.as_ref().unwrap();
        assert_eq!(ts.milliseconds(), 1_893_553_445_678);
        assert_eq!(
            amqp::timestamp_from_amqp(ts),
            Some(datetime!(2030-01-02 03:04:05.678 UTC))
        );
        let app = &a.application_properties.as_ref().unwrap().0;
        assert_eq!(
            app.get("Property"),
            Some(&SimpleValue::String("PropMsg_0".into()))
        );
        assert_eq!(
            app.get("iothub-ack"),
            Some(&SimpleValue::String("full".into()))
        );
        assert_eq!(app.len(), 2);
        assert_eq!(&a.body.0[..], b"{\"a\":1}");
    }

    #[test]
    fn ack_none_sends_no_ack_property_unless_given() {
        let m = Message::new("x");
        let a = c2d_message("d", &m);
        assert!(a.application_properties.is_none());
        let p = a.properties.unwrap();
        assert_eq!(p.message_id, None);
        assert_eq!(p.absolute_expiry_time, None);

        let mut m = Message::new("x");
        m.properties.insert("iothub-ack", "positive");
        let a = c2d_message("d", &m);
        assert_eq!(
            a.application_properties.unwrap().0.get("iothub-ack"),
            Some(&SimpleValue::String("positive".into()))
        );
    }
}
