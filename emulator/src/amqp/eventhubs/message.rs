//! The AMQP message an Event Hubs reader receives for an event (iothub-beyond-c2d.md 3.4).
//!
//! The types are the ones the clients parse: `x-opt-sequence-number` a long,
//! `x-opt-offset` a string (Python decodes bytes and yields `None` for anything else),
//! `x-opt-enqueued-time` and `iothub-enqueuedtime` timestamps, every other annotation a string.
//! The body is one data section, even when empty. The properties section is left out when the
//! device set none of its fields, because the Python e2e helper reads `content_type` from any
//! section that exists.

use fe2o3_amqp_types::messaging::{Message as AmqpMessage, MessageAnnotations};
use fe2o3_amqp_types::primitives::{OrderedMap, Symbol, Timestamp, Value};
use iothub_protocol::amqp as shared;

use crate::amqp::convert::Outgoing;
use crate::hub::event_log::{AnnotationValue, Event};

/// The message for one event.
pub fn event_message(event: &Event) -> Outgoing {
    let list = event.annotations();
    // Sized up front: growing the map rehashes every key on the way.
    let mut annotations = MessageAnnotations(OrderedMap::with_capacity(list.len()));
    for (name, value) in list {
        let value = match value {
            AnnotationValue::String(s) => Value::String(s.into_owned()),
            AnnotationValue::Long(n) => Value::Long(n),
            AnnotationValue::Timestamp(ms) => Value::Timestamp(Timestamp::from_milliseconds(ms)),
        };
        annotations.0.insert(Symbol::from(name).into(), value);
    }
    let m = &event.message;
    let app = shared::application_properties(m);
    let builder = AmqpMessage::builder().message_annotations(annotations);
    let builder = if event.has_properties() {
        builder.properties(shared::properties(&m.system))
    } else {
        builder
    };
    let builder = if app.0.is_empty() {
        builder
    } else {
        builder.application_properties(app)
    };
    builder.data(m.body.clone()).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Identity;
    use crate::hub::event_log::{AuthMethod, ConnectionStamp, EventSource};
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use iothub_protocol::Message;
    use time::macros::datetime;

    fn event(message: Message) -> Event {
        Event {
            partition: 2,
            sequence_number: 7,
            offset: 1234,
            enqueued_time: datetime!(2026-01-01 0:00 UTC),
            source: EventSource::Telemetry,
            origin: Identity::device("d1"),
            connection: Some(ConnectionStamp {
                auth: AuthMethod::DEVICE_SAS,
                generation_id: Some("638".into()),
            }),
            message,
        }
    }

    #[test]
    fn annotations_carry_the_types_the_clients_parse() {
        let mut m = Message::new("{}");
        m.system.message_id = Some("m1".into());
        m.system.content_type = Some("application/json".into());
        m.properties.insert("temp", "21");
        let out = event_message(&event(m));
        let ann = out.message_annotations.unwrap().0;
        let get = |k: &str| ann.get(&OwnedKey::from(Symbol::from(k))).cloned();
        assert_eq!(get("x-opt-sequence-number"), Some(Value::Long(7)));
        assert_eq!(get("x-opt-offset"), Some(Value::String("1234".into())));
        let t = Value::Timestamp(Timestamp::from_milliseconds(1_767_225_600_000));
        assert_eq!(get("x-opt-enqueued-time"), Some(t.clone()));
        assert_eq!(get("iothub-enqueuedtime"), Some(t));
        assert_eq!(
            get("iothub-connection-device-id"),
            Some(Value::String("d1".into()))
        );
        assert_eq!(
            get("iothub-message-source"),
            Some(Value::String("Telemetry".into()))
        );
        let p = out.properties.unwrap();
        assert_eq!(
            p.content_type.as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert!(out.application_properties.unwrap().0.contains_key("temp"));
        assert_eq!(out.body.0, b"{}".to_vec());
    }

    #[test]
    fn no_properties_section_when_the_device_set_none() {
        let out = event_message(&event(Message::new("plain string")));
        assert!(out.properties.is_none());
        assert!(out.application_properties.is_none());
        let empty = event_message(&event(Message::new("")));
        assert!(
            empty.body.0.is_empty(),
            "an empty body is still a data section"
        );
    }
}
