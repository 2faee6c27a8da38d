//! The message model as AMQP 1.0 messages (fe2o3 types), and the AMQP error conditions the
//! hub uses (feature `amqp`). The emulator's AMQP adapter and the service client use this one
//! copy, so what one writes the other reads the same way.
//!
//! Reference: iothub-protocol.md 5.4 (what a service sends), 5.6 (what a device receives), 2.3
//! (feedback). Message and correlation ids keep their AMQP type (string, uuid, ulong, binary);
//! the settable system properties travel in the properties section; the ack mode travels as
//! the application property `iothub-ack`; the hub's facts about a delivery (lock token,
//! sequence number, enqueued time, delivery count) travel as message annotations.

use fe2o3_amqp_types::definitions::ErrorCondition;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message as AmqpMessage,
    MessageId as AmqpMessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use time::OffsetDateTime;

use crate::client::HubReply;
use crate::error::{ErrorCode, HubError};
use crate::message::ACK_PROPERTY;
use crate::{AckMode, Message, MessageId, SystemProperties};

/// Message annotation: the lock token of a C2D delivery (a GUID string).
pub const LOCK_TOKEN: &str = "x-opt-lock-token";
/// Message annotation: the C2D message's sequence number (ulong).
pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// Message annotation: when the message (or feedback batch) was enqueued (timestamp).
pub const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
/// Message annotation: how many times the message was delivered before (ubyte).
pub const DELIVERY_COUNT: &str = "iothub-deliverycount";

/// A message id in its AMQP type.
pub fn message_id_to_amqp(id: &MessageId) -> AmqpMessageId {
    match id {
        MessageId::String(s) => AmqpMessageId::String(s.clone()),
        MessageId::Uuid(u) => AmqpMessageId::Uuid((*u.as_bytes()).into()),
        MessageId::Ulong(n) => AmqpMessageId::Ulong(*n),
        MessageId::Binary(b) => AmqpMessageId::Binary(Binary::from(b.clone())),
    }
}

/// An AMQP message id in the model, keeping its type.
pub fn message_id_from_amqp(id: AmqpMessageId) -> MessageId {
    match id {
        AmqpMessageId::String(s) => MessageId::String(s),
        AmqpMessageId::Uuid(u) => MessageId::Uuid(uuid::Uuid::from_bytes(u.into_inner())),
        AmqpMessageId::Ulong(n) => MessageId::Ulong(n),
        AmqpMessageId::Binary(b) => MessageId::Binary(b.into_vec()),
    }
}

/// A time as an AMQP timestamp (milliseconds since the Unix epoch).
pub fn timestamp_to_amqp(t: OffsetDateTime) -> Timestamp {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// An AMQP timestamp as a time; `None` when it is out of range.
pub fn timestamp_from_amqp(t: &Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.milliseconds()) * 1_000_000).ok()
}

/// The properties section for a message's settable system properties: message and
/// correlation id, user id, `to`, absolute expiry, content type and encoding.
pub fn properties(s: &SystemProperties) -> Properties {
    Properties {
        message_id: s.message_id.as_ref().map(message_id_to_amqp),
        user_id: s
            .user_id
            .as_ref()
            .map(|u| Binary::from(u.as_bytes().to_vec())),
        to: s.to.clone(),
        correlation_id: s.correlation_id.as_ref().map(message_id_to_amqp),
        content_type: s.content_type.as_deref().map(Symbol::from),
        content_encoding: s.content_encoding.as_deref().map(Symbol::from),
        absolute_expiry_time: s.absolute_expiry.map(timestamp_to_amqp),
        ..Properties::default()
    }
}

/// The application properties of a message: its own, as strings, and the ack mode as
/// `iothub-ack` unless it is [`AckMode::None`] (then an `iothub-ack` property of the message is
/// sent as given; otherwise the ack mode replaces it).
pub fn application_properties(m: &Message) -> ApplicationProperties {
    let ack = m.system.ack;
    let mut app = ApplicationProperties::default();
    for (name, value) in m.properties.iter() {
        if ack != AckMode::None && name == ACK_PROPERTY {
            continue;
        }
        app.0
            .insert(name.to_owned(), SimpleValue::String(value.to_owned()));
    }
    if ack != AckMode::None {
        app.0.insert(
            ACK_PROPERTY.to_owned(),
            SimpleValue::String(ack.as_str().to_owned()),
        );
    }
    app
}

/// The bytes of a body: data sections concatenated, a binary or string value as is, nothing
/// for an empty body or a null value. Anything else is an argument error.
pub fn body_bytes(body: &Body<Value>) -> Result<Vec<u8>, HubError> {
    match body {
        Body::Data(batch) => {
            let mut out = Vec::new();
            for Data(chunk) in batch.iter() {
                out.extend_from_slice(chunk.as_ref());
            }
            Ok(out)
        }
        Body::Value(AmqpValue(Value::Binary(b))) => Ok(b.to_vec()),
        Body::Value(AmqpValue(Value::String(s))) => Ok(s.as_bytes().to_vec()),
        Body::Value(AmqpValue(Value::Null)) | Body::Empty => Ok(Vec::new()),
        _ => Err(HubError::argument(
            "the message body must be data sections, or an amqp-value holding binary or a string",
        )),
    }
}

/// A message a peer sent, in the model.
///
/// `iothub-ack` moves from the application properties to [`Message::system`]; an unknown
/// value is an argument error, as are a body that is neither data sections nor a binary or
/// string value and an absolute expiry out of range. Other application properties become text
/// (`null` ones are dropped).
pub fn message_from_amqp(m: AmqpMessage<Body<Value>>) -> Result<Message, HubError> {
    let mut out = Message::new(body_bytes(&m.body)?);
    if let Some(p) = m.properties {
        let s = &mut out.system;
        s.message_id = p.message_id.map(message_id_from_amqp);
        s.correlation_id = p.correlation_id.map(message_id_from_amqp);
        s.user_id = p
            .user_id
            .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned());
        s.to = p.to;
        s.absolute_expiry = p
            .absolute_expiry_time
            .map(|t| {
                timestamp_from_amqp(&t)
                    .ok_or_else(|| HubError::argument("absolute-expiry-time is out of range"))
            })
            .transpose()?;
        s.content_type = p.content_type.map(|c| c.0);
        s.content_encoding = p.content_encoding.map(|c| c.0);
    }
    if let Some(ApplicationProperties(map)) = m.application_properties {
        for (name, value) in map {
            let Some(value) = simple_value_text(value) else {
                continue;
            };
            if name == ACK_PROPERTY {
                out.system.ack = AckMode::parse(&value).ok_or_else(|| {
                    HubError::argument(format!(
                        "'{ACK_PROPERTY}' is '{value}'; use none, positive, negative or full"
                    ))
                })?;
            } else {
                out.properties.insert(name, value);
            }
        }
    }
    Ok(out)
}

/// An application property value as the model keeps it: text. `null` means "not set".
pub fn simple_value_text(v: SimpleValue) -> Option<String> {
    Some(match v {
        SimpleValue::Null => return None,
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(f) => f.into_inner().to_string(),
        SimpleValue::Double(f) => f.into_inner().to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => match timestamp_from_amqp(&t) {
            Some(d) => crate::time_format::format_millis(d),
            None => t.milliseconds().to_string(),
        },
        SimpleValue::Uuid(u) => uuid::Uuid::from_bytes(u.into_inner())
            .hyphenated()
            .to_string(),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b.as_ref()).into_owned(),
        SimpleValue::String(s) => s,
        SimpleValue::Symbol(s) => s.0,
        other => format!("{other:?}"),
    })
}

/// The 16-byte delivery tag for a lock token: the GUID's bytes in the order .NET's
/// `Guid.ToByteArray` uses, so `new Guid(tag)` in the C# SDKs gives back the same lock token.
pub fn lock_token_tag(lock_token: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(lock_token)
        .ok()
        .map(|u| u.to_bytes_le())
}

/// A delivery tag as a lock token, the way the C# SDK shows it: a GUID when the tag has 16
/// bytes (the inverse of [`lock_token_tag`]), else hex.
pub fn lock_token_from_tag(tag: &[u8]) -> String {
    match <[u8; 16]>::try_from(tag) {
        Ok(bytes) => uuid::Uuid::from_bytes_le(bytes).hyphenated().to_string(),
        Err(_) => tag.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The AMQP error conditions the hub uses, as symbols (iothub-protocol.md 5.4, 5.6; the C#
/// `AmqpErrorMapper` and Node `amqp_common_errors` map them back to the hub's errors).
pub mod condition {
    /// A missing device or node.
    pub const NOT_FOUND: &str = "amqp:not-found";
    /// The device's C2D queue is full (403004).
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    /// A message over the hub's size limit.
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    /// Refused credentials.
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    /// An operation that is not possible in this state.
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    /// Something went wrong inside the hub.
    pub const INTERNAL_ERROR: &str = "amqp:internal-error";
    /// Throttling.
    pub const THROTTLED: &str = "com.microsoft:device-container-throttled";
    /// A malformed argument (bad `to`, property name, message id).
    pub const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
    /// An argument out of range.
    pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
    /// A settlement after the lock was gone.
    pub const MESSAGE_LOCK_LOST: &str = "com.microsoft:message-lock-lost";
    /// An If-Match style precondition did not hold.
    pub const PRECONDITION_FAILED: &str = "com.microsoft:precondition-failed";
}

/// The condition the hub reports an error code as.
pub fn condition_for(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::DeviceNotFound | ErrorCode::ModuleNotFound => condition::NOT_FOUND,
        ErrorCode::DeviceMaximumQueueDepthExceeded => condition::RESOURCE_LIMIT_EXCEEDED,
        ErrorCode::MessageTooLarge => condition::MESSAGE_SIZE_EXCEEDED,
        ErrorCode::ArgumentInvalid | ErrorCode::ArgumentNull => condition::ARGUMENT_ERROR,
        ErrorCode::DeviceMessageLockLost => condition::MESSAGE_LOCK_LOST,
        ErrorCode::PreconditionFailed => condition::PRECONDITION_FAILED,
        ErrorCode::DeviceAlreadyExists | ErrorCode::InvalidOperation => condition::NOT_ALLOWED,
        c if c.http_status() == 401 => condition::UNAUTHORIZED_ACCESS,
        c if c.http_status() == 429 => condition::THROTTLED,
        _ => condition::INTERNAL_ERROR,
    }
}

/// The error code a condition stands for, when it names one.
pub fn error_code_for(condition: &str) -> Option<ErrorCode> {
    Some(match condition {
        condition::NOT_FOUND => ErrorCode::DeviceNotFound,
        condition::RESOURCE_LIMIT_EXCEEDED => ErrorCode::DeviceMaximumQueueDepthExceeded,
        condition::MESSAGE_SIZE_EXCEEDED => ErrorCode::MessageTooLarge,
        condition::UNAUTHORIZED_ACCESS => ErrorCode::IotHubUnauthorizedAccess,
        condition::THROTTLED => ErrorCode::ThrottlingException,
        condition::ARGUMENT_ERROR | condition::ARGUMENT_OUT_OF_RANGE => ErrorCode::ArgumentInvalid,
        condition::MESSAGE_LOCK_LOST => ErrorCode::DeviceMessageLockLost,
        condition::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
        condition::NOT_ALLOWED => ErrorCode::InvalidOperation,
        condition::INTERNAL_ERROR => ErrorCode::ServerError,
        _ => return None,
    })
}

/// The symbol of an error condition, e.g. `amqp:not-found`.
pub fn condition_name(c: &ErrorCondition) -> String {
    let symbol: Symbol = match c {
        ErrorCondition::AmqpError(e) => e.into(),
        ErrorCondition::ConnectionError(e) => e.into(),
        ErrorCondition::SessionError(e) => e.into(),
        ErrorCondition::LinkError(e) => e.into(),
        ErrorCondition::Custom(s) => s.clone(),
    };
    symbol.0
}

impl HubReply {
    /// Reads an AMQP error: the condition (e.g. `amqp:not-found`) gives the code, the
    /// description is the message (the condition when there is none).
    pub fn from_amqp(condition: &str, description: Option<&str>) -> Self {
        HubReply {
            status: None,
            code: error_code_for(condition),
            condition: Some(condition.to_owned()),
            message: description
                .filter(|d| !d.is_empty())
                .unwrap_or(condition)
                .to_owned(),
        }
    }

    /// Reads an AMQP error as the peer sent it.
    pub fn from_amqp_error(e: &fe2o3_amqp_types::definitions::Error) -> Self {
        HubReply::from_amqp(&condition_name(&e.condition), e.description.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::{AmqpError, LinkError};
    use time::macros::datetime;

    #[test]
    fn ids_and_times_round_trip_in_their_types() {
        let u = uuid::Uuid::from_bytes([7; 16]);
        for id in [
            MessageId::String("m".into()),
            MessageId::Uuid(u),
            MessageId::Ulong(9),
            MessageId::Binary(vec![1, 2]),
        ] {
            assert_eq!(message_id_from_amqp(message_id_to_amqp(&id)), id);
        }
        let t = datetime!(2030-01-02 03:04:05.678 UTC);
        assert_eq!(timestamp_to_amqp(t).milliseconds(), 1_893_553_445_678);
        assert_eq!(timestamp_from_amqp(&timestamp_to_amqp(t)), Some(t));
    }

    #[test]
    fn a_message_survives_the_trip_through_amqp() {
        let mut m = Message::new("body");
        m.system.message_id = Some(MessageId::Uuid(uuid::Uuid::from_bytes([3; 16])));
        m.system.correlation_id = Some("c".into());
        m.system.user_id = Some("svc".into());
        m.system.to = Some("/devices/d/messages/devicebound".into());
        m.system.absolute_expiry = Some(datetime!(2030-01-02 03:04:05.678 UTC));
        m.system.content_type = Some("application/json".into());
        m.system.content_encoding = Some("utf-8".into());
        m.system.ack = AckMode::Full;
        m.properties.insert("k", "v");
        m.properties.insert(ACK_PROPERTY, "none");
        let app = application_properties(&m);
        assert_eq!(app.0.len(), 2);
        assert_eq!(
            app.0.get(ACK_PROPERTY),
            Some(&SimpleValue::String("full".into()))
        );
        let wire: AmqpMessage<Body<Value>> = AmqpMessage::builder()
            .properties(properties(&m.system))
            .application_properties(app)
            .body(Body::Data(vec![Data::from(m.body.clone())].into()))
            .build();
        let back = message_from_amqp(wire).unwrap();
        m.properties.remove(ACK_PROPERTY);
        assert_eq!(back, m);
    }

    #[test]
    fn ack_none_sends_a_given_ack_property_as_is() {
        let mut m = Message::new("x");
        assert!(application_properties(&m).0.is_empty());
        m.properties.insert(ACK_PROPERTY, "positive");
        assert_eq!(
            application_properties(&m).0.get(ACK_PROPERTY),
            Some(&SimpleValue::String("positive".into()))
        );
    }

    #[test]
    fn odd_bodies_and_bad_acks_are_argument_errors() {
        let b = Body::Value(AmqpValue(Value::Bool(true)));
        assert!(matches!(
            body_bytes(&b),
            Err(HubError::ArgumentInvalid { .. })
        ));
        assert_eq!(body_bytes(&Body::Empty).unwrap(), b"");
        let m: AmqpMessage<Body<Value>> = AmqpMessage::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert(ACK_PROPERTY, "sometimes")
                    .build(),
            )
            .body(Body::Empty)
            .build();
        assert!(message_from_amqp(m).is_err());
    }

    #[test]
    fn lock_tokens_use_the_dotnet_guid_layout_both_ways() {
        let token = "00112233-4455-6677-8899-aabbccddeeff";
        let tag = lock_token_tag(token).unwrap();
        assert_eq!(&tag[..4], &[0x33, 0x22, 0x11, 0x00]);
        assert_eq!(lock_token_from_tag(&tag), token);
        assert_eq!(lock_token_from_tag(&[0xab, 0x01]), "ab01");
        let tag: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            lock_token_from_tag(&tag),
            "03020100-0504-0706-0809-0a0b0c0d0e0f"
        );
        assert!(lock_token_tag("not-a-guid").is_none());
    }

    #[test]
    fn conditions_and_codes_map_both_ways() {
        for code in [
            ErrorCode::DeviceNotFound,
            ErrorCode::DeviceMaximumQueueDepthExceeded,
            ErrorCode::MessageTooLarge,
            ErrorCode::IotHubUnauthorizedAccess,
            ErrorCode::ThrottlingException,
            ErrorCode::ArgumentInvalid,
            ErrorCode::DeviceMessageLockLost,
            ErrorCode::PreconditionFailed,
            ErrorCode::InvalidOperation,
            ErrorCode::ServerError,
        ] {
            assert_eq!(error_code_for(condition_for(code)), Some(code), "{code}");
        }
        assert_eq!(
            condition_name(&AmqpError::NotFound.into()),
            condition::NOT_FOUND
        );
        assert_eq!(
            condition_name(&LinkError::MessageSizeExceeded.into()),
            condition::MESSAGE_SIZE_EXCEEDED
        );
        let r = HubReply::from_amqp("com.example:odd", None);
        assert_eq!((r.code, r.message.as_str()), (None, "com.example:odd"));
    }
}
