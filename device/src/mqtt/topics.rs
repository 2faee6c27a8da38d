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

/// The telemetry topic for `message`, with its properties in the property bag: the device's
/// `devices/{id}/messages/events/{bag}`, or for a module
/// `devices/{id}/modules/{mid}/messages/events/{bag}` (iothub-beyond-c2d.md 4).
pub(crate) fn d2c_topic(
    device_id: &str,
    module_id: Option<&str>,
    message: &Message,
) -> Result<String, Error> {
    let mut topic = encode_d2c_topic(device_id, message);
    if let Some(module_id) = module_id {
        // The bag is the device's; only the path before it differs.
        let device_prefix = format!("devices/{device_id}/");
        let rest = topic.get(device_prefix.len()..).unwrap_or_default();
        topic = format!("{device_prefix}modules/{module_id}/{rest}");
    }
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

/// Device and module ids may hold `+` and `#`, which MQTT forbids in topic names.
pub(crate) fn check_device_id(device_id: &str, module_id: Option<&str>) -> Result<(), Error> {
    if device_id.contains(['+', '#']) {
        return Err(Error::Unsupported {
            what: "a device id containing '+' or '#' over MQTT (MQTT topics cannot contain them); use Transport::Https",
        });
    }
    if module_id.is_some_and(|m| m.contains(['+', '#'])) {
        return Err(Error::Unsupported {
            what: "a module id containing '+' or '#' (MQTT topics cannot contain them, and modules connect over MQTT only); choose another module id",
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
        assert!(check_device_id("a+b", None).is_err());
        assert!(check_device_id("a#b", None).is_err());
        assert!(check_device_id("a$b:c", None).is_ok());
        assert!(check_device_id("d", Some("m#")).is_err());
        assert!(check_device_id("d", Some("m-1")).is_ok());
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
            d2c_topic("d", None, &m),
            Err(Error::ArgumentInvalid { .. })
        ));
        assert!(d2c_topic("d", None, &Message::new("x")).is_ok());
    }

    #[test]
    fn module_telemetry_goes_to_the_module_topic_with_the_same_bag() {
        let mut m = Message::new("x");
        m.system.message_id = Some("m1".into());
        m.properties.insert("k", "v/w");
        let device = d2c_topic("d1", None, &m).unwrap();
        let module = d2c_topic("d1", Some("mod"), &m).unwrap();
        assert_eq!(
            module,
            device.replacen("devices/d1/", "devices/d1/modules/mod/", 1)
        );
        assert!(
            module.starts_with("devices/d1/modules/mod/messages/events/"),
            "{module}"
        );
        assert_eq!(
            d2c_topic("d1", Some("mod"), &Message::new("")).unwrap(),
            "devices/d1/modules/mod/messages/events/"
        );
    }
}
