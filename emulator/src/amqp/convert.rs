//! AMQP messages to and from the hub's [`Message`], and the feedback envelope.
//!
//! Reference: iothub-protocol.md 2.3 (feedback envelope), 5.4 (what a service sends), 5.6 (what a
//! device receives). The message mapping itself (ids in their AMQP type, properties, `iothub-ack`,
//! bodies, annotations, lock-token tags) is `iothub_protocol::amqp`, shared with the service
//! client; this module adds what only the hub sends. An outgoing delivery carries its lock token
//! as `x-opt-lock-token`, which [`super::stream`] turns into the 16-byte delivery tag the C# SDKs
//! read as a GUID.

use fe2o3_amqp_types::messaging::{
    Body, Data, DeliveryAnnotations, Header, Message as AmqpMessage, MessageAnnotations, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol, Value};
use iothub_protocol::amqp::{self as shared, timestamp_to_amqp};
use iothub_protocol::feedback::FEEDBACK_CONTENT_TYPE;
use iothub_protocol::{HubError, Message};

use crate::hub::FeedbackDelivery;

pub use iothub_protocol::amqp::{
    DELIVERY_COUNT, ENQUEUED_TIME, LOCK_TOKEN, SEQUENCE_NUMBER, lock_token_tag,
};

/// What a peer sends: any body section kind, decoded loosely.
pub type Incoming = AmqpMessage<Body<Value>>;
/// What the hub sends: always a single data section.
pub type Outgoing = AmqpMessage<Data>;

/// Converts a message a service or device sent into the hub's model.
///
/// `iothub-ack` moves from the application properties to [`Message::system`]; an unknown value
/// is an argument error, as is a body that is neither data sections nor a binary or string value.
pub fn to_hub(m: Incoming) -> Result<Message, HubError> {
    shared::message_from_amqp(m)
}

/// The AMQP message a device receives for a locked C2D message, or `None` if the message was
/// not handed out by `receive_c2d` (no lock token).
pub fn c2d_delivery(m: &Message) -> Option<Outgoing> {
    let s = &m.system;
    let lock_token = s.lock_token.clone()?;
    let delivery_count = s.delivery_count.unwrap_or(0);
    let mut annotations =
        MessageAnnotations::builder().insert(Symbol::from(LOCK_TOKEN), lock_token);
    if let Some(seq) = s.sequence_number {
        annotations = annotations.insert(Symbol::from(SEQUENCE_NUMBER), seq);
    }
    if let Some(t) = s.enqueued_time {
        annotations = annotations.insert(Symbol::from(ENQUEUED_TIME), timestamp_to_amqp(t));
    }
    let annotations = annotations.insert(
        Symbol::from(DELIVERY_COUNT),
        u8::try_from(delivery_count).unwrap_or(u8::MAX),
    );
    let header = Header {
        delivery_count,
        first_acquirer: delivery_count == 0,
        ..Header::default()
    };
    let properties = shared::properties(s);
    let app = shared::application_properties(m);
    Some(
        AmqpMessage::builder()
            .header(header)
            .message_annotations(annotations.build())
            .properties(properties)
            .application_properties(app)
            .data(m.body.clone())
            .build(),
    )
}

/// The AMQP message a feedback receiver gets for a locked batch (iothub-protocol.md 2.3).
///
/// `user-id` is the hub name; the lock token rides in a delivery annotation so the stream layer
/// can make it the delivery tag.
pub fn feedback_delivery(d: &FeedbackDelivery, hub_name: &str) -> Outgoing {
    let user = match d.batch.user_id.as_str() {
        "" => hub_name,
        u => u,
    };
    let properties = Properties {
        content_type: Some(Symbol::from(FEEDBACK_CONTENT_TYPE)),
        user_id: Some(Binary::from(user.as_bytes().to_vec())),
        ..Properties::default()
    };
    AmqpMessage::builder()
        .delivery_annotations(
            DeliveryAnnotations::builder()
                .insert(Symbol::from(LOCK_TOKEN), d.lock_token.clone())
                .build(),
        )
        .message_annotations(
            MessageAnnotations::builder()
                .insert(
                    Symbol::from(ENQUEUED_TIME),
                    timestamp_to_amqp(d.batch.enqueued_time),
                )
                .build(),
        )
        .properties(properties)
        .data(d.batch.body_json())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use fe2o3_amqp_types::messaging::{
        AmqpValue, ApplicationProperties, MessageId as AmqpMessageId,
    };
    use fe2o3_amqp_types::primitives::{SimpleValue, Timestamp};
    use iothub_protocol::{AckMode, MessageId};
    use time::macros::datetime;

    fn incoming(properties: Properties, app: ApplicationProperties) -> Incoming {
        AmqpMessage::builder()
            .properties(properties)
            .application_properties(app)
            .body(Body::Data(vec![Data::from(b"hi".to_vec())].into()))
            .build()
    }

    #[test]
    fn every_property_kind_reaches_the_hub() {
        let u = uuid::Uuid::parse_str("6b822696-1234-4abc-8def-0123456789ab").unwrap();
        let p = Properties {
            message_id: Some(AmqpMessageId::Uuid(u.into_bytes().into())),
            correlation_id: Some(AmqpMessageId::Ulong(7)),
            user_id: Some(Binary::from(b"svc".to_vec())),
            to: Some("/devices/d/messages/devicebound".into()),
            absolute_expiry_time: Some(Timestamp::from_milliseconds(1_767_225_600_000)),
            content_type: Some(Symbol::from("application/json")),
            content_encoding: Some(Symbol::from("utf-8")),
            ..Properties::default()
        };
        let app = ApplicationProperties::builder()
            .insert("iothub-ack", "FULL")
            .insert("k", "v")
            .insert("n", 5i32)
            .insert("b", true)
            .build();
        let m = to_hub(incoming(p, app)).unwrap();
        assert_eq!(m.body, b"hi");
        assert_eq!(m.system.message_id, Some(MessageId::Uuid(u)));
        assert_eq!(m.system.correlation_id, Some(MessageId::Ulong(7)));
        assert_eq!(m.system.user_id.as_deref(), Some("svc"));
        assert_eq!(
            m.system.absolute_expiry,
            Some(datetime!(2026-01-01 0:00 UTC))
        );
        assert_eq!(m.system.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.system.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(m.system.ack, AckMode::Full);
        assert_eq!(
            m.properties.iter().collect::<Vec<_>>(),
            vec![("k", "v"), ("n", "5"), ("b", "true")]
        );
    }

    #[test]
    fn bad_ack_and_odd_bodies_are_argument_errors() {
        let app = ApplicationProperties::builder()
            .insert("iothub-ack", "sometimes")
            .build();
        assert!(matches!(
            to_hub(incoming(Properties::default(), app)),
            Err(HubError::ArgumentInvalid { .. })
        ));
        let seq: Incoming = AmqpMessage::builder()
            .body(Body::Value(AmqpValue(Value::Bool(true))))
            .build();
        assert!(to_hub(seq).is_err());
        let s: Incoming = AmqpMessage::builder()
            .body(Body::Value(AmqpValue(Value::String("text".into()))))
            .build();
        assert_eq!(to_hub(s).unwrap().body, b"text");
    }

    #[test]
    fn c2d_delivery_carries_ids_in_their_type_and_the_lock_annotations() {
        let mut m = Message::new("x");
        m.system.message_id = Some(MessageId::Binary(vec![1, 2]));
        m.system.lock_token = Some("6b822696-1234-4abc-8def-0123456789ab".into());
        m.system.sequence_number = Some(3);
        m.system.delivery_count = Some(2);
        m.system.enqueued_time = Some(datetime!(2026-01-01 0:00 UTC));
        m.system.ack = AckMode::Positive;
        m.properties.insert("k", "v");
        let out = c2d_delivery(&m).unwrap();
        let props = out.properties.unwrap();
        assert_eq!(
            props.message_id,
            Some(AmqpMessageId::Binary(Binary::from(vec![1, 2])))
        );
        let ann = out.message_annotations.unwrap().0;
        let get = |k: &str| ann.get(&OwnedKey::from(Symbol::from(k))).cloned();
        assert_eq!(
            get(LOCK_TOKEN),
            Some(Value::String("6b822696-1234-4abc-8def-0123456789ab".into()))
        );
        assert_eq!(get(SEQUENCE_NUMBER), Some(Value::Ulong(3)));
        assert_eq!(get(DELIVERY_COUNT), Some(Value::Ubyte(2)));
        assert_eq!(
            get(ENQUEUED_TIME),
            Some(Value::Timestamp(Timestamp::from_milliseconds(
                1_767_225_600_000
            )))
        );
        let app = out.application_properties.unwrap().0;
        assert_eq!(
            app.get("iothub-ack"),
            Some(&SimpleValue::String("positive".into()))
        );
        assert!(c2d_delivery(&Message::new("unlocked")).is_none());
    }

    #[test]
    fn lock_token_tags_use_the_dotnet_guid_layout() {
        let tag = lock_token_tag("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            tag,
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert!(lock_token_tag("not-a-guid").is_none());
    }
}
