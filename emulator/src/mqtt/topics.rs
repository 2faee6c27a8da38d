//! Which topics a device may subscribe to and publish on (iothub-protocol.md 3.3, 3.5, 3.8).
//!
//! IoT Hub is not a broker: every route is between one device and the hub, so the grammar is
//! fixed. A device may subscribe to its own C2D filter and to the twin and method filters the
//! SDKs ask for. It may publish telemetry on its own events topic, twin requests (`twin.rs`) and
//! method responses (`methods.rs`); other twin publishes are accepted and dropped. Anything else
//! is a violation: the hub closes the connection.

use iothub_protocol::Message;
use iothub_protocol::property_bag::{self, BagError};

/// The twin and method filters the SDKs subscribe to (C, C#, Node, Python).
const SDK_FILTERS: [&str; 3] = [
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
];

/// Device publishes that are accepted and dropped: twin requests and method responses.
const IGNORED_PREFIXES: [&str; 2] = ["$iothub/twin/", "$iothub/methods/res/"];

/// What a SUBSCRIBE filter is, for the device that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The device's own `devices/{id}/messages/devicebound/#`: C2D delivery.
    C2d,
    /// A twin or method filter: granted, but nothing is ever published on it.
    Sdk,
    /// Anything else, including another device's topics: SUBACK failure (0x80).
    Denied,
}

/// `devices/{id}/messages/devicebound/#`.
pub fn c2d_filter(device_id: &str) -> String {
    format!("{}#", property_bag::c2d_topic_prefix(device_id))
}

/// Classifies a SUBSCRIBE filter of `device_id`.
pub fn classify_filter(device_id: &str, filter: &str) -> Filter {
    if filter == c2d_filter(device_id) {
        Filter::C2d
    } else if SDK_FILTERS.contains(&filter) {
        Filter::Sdk
    } else {
        Filter::Denied
    }
}

/// Where a device's PUBLISH goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The device's own events topic: record it as telemetry.
    Telemetry,
    /// A twin GET or reported-properties PATCH (`twin.rs`).
    Twin(super::twin::TwinRequest),
    /// A direct-method answer (`$iothub/methods/res/...`), see `methods.rs`.
    MethodResponse,
    /// A twin request or method response: acknowledged and dropped.
    Ignored,
    /// Not a topic this device may publish on: the connection is closed.
    Refused(String),
}

/// Classifies a PUBLISH topic of `device_id`.
pub fn route_publish(device_id: &str, topic: &str) -> Route {
    if let Some(id) = property_bag::parse_d2c_device_id(topic) {
        if id == device_id {
            return Route::Telemetry;
        }
        return Route::Refused(format!(
            "device '{device_id}' published on device '{id}''s events topic"
        ));
    }
    if let Some(req) = super::twin::parse_request(topic) {
        return Route::Twin(req);
    }
    if super::methods::is_response_topic(topic) {
        return Route::MethodResponse;
    }
    if IGNORED_PREFIXES.iter().any(|p| topic.starts_with(p)) {
        return Route::Ignored;
    }
    Route::Refused(format!(
        "'{}' is not a topic a device can publish on; telemetry goes to devices/{device_id}/messages/events/{{properties}}",
        shorten(topic)
    ))
}

/// The telemetry message of a PUBLISH on the device's events topic: the properties decoded
/// from the topic's bag, the payload as the body.
pub fn telemetry(topic: &str, payload: &[u8]) -> Result<Message, BagError> {
    let (_, mut message) = property_bag::decode_d2c_topic(topic)?;
    message.body = payload.to_vec();
    Ok(message)
}

/// Peer text cut short for a log line.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_c2d_and_sdk_filters_only() {
        assert_eq!(
            classify_filter("d1", "devices/d1/messages/devicebound/#"),
            Filter::C2d
        );
        assert_eq!(
            classify_filter("a?b=%#", "devices/a?b=%#/messages/devicebound/#"),
            Filter::C2d
        );
        for f in SDK_FILTERS {
            assert_eq!(classify_filter("d1", f), Filter::Sdk);
        }
        for f in [
            "devices/d2/messages/devicebound/#",
            "devices/d1/messages/devicebound/+",
            "devices/d1/messages/devicebound",
            "devices/d1/#",
            "#",
            "$iothub/#",
            "devices/d1/modules/m1/#",
            "",
        ] {
            assert_eq!(classify_filter("d1", f), Filter::Denied, "{f}");
        }
    }

    #[test]
    fn publish_routes() {
        for t in [
            "devices/d1/messages/events/",
            "devices/d1/messages/events",
            "devices/d1/messages/events/%24.mid=1&k=v",
            "devices/d1/messages/events/k=v/",
        ] {
            assert_eq!(route_publish("d1", t), Route::Telemetry, "{t}");
        }
        assert!(matches!(
            route_publish("d1", "$iothub/twin/GET/?$rid=1"),
            Route::Twin(_)
        ));
        assert!(matches!(
            route_publish("d1", "$iothub/twin/PATCH/properties/reported/?$rid=2"),
            Route::Twin(_)
        ));
        assert_eq!(
            route_publish("d1", "$iothub/methods/res/200/?$rid=3"),
            Route::MethodResponse
        );
        for t in [
            "devices/d2/messages/events/",
            "devices/d1/messages/devicebound/x",
            "devices/d1/modules/m/messages/events/",
            "$iothub/methods/POST/x",
            "other",
            "",
        ] {
            assert!(matches!(route_publish("d1", t), Route::Refused(_)), "{t}");
        }
    }

    #[test]
    fn telemetry_decodes_the_bag() {
        let m = telemetry(
            "devices/d1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&k=v%20w",
            b"{}",
        )
        .unwrap();
        assert_eq!(m.body, b"{}");
        assert_eq!(m.system.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.properties.get("k"), Some("v w"));
        assert!(telemetry("devices/d1/messages/events/k=%zz", b"").is_err());
    }
}
