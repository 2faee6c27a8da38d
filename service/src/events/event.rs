//! One event read from the built-in endpoint: the device's message and what the hub stamped on
//! it (iothub-beyond-c2d.md 3.4).
//!
//! The hub puts the device's system properties (message id, correlation id, user id, content
//! type and encoding) in the AMQP properties, its application properties unchanged in the
//! application properties, the body in data sections, and its own stamps in message
//! annotations: `iothub-connection-device-id`, `iothub-connection-module-id`,
//! `iothub-enqueuedtime`, `iothub-message-source`, ... and the Event Hubs `x-opt-*` ones.

use std::collections::BTreeMap;

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message as AmqpMessage};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use iothub_protocol::Message;
use iothub_protocol::amqp::{
    body_bytes, message_id_from_amqp, simple_value_text, timestamp_from_amqp,
};
use iothub_protocol::time_format::format_millis;
use time::OffsetDateTime;

use crate::Error;

/// `x-opt-sequence-number`.
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// `x-opt-offset`.
const OFFSET: &str = "x-opt-offset";
/// `x-opt-enqueued-time`.
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
/// The device that sent the message.
pub const DEVICE_ID_ANNOTATION: &str = "iothub-connection-device-id";
/// The module that sent the message, for module telemetry.
pub const MODULE_ID_ANNOTATION: &str = "iothub-connection-module-id";
/// What kind of event this is (`Telemetry`, `twinChangeEvents`, ...).
pub const MESSAGE_SOURCE_ANNOTATION: &str = "iothub-message-source";

/// An event: a device's message as the hub stored it, with its place in the partition.
///
/// The device's part is [`message`](Self::message): body, system properties (message id,
/// correlation id, user id, content type, content encoding) and application properties, in the
/// same [`Message`] type the C2D sender takes. The hub's part is in the other fields;
/// [`system_properties`](Self::system_properties) has every annotation as text, including
/// those without a field here (`iothub-connection-auth-method`, `dt-dataschema`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// What the device sent.
    pub message: Message,
    /// The partition the event was read from.
    pub partition_id: String,
    /// Its sequence number in the partition (`x-opt-sequence-number`).
    pub sequence_number: i64,
    /// Its offset in the partition (`x-opt-offset`), an opaque string.
    pub offset: String,
    /// When the endpoint stored it (`x-opt-enqueued-time`).
    pub enqueued_time: Option<OffsetDateTime>,
    /// The device that sent it (`iothub-connection-device-id`).
    pub device_id: Option<String>,
    /// The module that sent it (`iothub-connection-module-id`), for module telemetry.
    pub module_id: Option<String>,
    /// `iothub-message-source`: `Telemetry` for device messages.
    pub message_source: Option<String>,
    /// Every message annotation, as text (timestamps as RFC 3339 with milliseconds).
    pub system_properties: BTreeMap<String, String>,
}

impl Event {
    /// The body as the device sent it.
    pub fn body(&self) -> &[u8] {
        &self.message.body
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.message.body).ok()
    }

    /// The application properties the device set.
    pub fn properties(&self) -> &iothub_protocol::Properties {
        &self.message.properties
    }

    /// The message id the device set.
    pub fn message_id(&self) -> Option<String> {
        self.message
            .system
            .message_id
            .as_ref()
            .map(|m| m.to_string())
    }

    /// The correlation id the device set.
    pub fn correlation_id(&self) -> Option<String> {
        self.message
            .system
            .correlation_id
            .as_ref()
            .map(|m| m.to_string())
    }

    /// The content type the device set (`application/json` for routing on the body).
    pub fn content_type(&self) -> Option<&str> {
        self.message.system.content_type.as_deref()
    }

    /// The content encoding the device set (`utf-8` for routing on the body).
    pub fn content_encoding(&self) -> Option<&str> {
        self.message.system.content_encoding.as_deref()
    }

    /// Reads an event from the AMQP message the endpoint sent on `partition_id`.
    pub(crate) fn from_amqp(
        partition_id: &str,
        m: AmqpMessage<Body<Value>>,
    ) -> Result<Event, Error> {
        let body = body_bytes(&m.body).map_err(|e| {
            Error::protocol(format!("an event on partition {partition_id} has {e}"))
        })?;
        let mut message = Message::new(body);
        if let Some(p) = m.properties {
            let s = &mut message.system;
            s.message_id = p.message_id.map(message_id_from_amqp);
            s.correlation_id = p.correlation_id.map(message_id_from_amqp);
            s.user_id = p
                .user_id
                .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned());
            s.to = p.to;
            s.absolute_expiry = p.absolute_expiry_time.and_then(|t| timestamp_from_amqp(&t));
            s.content_type = p.content_type.map(|c| c.0);
            s.content_encoding = p.content_encoding.map(|c| c.0);
        }
        // Unchanged, including any `iothub-ack` a device may have set: this is telemetry.
        if let Some(ApplicationProperties(map)) = m.application_properties {
            for (name, value) in map {
                if let Some(value) = simple_value_text(value) {
                    message.properties.insert(name, value);
                }
            }
        }
        let mut event = Event {
            message,
            partition_id: partition_id.to_owned(),
            sequence_number: -1,
            offset: String::new(),
            enqueued_time: None,
            device_id: None,
            module_id: None,
            message_source: None,
            system_properties: BTreeMap::new(),
        };
        for (key, value) in m.message_annotations.map(|a| a.0).unwrap_or_default() {
            let name = match key {
                OwnedKey::Symbol(s) => s.0,
                OwnedKey::Ulong(n) => n.to_string(),
            };
            match (name.as_str(), &value) {
                (SEQUENCE_NUMBER, v) => {
                    if let Some(n) = integer(v) {
                        event.sequence_number = n;
                    }
                }
                (ENQUEUED_TIME, Value::Timestamp(t)) => {
                    event.enqueued_time = timestamp_from_amqp(t)
                }
                _ => {}
            }
            let Some(text) = value_text(value) else {
                continue;
            };
            match name.as_str() {
                OFFSET => event.offset = text.clone(),
                DEVICE_ID_ANNOTATION => event.device_id = Some(text.clone()),
                MODULE_ID_ANNOTATION => event.module_id = Some(text.clone()),
                MESSAGE_SOURCE_ANNOTATION => event.message_source = Some(text.clone()),
                _ => {}
            }
            event.system_properties.insert(name, text);
        }
        Ok(event)
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An annotation as text; maps, lists and other compound values are left out.
fn value_text(v: Value) -> Option<String> {
    let simple = match v {
        Value::Timestamp(t) => {
            return Some(match timestamp_from_amqp(&t) {
                Some(d) => format_millis(d),
                None => t.milliseconds().to_string(),
            });
        }
        Value::String(s) => SimpleValue::String(s),
        Value::Symbol(s) => SimpleValue::Symbol(s),
        Value::Bool(b) => SimpleValue::Bool(b),
        Value::Long(n) => SimpleValue::Long(n),
        Value::Int(n) => SimpleValue::Int(n),
        Value::Uint(n) => SimpleValue::Uint(n),
        Value::Ulong(n) => SimpleValue::Ulong(n),
        Value::Short(n) => SimpleValue::Short(n),
        Value::Ushort(n) => SimpleValue::Ushort(n),
        Value::Byte(n) => SimpleValue::Byte(n),
        Value::Ubyte(n) => SimpleValue::Ubyte(n),
        Value::Uuid(u) => SimpleValue::Uuid(u),
        Value::Binary(b) => SimpleValue::Binary(b),
        _ => return None,
    };
    simple_value_text(simple)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{MessageAnnotations, MessageId, Properties};
    use fe2o3_amqp::types::primitives::{Symbol, Timestamp};

    fn annotations(pairs: Vec<(&str, Value)>) -> MessageAnnotations {
        let mut a = MessageAnnotations::default();
        for (k, v) in pairs {
            a.0.insert(OwnedKey::from(Symbol::from(k)), v);
        }
        a
    }

    #[test]
    fn an_event_carries_the_device_message_and_the_hub_stamps() {
        let m = AmqpMessage::builder()
            .properties(Properties {
                message_id: Some(MessageId::String("m1".into())),
                content_type: Some(Symbol::from("application/json")),
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("temp", "21")
                    .insert("n", SimpleValue::Int(3))
                    .build(),
            )
            .message_annotations(annotations(vec![
                (DEVICE_ID_ANNOTATION, Value::String("dev1".into())),
                (MESSAGE_SOURCE_ANNOTATION, Value::String("Telemetry".into())),
                (SEQUENCE_NUMBER, Value::Long(41)),
                (OFFSET, Value::String("4096".into())),
                (
                    ENQUEUED_TIME,
                    Value::Timestamp(Timestamp::from_milliseconds(1_767_225_600_000)),
                ),
            ]))
            .body(Body::Data(
                vec![fe2o3_amqp::types::messaging::Data(b"{}".to_vec().into())].into(),
            ))
            .build();
        let e = Event::from_amqp("2", m).unwrap();
        assert_eq!(e.body(), b"{}");
        assert_eq!(e.message_id().as_deref(), Some("m1"));
        assert_eq!(e.content_type(), Some("application/json"));
        assert_eq!(e.properties().get("temp"), Some("21"));
        assert_eq!(e.properties().get("n"), Some("3"));
        assert_eq!(e.device_id.as_deref(), Some("dev1"));
        assert_eq!(e.module_id, None);
        assert_eq!(e.message_source.as_deref(), Some("Telemetry"));
        assert_eq!((e.sequence_number, e.offset.as_str()), (41, "4096"));
        assert_eq!(
            e.enqueued_time.map(|t| t.unix_timestamp()),
            Some(1_767_225_600)
        );
        assert_eq!(e.partition_id, "2");
        assert_eq!(
            e.system_properties.get(ENQUEUED_TIME).map(String::as_str),
            Some("2026-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn an_event_without_sections_is_an_empty_message() {
        let m: AmqpMessage<Body<Value>> = AmqpMessage::builder().body(Body::Empty).build();
        let e = Event::from_amqp("0", m).unwrap();
        assert!(e.body().is_empty());
        assert_eq!(e.sequence_number, -1);
        assert!(e.system_properties.is_empty());
    }
}
