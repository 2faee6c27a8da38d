//! The message model: body, system properties and application properties, and the hub's rules
//! for sizes, property names and message ids.
//!
//! Reference: iothub-protocol.md 1.5 and 2.1.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::HubError;

/// Largest C2D message: body + system property values + application property names and values.
pub const MAX_C2D_SIZE: usize = 64 * 1024;
/// Largest D2C message, counted the same way.
pub const MAX_D2C_SIZE: usize = 256 * 1024;
/// Longest message id the hub accepts.
pub const MAX_MESSAGE_ID_LEN: usize = 128;
/// Name of the application property that asks for feedback.
pub const ACK_PROPERTY: &str = "iothub-ack";

/// A message id (or correlation id) in any of the AMQP types the SDKs send.
///
/// The Node service SDK sends a UUID-looking id as an AMQP `uuid`; the Python service SDK's
/// uamqp may use `ulong`. Whatever the type, the id is shown everywhere else (MQTT `$.mid`,
/// HTTPS `iothub-messageid`, feedback `originalMessageId`) as [`MessageId::canonical`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// A string id, kept as given.
    String(String),
    /// An AMQP uuid; canonical form is the lower-case hyphenated string.
    Uuid(Uuid),
    /// An AMQP ulong; canonical form is the decimal number.
    Ulong(u64),
    /// AMQP binary; canonical form is lower-case hex (the hub's own choice is not documented).
    Binary(Vec<u8>),
}

impl MessageId {
    /// The string form used on MQTT, HTTPS and in feedback.
    pub fn canonical(&self) -> String {
        match self {
            MessageId::String(s) => s.clone(),
            MessageId::Uuid(u) => u.hyphenated().to_string(),
            MessageId::Ulong(n) => n.to_string(),
            MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }

    /// Length in bytes of the canonical form, for size accounting.
    pub fn len(&self) -> usize {
        match self {
            MessageId::String(s) => s.len(),
            MessageId::Uuid(_) => 36,
            MessageId::Ulong(n) => n.to_string().len(),
            MessageId::Binary(b) => b.len() * 2,
        }
    }

    /// True for an empty string id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        MessageId::String(s.to_owned())
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        MessageId::String(s)
    }
}

/// The feedback a service asks for with `iothub-ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// No feedback (the default).
    #[default]
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message is dead-lettered (rejected, expired, delivery count exceeded)
    /// or purged.
    Negative,
    /// Both.
    Full,
}

impl AckMode {
    /// The value written in `iothub-ack`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Parses an `iothub-ack` value (case-insensitive).
    pub fn parse(s: &str) -> Option<AckMode> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(AckMode::None),
            "positive" => Some(AckMode::Positive),
            "negative" => Some(AckMode::Negative),
            "full" => Some(AckMode::Full),
            _ => None,
        }
    }

    /// Whether a message with this ack mode produces a feedback record for `status`.
    ///
    /// `Purged` counts as negative: the service asked to hear when the device did not get the
    /// message, and a purge is exactly that (the hub's own behaviour is undocumented).
    pub fn wants(self, status: crate::feedback::FeedbackStatus) -> bool {
        match self {
            AckMode::None => false,
            AckMode::Full => true,
            AckMode::Positive => status.is_positive(),
            AckMode::Negative => !status.is_positive(),
        }
    }
}

/// Application properties, in the order they were set. Setting a name again replaces its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(Vec<(String, String)>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties(Vec::new())
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name in place.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(i).1)
    }

    /// The properties in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes counted towards the message size: every name and value.
    pub fn size(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Properties::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

/// The system properties of a message. Which ones are set depends on direction and stage:
/// the service sets message id, correlation id, user id, expiry, content type and encoding and
/// ack; the hub adds `to`, sequence number, enqueued time, delivery count and lock token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemProperties {
    /// `message-id` / `$.mid` / `iothub-messageid`.
    pub message_id: Option<MessageId>,
    /// `correlation-id` / `$.cid` / `iothub-correlationid`.
    pub correlation_id: Option<MessageId>,
    /// `user-id` / `$.uid` / `iothub-userid`.
    pub user_id: Option<String>,
    /// `to` / `$.to` / `iothub-to`.
    pub to: Option<String>,
    /// `absolute-expiry-time` / `$.exp` / `iothub-expiry`.
    pub absolute_expiry: Option<OffsetDateTime>,
    /// `content-type` / `$.ct`.
    pub content_type: Option<String>,
    /// `content-encoding` / `$.ce`.
    pub content_encoding: Option<String>,
    /// `iothub-ack`.
    pub ack: AckMode,
    /// Set by the hub; increases per device queue.
    pub sequence_number: Option<u64>,
    /// Set by the hub when the message was enqueued.
    pub enqueued_time: Option<OffsetDateTime>,
    /// Set by the hub on delivery: how many times the message was abandoned before.
    pub delivery_count: Option<u32>,
    /// Set by the hub on delivery: the token that settles this delivery.
    pub lock_token: Option<String>,
}

impl SystemProperties {
    /// Bytes counted towards the message size: the values of the settable system properties.
    pub fn size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.message_id.as_ref().map_or(0, MessageId::len)
            + self.correlation_id.as_ref().map_or(0, MessageId::len)
            + opt(&self.user_id)
            + opt(&self.to)
            + opt(&self.content_type)
            + opt(&self.content_encoding)
            + self.absolute_expiry.map_or(0, |_| 28)
            + if self.ack == AckMode::None {
                0
            } else {
                self.ack.as_str().len()
            }
    }
}

/// A message in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The payload, opaque to the hub.
    pub body: Vec<u8>,
    /// System properties.
    pub system: SystemProperties,
    /// Application (custom) properties.
    pub properties: Properties,
}

impl Message {
    /// A message with this body and nothing else.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// The size the hub counts against its limits.
    pub fn size(&self) -> usize {
        self.body.len() + self.system.size() + self.properties.size()
    }

    /// Checks the rules for a C2D message: size, property names, message id.
    pub fn validate_c2d(&self) -> Result<(), HubError> {
        self.validate(MAX_C2D_SIZE)
    }

    /// Checks the rules for a D2C message: size, property names, message id.
    pub fn validate_d2c(&self) -> Result<(), HubError> {
        self.validate(MAX_D2C_SIZE)
    }

    fn validate(&self, max: usize) -> Result<(), HubError> {
        let size = self.size();
        if size > max {
            return Err(HubError::MessageTooLarge { size, max });
        }
        if let Some(MessageId::String(id)) = &self.system.message_id {
            validate_message_id(id)?;
        }
        for (name, _) in self.properties.iter() {
            validate_property_name(name)?;
        }
        Ok(())
    }
}

/// True when `c` may appear in a property name (iothub-protocol.md 1.5).
pub fn is_property_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_|~`".contains(c)
}

/// Checks an application property name.
///
/// Values are not checked: the official SDKs send values with spaces and `&=/?` and expect them
/// to arrive, although the docs list the same small alphabet for values as for names.
pub fn validate_property_name(name: &str) -> Result<(), HubError> {
    if name.is_empty() {
        return Err(HubError::argument("an application property name is empty"));
    }
    if let Some(bad) = name.chars().find(|c| !is_property_name_char(*c)) {
        return Err(HubError::argument(format!(
            "the application property name '{name}' contains {bad:?}; names may only use ASCII letters, digits and ! # $ % & ' * + - . ^ _ | ~ `"
        )));
    }
    Ok(())
}

/// True when `c` may appear in a message id (iothub-protocol.md 1.5).
pub fn is_message_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c)
}

/// Checks a string message id: at most 128 characters from the hub's alphabet.
pub fn validate_message_id(id: &str) -> Result<(), HubError> {
    if id.len() > MAX_MESSAGE_ID_LEN {
        return Err(HubError::argument(format!(
            "the message id is {} characters long; at most {MAX_MESSAGE_ID_LEN} are allowed",
            id.len()
        )));
    }
    if let Some(bad) = id.chars().find(|c| !is_message_id_char(*c)) {
        return Err(HubError::argument(format!(
            "the message id '{id}' contains {bad:?}; ids may only use ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::FeedbackStatus;

    #[test]
    fn canonical_message_ids() {
        let u = Uuid::parse_str("6B822696-1234-4abc-8def-0123456789AB").unwrap();
        assert_eq!(
            MessageId::Uuid(u).canonical(),
            "6b822696-1234-4abc-8def-0123456789ab"
        );
        assert_eq!(MessageId::Ulong(42).canonical(), "42");
        assert_eq!(MessageId::Binary(vec![0, 0xab]).canonical(), "00ab");
        assert_eq!(MessageId::from("m-1").canonical(), "m-1");
        assert_eq!(MessageId::Ulong(42).len(), 2);
    }

    #[test]
    fn ack_modes_ask_for_exactly_their_outcomes() {
        use FeedbackStatus::*;
        let all = [Success, Expired, DeliveryCountExceeded, Rejected, Purged];
        for s in all {
            assert!(!AckMode::None.wants(s));
            assert!(AckMode::Full.wants(s));
            assert_eq!(AckMode::Positive.wants(s), s == Success);
            assert_eq!(AckMode::Negative.wants(s), s != Success);
        }
        assert_eq!(AckMode::parse("FULL"), Some(AckMode::Full));
        assert_eq!(AckMode::parse("sometimes"), None);
    }

    #[test]
    fn size_counts_body_system_values_and_property_names_and_values() {
        let mut m = Message::new(vec![0u8; 10]);
        m.system.message_id = Some("abc".into());
        m.properties.insert("k", "vv");
        assert_eq!(m.size(), 10 + 3 + 1 + 2);
    }

    #[test]
    fn c2d_size_limit_is_64k_and_d2c_256k() {
        let mut m = Message::new(vec![0u8; MAX_C2D_SIZE]);
        assert!(m.validate_c2d().is_ok());
        m.properties.insert("a", "");
        assert_eq!(
            m.validate_c2d(),
            Err(HubError::MessageTooLarge {
                size: MAX_C2D_SIZE + 1,
                max: MAX_C2D_SIZE
            })
        );
        assert!(m.validate_d2c().is_ok());
        let big = Message::new(vec![0u8; MAX_D2C_SIZE + 1]);
        assert!(matches!(
            big.validate_d2c(),
            Err(HubError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn property_names_and_message_ids_follow_the_alphabet() {
        assert!(validate_property_name("custom-prop_1.x~`|^").is_ok());
        assert!(matches!(
            validate_property_name("a b"),
            Err(HubError::ArgumentInvalid { .. })
        ));
        assert!(validate_property_name("").is_err());
        assert!(validate_property_name("é").is_err());
        assert!(validate_message_id("message_0:a.b+c%d#e*f?g!h(i)j,k=l@m;n$o'").is_ok());
        assert!(validate_message_id(&"x".repeat(129)).is_err());
        assert!(validate_message_id("a/b").is_err());
        let mut m = Message::new("x");
        m.properties.insert("bad name", "v");
        assert!(matches!(
            m.validate_c2d(),
            Err(HubError::ArgumentInvalid { .. })
        ));
    }

    #[test]
    fn properties_keep_order_and_replace_in_place() {
        let mut p: Properties = [("b", "1"), ("a", "2")].into_iter().collect();
        p.insert("b", "3");
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![("b", "3"), ("a", "2")]);
        assert_eq!(p.remove("b"), Some("3".into()));
        assert_eq!(p.get("a"), Some("2"));
        assert_eq!(p.len(), 1);
    }
}
