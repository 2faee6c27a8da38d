//! Translation between the shared message model and AMQP 1.0 messages, and from AMQP
//! outcomes and link errors to [`Error`].
//!
//! What goes on the wire mirrors the Node service SDK (iothub-protocol.md 5.4, official-sdks.md
//! 2.4): `to` = `/devices/{encoded id}/messages/devicebound`, the body as one data section, the
//! settable system properties in the AMQP properties section, and the ack mode as the
//! application property `iothub-ack`.

use fe2o3_amqp::link::{
    DetachError, LinkStateError, ReceiverAttachError, SendError, SenderAttachError,
};
use fe2o3_amqp::types::definitions::{self, ErrorCondition};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message as AmqpMessage, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Uuid, Value};
use iothub_protocol::message::ACK_PROPERTY;
use iothub_protocol::{AckMode, Message, MessageId};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use time::OffsetDateTime;

use crate::Error;

/// What `encodeURIComponent` leaves alone (the Node service SDK encodes the device id in `to`
/// and in registry paths with it).
pub(crate) const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The device id percent-encoded as one URI path segment.
pub(crate) fn encode_segment(device_id: &str) -> String {
    utf8_percent_encode(device_id, URI_COMPONENT).to_string()
}

/// The `to` of a C2D message for this device.
pub(crate) fn devicebound_to(device_id: &str) -> String {
    format!(
        "/devices/{}/messages/devicebound",
        encode_segment(device_id)
    )
}

fn amqp_id(id: &MessageId) -> fe2o3_amqp::types::messaging::MessageId {
    use fe2o3_amqp::types::messaging::MessageId as A;
    match id {
        MessageId::String(s) => A::String(s.clone()),
        MessageId::Uuid(u) => A::Uuid(Uuid::from(*u.as_bytes())),
        MessageId::Ulong(n) => A::Ulong(*n),
        MessageId::Binary(b) => A::Binary(Binary::from(b.clone())),
    }
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_milliseconds(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// A timestamp back as a time, for annotations the hub writes.
pub(crate) fn from_timestamp(t: &Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.milliseconds()) * 1_000_000).ok()
}

/// The AMQP message for a C2D send to `device_id`.
///
/// `to` is always set here (any `to` in `message` is ignored: the hub routes by it). The ack
/// mode, when not [`AckMode::None`], replaces an `iothub-ack` application property of the
/// same message; with [`AckMode::None`] such a property is sent as given.
pub(crate) fn c2d_message(device_id: &str, message: &Message) -> AmqpMessage<Data> {
    let s = &message.system;
    let properties = Properties {
        message_id: s.message_id.as_ref().map(amqp_id),
        user_id: s
            .user_id
            .as_ref()
            .map(|u| Binary::from(u.as_bytes().to_vec())),
        to: Some(devicebound_to(device_id)),
        correlation_id: s.correlation_id.as_ref().map(amqp_id),
        content_type: s.content_type.as_ref().map(|c| Symbol::from(c.as_str())),
        content_encoding: s
            .content_encoding
            .as_ref()
            .map(|c| Symbol::from(c.as_str())),
        absolute_expiry_time: s.absolute_expiry.map(timestamp),
        ..Properties::default()
    };
    let mut app = ApplicationProperties::default();
    for (name, value) in message.properties.iter() {
        if s.ack != AckMode::None && name == ACK_PROPERTY {
            continue;
        }
        app.0
            .insert(name.to_owned(), SimpleValue::String(value.to_owned()));
    }
    if s.ack != AckMode::None {
        app.0.insert(
            ACK_PROPERTY.to_owned(),
            SimpleValue::String(s.ack.as_str().to_owned()),
        );
    }
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(if app.0.is_empty() { None } else { Some(app) })
        .data(Binary::from(message.body.clone()))
        .build()
}

/// The symbol of an AMQP error condition, e.g. `amqp:not-found`.
pub(crate) fn condition_symbol(c: &ErrorCondition) -> String {
    let sym: Symbol = match c {
        ErrorCondition::AmqpError(e) => e.into(),
        ErrorCondition::ConnectionError(e) => e.into(),
        ErrorCondition::SessionError(e) => e.into(),
        ErrorCondition::LinkError(e) => e.into(),
        ErrorCondition::Custom(s) => s.clone(),
    };
    sym.0
}

/// The [`Error`] for an AMQP error sent by the hub.
pub(crate) fn from_amqp_error(e: &definitions::Error) -> Error {
    Error::from_amqp(&condition_symbol(&e.condition), e.description.as_deref())
}

/// The result of a C2D send from the hub's outcome.
pub(crate) fn outcome_result(outcome: Outcome) -> Result<(), Error> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(r) => Err(match r.error {
            Some(e) => from_amqp_error(&e),
            None => Error::Hub {
                status: None,
                code: None,
                condition: Some("rejected".to_owned()),
                message: "the hub rejected the message without saying why".to_owned(),
            },
        }),
        Outcome::Released(_) => Err(Error::Hub {
            status: None,
            code: None,
            condition: Some("released".to_owned()),
            message: "the hub released the message without enqueuing it; send it again".to_owned(),
        }),
        Outcome::Modified(_) => Err(Error::Hub {
            status: None,
            code: None,
            condition: Some("modified".to_owned()),
            message: "the hub returned the message as modified without enqueuing it; send it again"
                .to_owned(),
        }),
    }
}

/// The [`Error`] for a link that stopped: the hub's condition when it detached the link with
/// one, else a connection error.
pub(crate) fn link_state_error(e: LinkStateError, what: &str) -> Error {
    match e {
        LinkStateError::RemoteDetachedWithError(err)
        | LinkStateError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("{what}: the AMQP link failed"), other),
    }
}

/// The [`Error`] for a failed send on the C2D link.
pub(crate) fn send_error(e: SendError) -> Error {
    match e {
        SendError::MessageSizeExceeded(m) => Error::MessageTooLarge {
            message: m.to_string(),
        },
        SendError::LinkStateError(l) => link_state_error(l, "C2D send"),
        SendError::Detached(d) => detach_error(d, "C2D send"),
        other => Error::connection("C2D send failed", other),
    }
}

/// The [`Error`] for a link that detached.
pub(crate) fn detach_error(e: DetachError, what: &str) -> Error {
    match e {
        DetachError::RemoteDetachedWithError(err) | DetachError::RemoteClosedWithError(err) => {
            from_amqp_error(&err)
        }
        other => Error::connection(format!("{what}: the AMQP link was detached"), other),
    }
}

/// The [`Error`] for a sender link the hub refused (its condition when it gave one).
pub(crate) fn sender_attach_error(e: SenderAttachError, what: &str) -> Error {
    match e {
        SenderAttachError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("cannot attach {what}"), other),
    }
}

/// The [`Error`] for a receiver link the hub refused (its condition when it gave one).
pub(crate) fn receiver_attach_error(e: ReceiverAttachError, what: &str) -> Error {
    match e {
        ReceiverAttachError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("cannot attach {what}"), other),
    }
}

/// The bytes of a body: data sections concatenated, a binary or string value as is.
pub(crate) fn body_bytes(body: &Body<Value>) -> Option<Vec<u8>> {
    match body {
        Body::Data(batch) => {
            let mut out = Vec::new();
            for d in batch.iter() {
                out.extend_from_slice(&d.0);
            }
            Some(out)
        }
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Some(b.to_vec()),
            Value::String(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        },
        Body::Empty => Some(Vec::new()),
        Body::Sequence(_) => None,
    }
}

/// A value that is an integer of any AMQP width, as an `i64`.
pub(crate) fn simple_int(v: &SimpleValue) -> Option<i64> {
    match v {
        SimpleValue::Ubyte(n) => Some(i64::from(*n)),
        SimpleValue::Ushort(n) => Some(i64::from(*n)),
        SimpleValue::Uint(n) => Some(i64::from(*n)),
        SimpleValue::Ulong(n) => i64::try_from(*n).ok(),
        SimpleValue::Byte(n) => Some(i64::from(*n)),
        SimpleValue::Short(n) => Some(i64::from(*n)),
        SimpleValue::Int(n) => Some(i64::from(*n)),
        SimpleValue::Long(n) => Some(*n),
        SimpleValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError, LinkError};
    use fe2o3_amqp::types::messaging::{Accepted, Rejected, Released};
    use iothub_protocol::Properties as AppProperties;
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
        assert_eq!(encode_segment("x!*'()~._-"), "x!*'()~._-");
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
            from_timestamp(ts),
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

    #[test]
    fn outcomes_map_to_results() {
        assert!(outcome_result(Outcome::Accepted(Accepted {})).is_ok());
        let rejected = |c: ErrorCondition| {
            outcome_result(Outcome::Rejected(Rejected {
                error: Some(definitions::Error::new(c, Some("d".to_owned()), None)),
            }))
            .unwrap_err()
        };
        assert!(matches!(
            rejected(AmqpError::NotFound.into()),
            Error::DeviceNotFound { .. }
        ));
        assert!(matches!(
            rejected(AmqpError::ResourceLimitExceeded.into()),
            Error::QueueFull { .. }
        ));
        assert!(matches!(
            rejected(LinkError::MessageSizeExceeded.into()),
            Error::MessageTooLarge { .. }
        ));
        assert!(matches!(
            rejected(AmqpError::UnauthorizedAccess.into()),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            rejected(ErrorCondition::Custom(Symbol::from(
                "com.microsoft:device-container-throttled"
            ))),
            Error::Throttled { .. }
        ));
        assert!(matches!(
            rejected(ErrorCondition::Custom(Symbol::from(
                "com.microsoft:argument-error"
            ))),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            outcome_result(Outcome::Released(Released {})),
            Err(Error::Hub { .. })
        ));
        assert!(matches!(
            outcome_result(Outcome::Rejected(Rejected { error: None })),
            Err(Error::Hub { .. })
        ));
    }

    #[test]
    fn integers_of_any_width_are_read() {
        assert_eq!(simple_int(&SimpleValue::Int(202)), Some(202));
        assert_eq!(simple_int(&SimpleValue::Ulong(200)), Some(200));
        assert_eq!(simple_int(&SimpleValue::String("401".into())), Some(401));
        assert_eq!(simple_int(&SimpleValue::Bool(true)), None);
    }
}
