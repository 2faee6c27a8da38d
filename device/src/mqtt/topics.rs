//! Topic names (iothub-protocol.md 3.3, 3.4) and what an incoming PUBLISH is, by its topic.
//!
//! Today the client publishes telemetry and subscribes to its C2D topic. Request/response
//! features (twins `$iothub/twin/...`, direct methods `$iothub/methods/...`) add their
//! filters here and an [`Inbound`] variant for their answers, which the driver routes to the
//! file that handles them.

use iothub_protocol::Message;
use iothub_protocol::property_bag::{c2d_topic_prefix, decode_c2d_topic, encode_d2c_topic};

use crate::error::Error;

/// Longest MQTT topic name.
const MAX_TOPIC: usize = 65_535;

/// The C2D subscription filter.
pub(crate) fn c2d_filter(device_id: &str) -> String {
    format!("{}#", c2d_topic_prefix(device_id))
}

/// The telemetry topic for `message`, with its properties in the property bag.
pub(crate) fn d2c_topic(device_id: &str, message: &Message) -> Result<String, Error> {
    let topic = encode_d2c_topic(device_id, message);
    if topic.len() > MAX_TOPIC {
        return Err(Error::ArgumentInvalid {
            message: format!(
                "the message cannot be sent: its properties make an MQTT topic of {} bytes; the limit is {MAX_TOPIC}",
                topic.len()
            ),
        });
    }
    Ok(topic)
}

/// Device ids may hold `+` and `#`, which MQTT forbids in topic names.
pub(crate) fn check_device_id(device_id: &str) -> Result<(), Error> {
    if device_id.contains(['+', '#']) {
        return Err(Error::Unsupported {
            what: "a device id containing '+' or '#' over MQTT (MQTT topics cannot contain them); use Transport::Https",
        });
    }
    Ok(())
}

/// What an incoming PUBLISH carries.
pub(super) enum Inbound {
    /// A C2D message (without its body, which the PUBLISH payload holds).
    C2d(Box<Message>),
    /// A twin response or desired patch (`twin.rs`).
    Twin(super::twin::TwinInbound),
    /// Something this client cannot read, and why.
    Unreadable(String),
}

/// Classifies a PUBLISH to this device by its topic.
pub(super) fn inbound(device_id: &str, topic: &str) -> Inbound {
    if let Some(t) = super::twin::parse_inbound(topic) {
        return Inbound::Twin(t);
    }
    if topic.starts_with(&c2d_topic_prefix(device_id)) {
        match decode_c2d_topic(topic) {
            Ok((_, message)) => Inbound::C2d(Box::new(message)),
            Err(e) => Inbound::Unreadable(e.to_string()),
        }
    } else {
        Inbound::Unreadable("it is not this device's C2D topic".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c2d_filter_matches_the_sdks() {
        assert_eq!(c2d_filter("d1"), "devices/d1/messages/devicebound/#");
    }

    #[test]
    fn wildcard_device_ids_cannot_use_mqtt() {
        assert!(check_device_id("a+b").is_err());
        assert!(check_device_id("a#b").is_err());
        assert!(check_device_id("a$b:c").is_ok());
    }

    #[test]
    fn topics_are_classified() {
        assert!(matches!(
            inbound("d1", "devices/d1/messages/devicebound/%24.mid=m1"),
            Inbound::C2d(m) if m.system.message_id == Some("m1".into())
        ));
        assert!(matches!(
            inbound("d1", "devices/d2/messages/devicebound/"),
            Inbound::Unreadable(_)
        ));
    }

    #[test]
    fn oversized_topics_are_refused_before_sending() {
        let mut m = Message::new("x");
        m.properties.insert("k", "v".repeat(70_000));
        assert!(matches!(
            d2c_topic("d", &m),
            Err(Error::ArgumentInvalid { .. })
        ));
        assert!(d2c_topic("d", &Message::new("x")).is_ok());
    }
}
