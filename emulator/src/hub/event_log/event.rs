//! What the event log stores: the device's message plus what the hub stamps on it.
//!
//! Reference: iothub-beyond-c2d.md 3.4 (the annotations a reader sees) and 3.6 (the sources of
//! non-telemetry events). Transport-neutral: the AMQP adapter writes [`Event::annotations`] as
//! message annotations with the types given by [`AnnotationValue`], the message's system
//! properties as the properties section (none at all when [`Event::has_properties`] is false)
//! and its application properties unchanged.

use std::borrow::Cow;

use iothub_protocol::Message;
use time::OffsetDateTime;

use crate::hub::Identity;

/// Annotation names the hub stamps on every event.
pub mod annotation {
    /// The device that sent the message (on every event, telemetry or not).
    pub const DEVICE_ID: &str = "iothub-connection-device-id";
    /// The module that sent the message, for a module's message.
    pub const MODULE_ID: &str = "iothub-connection-module-id";
    /// How the sender authenticated, as a JSON string.
    pub const AUTH_METHOD: &str = "iothub-connection-auth-method";
    /// The sender's generation id: tells a re-created device from the one before.
    pub const AUTH_GENERATION_ID: &str = "iothub-connection-auth-generation-id";
    /// When the hub accepted the message (AMQP timestamp).
    pub const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
    /// `Telemetry`, `twinChangeEvents`, ... ([`super::EventSource`]).
    pub const MESSAGE_SOURCE: &str = "iothub-message-source";
    /// The event's sequence number in its partition (AMQP long).
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    /// The event's offset in its partition (AMQP string).
    pub const OFFSET: &str = "x-opt-offset";
    /// When the event was enqueued in its partition (AMQP timestamp).
    pub const X_OPT_ENQUEUED_TIME: &str = "x-opt-enqueued-time";
}

/// What produced an event: `iothub-message-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// A device or module sent it.
    Telemetry,
    /// A twin changed.
    TwinChangeEvents,
    /// A device or module was created or deleted.
    DeviceLifecycleEvents,
    /// A device connected or disconnected.
    DeviceConnectionStateEvents,
}

impl EventSource {
    /// The value of `iothub-message-source`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Telemetry => "Telemetry",
            EventSource::TwinChangeEvents => "twinChangeEvents",
            EventSource::DeviceLifecycleEvents => "deviceLifecycleEvents",
            EventSource::DeviceConnectionStateEvents => "deviceConnectionStateEvents",
        }
    }
}

/// Whose credentials a sender used: the `scope` of `iothub-connection-auth-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthScope {
    /// The device's own key.
    Device,
    /// The module's own key.
    Module,
    /// A hub shared access policy (with DeviceConnect).
    Hub,
}

/// What kind of credential a sender used: the `type` of `iothub-connection-auth-method`. X.509
/// adds its kinds when the emulator supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialType {
    /// A shared access signature token.
    Sas,
}

/// How a sender authenticated, as the hub reports it in `iothub-connection-auth-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthMethod {
    /// Whose key signed the credential.
    pub scope: AuthScope,
    /// What the credential was.
    pub credential: CredentialType,
}

impl AuthMethod {
    /// A SAS token signed with the device's key.
    pub const DEVICE_SAS: AuthMethod = AuthMethod {
        scope: AuthScope::Device,
        credential: CredentialType::Sas,
    };
    /// A SAS token signed with the module's key.
    pub const MODULE_SAS: AuthMethod = AuthMethod {
        scope: AuthScope::Module,
        credential: CredentialType::Sas,
    };
    /// A SAS token signed with a hub policy's key.
    pub const HUB_SAS: AuthMethod = AuthMethod {
        scope: AuthScope::Hub,
        credential: CredentialType::Sas,
    };

    /// The JSON string the hub writes, keys in the hub's order:
    /// `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`.
    pub fn as_json(self) -> &'static str {
        match (self.scope, self.credential) {
            (AuthScope::Device, CredentialType::Sas) => {
                r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
            }
            (AuthScope::Module, CredentialType::Sas) => {
                r#"{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
            }
            (AuthScope::Hub, CredentialType::Sas) => {
                r#"{"scope":"hub","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
            }
        }
    }
}

/// Who sent a message and how they authenticated: what an adapter passes with telemetry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The device, or module, that sent it.
    pub identity: Identity,
    /// How it authenticated on this connection or request.
    pub auth: AuthMethod,
}

impl Origin {
    /// A device that authenticated with its own key.
    pub fn device(device_id: impl Into<String>) -> Self {
        Origin {
            identity: Identity::device(device_id),
            auth: AuthMethod::DEVICE_SAS,
        }
    }
}

/// The typed value of an annotation, as the AMQP adapter must encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationValue<'a> {
    /// An AMQP string.
    String(Cow<'a, str>),
    /// An AMQP long.
    Long(i64),
    /// An AMQP timestamp: milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// What the hub knew about the sender's connection when it accepted a device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStamp {
    /// How the sender authenticated.
    pub auth: AuthMethod,
    /// The device's generation id, if the registry gave it one.
    pub generation_id: Option<String>,
}

/// One event in a partition. Immutable once appended; readers share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The partition that holds it.
    pub partition: u32,
    /// Its place in the partition: 0 for the first event ever, then +1 per event.
    pub sequence_number: i64,
    /// Its offset in the partition (see [`super::EventLog`] for what it counts).
    pub offset: u64,
    /// When the partition accepted it, to the millisecond; never earlier than the event before.
    pub enqueued_time: OffsetDateTime,
    /// What produced it.
    pub source: EventSource,
    /// The device (or module) it is about or came from: it decides the partition.
    pub origin: Identity,
    /// The sender's authentication, for device messages; `None` for events the hub made.
    pub connection: Option<ConnectionStamp>,
    /// Body, system properties and application properties. Only properties a sender can set
    /// are present: the hub's C2D bookkeeping fields are always `None`.
    pub message: Message,
}

/// Milliseconds since the Unix epoch, saturating far outside the years anyone uses.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Event {
    /// The enqueued time in Unix milliseconds (`x-opt-enqueued-time`, `iothub-enqueuedtime`).
    pub fn enqueued_ms(&self) -> i64 {
        unix_ms(self.enqueued_time)
    }

    /// The offset as readers see it in `x-opt-offset`: a decimal string.
    pub fn offset_string(&self) -> String {
        self.offset.to_string()
    }

    /// True when the device set any field of the AMQP properties section (message id,
    /// correlation id, user id, to, content type or encoding, expiry). When false the adapter
    /// must send no properties section at all: the Python e2e helper reads `content_type` from
    /// any section that exists.
    pub fn has_properties(&self) -> bool {
        let s = &self.message.system;
        s.message_id.is_some()
            || s.correlation_id.is_some()
            || s.user_id.is_some()
            || s.to.is_some()
            || s.content_type.is_some()
            || s.content_encoding.is_some()
            || s.absolute_expiry.is_some()
    }

    /// Every message annotation of the event, in the hub's order, with its AMQP type:
    /// `iothub-connection-device-id`, `iothub-connection-module-id` (modules),
    /// `iothub-connection-auth-method` and `iothub-connection-auth-generation-id` (device
    /// messages), `iothub-enqueuedtime`, `iothub-message-source`, `x-opt-sequence-number`,
    /// `x-opt-offset`, `x-opt-enqueued-time`.
    pub fn annotations(&self) -> Vec<(&'static str, AnnotationValue<'_>)> {
        fn s(v: &str) -> AnnotationValue<'_> {
            AnnotationValue::String(Cow::Borrowed(v))
        }
        let ms = self.enqueued_ms();
        let mut out = Vec::with_capacity(9);
        out.push((annotation::DEVICE_ID, s(&self.origin.device_id)));
        if let Some(module) = &self.origin.module_id {
            out.push((annotation::MODULE_ID, s(module)));
        }
        if let Some(c) = &self.connection {
            out.push((annotation::AUTH_METHOD, s(c.auth.as_json())));
            if let Some(g) = &c.generation_id {
                out.push((annotation::AUTH_GENERATION_ID, s(g)));
            }
        }
        out.push((annotation::ENQUEUED_TIME, AnnotationValue::Timestamp(ms)));
        out.push((annotation::MESSAGE_SOURCE, s(self.source.as_str())));
        out.push((
            annotation::SEQUENCE_NUMBER,
            AnnotationValue::Long(self.sequence_number),
        ));
        out.push((
            annotation::OFFSET,
            AnnotationValue::String(Cow::Owned(self.offset_string())),
        ));
        out.push((
            annotation::X_OPT_ENQUEUED_TIME,
            AnnotationValue::Timestamp(ms),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn event(message: Message, origin: Identity, connection: Option<ConnectionStamp>) -> Event {
        Event {
            partition: 1,
            sequence_number: 1379,
            offset: 550_576,
            enqueued_time: datetime!(2021-05-02 17:22:30.277 UTC),
            source: EventSource::Telemetry,
            origin,
            connection,
            message,
        }
    }

    #[test]
    fn annotations_match_a_captured_real_event() {
        let e = event(
            Message::new("{}"),
            Identity::device("soil-moisture-sensor"),
            Some(ConnectionStamp {
                auth: AuthMethod::DEVICE_SAS,
                generation_id: Some("637553997165220462".into()),
            }),
        );
        let s = |v: &str| AnnotationValue::String(Cow::Owned(v.to_owned()));
        assert_eq!(
            e.annotations(),
            vec![
                ("iothub-connection-device-id", s("soil-moisture-sensor")),
                (
                    "iothub-connection-auth-method",
                    s(
                        r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
                    )
                ),
                (
                    "iothub-connection-auth-generation-id",
                    s("637553997165220462")
                ),
                (
                    "iothub-enqueuedtime",
                    AnnotationValue::Timestamp(1_619_976_150_277)
                ),
                ("iothub-message-source", s("Telemetry")),
                ("x-opt-sequence-number", AnnotationValue::Long(1379)),
                ("x-opt-offset", s("550576")),
                (
                    "x-opt-enqueued-time",
                    AnnotationValue::Timestamp(1_619_976_150_277)
                ),
            ]
        );
    }

    #[test]
    fn modules_add_their_id_and_hub_events_have_no_connection() {
        let e = event(Message::new(""), Identity::module("d", "m"), None);
        let names: Vec<_> = e.annotations().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                annotation::DEVICE_ID,
                annotation::MODULE_ID,
                annotation::ENQUEUED_TIME,
                annotation::MESSAGE_SOURCE,
                annotation::SEQUENCE_NUMBER,
                annotation::OFFSET,
                annotation::X_OPT_ENQUEUED_TIME,
            ]
        );
    }

    #[test]
    fn properties_section_only_when_the_device_set_a_field() {
        let mut e = event(Message::new("plain string"), Identity::device("d"), None);
        e.message.properties.insert("custom", "v");
        assert!(
            !e.has_properties(),
            "application properties are not the section"
        );
        e.message.system.content_type = Some("application/json".into());
        assert!(e.has_properties());
        let mut e = event(Message::new(""), Identity::device("d"), None);
        e.message.system.message_id = Some("m1".into());
        assert!(e.has_properties());
    }

    #[test]
    fn auth_methods_and_sources_spell_like_the_hub() {
        assert!(
            AuthMethod::HUB_SAS
                .as_json()
                .starts_with(r#"{"scope":"hub","type":"sas""#)
        );
        assert!(
            AuthMethod::MODULE_SAS
                .as_json()
                .contains(r#""scope":"module""#)
        );
        for (s, name) in [
            (EventSource::Telemetry, "Telemetry"),
            (EventSource::TwinChangeEvents, "twinChangeEvents"),
            (EventSource::DeviceLifecycleEvents, "deviceLifecycleEvents"),
            (
                EventSource::DeviceConnectionStateEvents,
                "deviceConnectionStateEvents",
            ),
        ] {
            assert_eq!(s.as_str(), name);
        }
    }
}
