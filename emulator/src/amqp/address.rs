//! The AMQP nodes the hub answers to, and the device a C2D message's `to` names.
//!
//! Reference: iothub-protocol.md 5.3–5.6. The SDKs spell the same node differently: Node sends
//! `/messages/devicebound`, C# `amqps://{host}:5671/messages/deviceBound`, uamqp
//! `amqps://{host}/messages/devicebound`, the C SDK `.../messages/servicebound/feedback`. So the
//! literal parts compare case-insensitively and any `scheme://host[:port]` prefix is dropped.
//! Device ids are case-sensitive and percent-decoded. A `+` stays a `+`: it is a legal device-id
//! character, and the space that C#'s `WebUtility.UrlEncode` writes as `+` is not.

use iothub_protocol::HubError;
use percent_encoding::percent_decode_str;

use crate::hub::Identity;

/// A node a link can attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `$cbs`: claims-based security (put-token).
    Cbs,
    /// `/messages/devicebound`: where the service sends C2D messages.
    ServiceDevicebound,
    /// `/messages/serviceBound/feedback`: where the service receives feedback batches.
    Feedback,
    /// `/devices/{id}/messages/devicebound`: where a device receives its C2D messages.
    DeviceDevicebound(String),
    /// `/devices/{id}/messages/events`: where a device sends telemetry.
    DeviceEvents(String),
    /// `/devices/{id}/twin`: a device's twin requests and responses (`twin.rs`).
    DeviceTwin(String),
    /// `/devices/{id}/methods/devicebound`: direct-method requests and answers.
    DeviceMethods(String),
    /// `/devices/{id}/modules/{mid}/...`: a module's telemetry, twin or methods
    /// (`modules.rs`).
    Module(Identity, ModuleNode),
}

/// What a module node under `/devices/{id}/modules/{mid}` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleNode {
    /// `messages/events`: the module's telemetry (and, for the Node SDK, its input messages).
    Events,
    /// `twin`: twin requests and responses, as for a device.
    Twin,
    /// `methods/devicebound`: direct-method requests and answers, as for a device.
    Methods,
}

/// The node an attach names, or `None` if the hub has no such node.
pub fn parse_node(address: &str) -> Option<Node> {
    let segments = segments(address);
    let is = |i: usize, lit: &str| segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    match segments.len() {
        1 if is(0, "$cbs") => Some(Node::Cbs),
        2 if is(0, "messages") && is(1, "devicebound") => Some(Node::ServiceDevicebound),
        3 if is(0, "messages") && is(1, "servicebound") && is(2, "feedback") => {
            Some(Node::Feedback)
        }
        3 if is(0, "devices") && is(2, "twin") => {
            decode_device_id(segments[1]).map(Node::DeviceTwin)
        }
        4 if is(0, "devices") && is(2, "messages") => {
            let id = decode_device_id(segments[1])?;
            if is(3, "devicebound") {
                Some(Node::DeviceDevicebound(id))
            } else if is(3, "events") {
                Some(Node::DeviceEvents(id))
            } else {
                None
            }
        }
        4 if is(0, "devices") && is(2, "methods") && is(3, "devicebound") => {
            Some(Node::DeviceMethods(decode_device_id(segments[1])?))
        }
        5 | 6 if is(0, "devices") && is(2, "modules") => {
            let kind = match segments.len() {
                5 if is(4, "twin") => ModuleNode::Twin,
                6 if is(4, "messages") && is(5, "events") => ModuleNode::Events,
                6 if is(4, "methods") && is(5, "devicebound") => ModuleNode::Methods,
                _ => return None,
            };
            let device_id = decode_device_id(segments[1])?;
            let module_id = decode_device_id(segments[3])?;
            Some(Node::Module(Identity::module(device_id, module_id), kind))
        }
        _ => None,
    }
}

/// The device a C2D message is for, from its `to` (`/devices/{id}/messages/devicebound`).
pub fn c2d_target(to: Option<&str>) -> Result<String, HubError> {
    let Some(to) = to else {
        return Err(HubError::argument(
            "the message has no 'to'; set it to /devices/{deviceId}/messages/devicebound",
        ));
    };
    match parse_node(to) {
        Some(Node::DeviceDevicebound(id)) => Ok(id),
        _ => Err(HubError::argument(format!(
            "the message's 'to' is '{to}'; it must be /devices/{{deviceId}}/messages/devicebound (modules are not supported)"
        ))),
    }
}

/// The path segments of an address, without scheme, host, query and empty segments.
fn segments(address: &str) -> Vec<&str> {
    let mut path = address.trim();
    if let Some(i) = path.find("://") {
        let rest = &path[i + 3..];
        path = rest.find('/').map_or("", |j| &rest[j..]);
    }
    if let Some(q) = path.find('?') {
        path = &path[..q];
    }
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn decode_device_id(segment: &str) -> Option<String> {
    let id = percent_decode_str(segment).decode_utf8().ok()?.into_owned();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_nodes_match_in_any_case_with_or_without_host() {
        for a in [
            "/devices/d1/methods/devicebound",
            "/devices/d1/methods/deviceBound",
            "amqps://localhost:5671/devices/d1/methods/deviceBound",
        ] {
            assert_eq!(parse_node(a), Some(Node::DeviceMethods("d1".into())), "{a}");
        }
        assert_eq!(parse_node("/devices/d1/methods/other"), None);
    }

    #[test]
    fn every_sdk_spelling_of_the_service_nodes_matches() {
        for a in [
            "/messages/devicebound",
            "amqps://myhub.azure-devices.net:5671/messages/deviceBound",
            "amqps://localhost/messages/devicebound",
            "AMQPS://localhost/MESSAGES/DEVICEBOUND/",
        ] {
            assert_eq!(parse_node(a), Some(Node::ServiceDevicebound), "{a}");
        }
        for a in [
            "/messages/serviceBound/feedback",
            "amqps://h:5671/messages/serviceBound/feedback",
            "amqps://h/messages/servicebound/feedback",
        ] {
            assert_eq!(parse_node(a), Some(Node::Feedback), "{a}");
        }
        assert_eq!(parse_node("$cbs"), Some(Node::Cbs));
        assert_eq!(parse_node("$CBS"), Some(Node::Cbs));
    }

    #[test]
    fn device_nodes_keep_the_id_case_and_decode_it() {
        assert_eq!(
            parse_node("/devices/Dev%201/messages/devicebound"),
            Some(Node::DeviceDevicebound("Dev 1".into()))
        );
        assert_eq!(
            parse_node("amqps://h/devices/a+b/messages/Events"),
            Some(Node::DeviceEvents("a+b".into()))
        );
        assert_eq!(
            parse_node("/devices/a%2Bb/messages/events"),
            Some(Node::DeviceEvents("a+b".into()))
        );
    }

    #[test]
    fn module_nodes_keep_both_ids_and_match_in_any_case() {
        let m = || Identity::module("d 1", "m+1");
        for (a, kind) in [
            (
                "/devices/d%201/modules/m+1/messages/events",
                ModuleNode::Events,
            ),
            (
                "amqps://h/devices/d%201/modules/m%2B1/Messages/Events",
                ModuleNode::Events,
            ),
            ("/devices/d%201/modules/m+1/twin", ModuleNode::Twin),
            (
                "/devices/d%201/modules/m+1/methods/devicebound",
                ModuleNode::Methods,
            ),
            (
                "amqps://h:5671/devices/d%201/modules/m+1/methods/deviceBound",
                ModuleNode::Methods,
            ),
        ] {
            assert_eq!(parse_node(a), Some(Node::Module(m(), kind)), "{a}");
        }
        for a in [
            "/devices/d/modules/m",
            "/devices/d/modules//twin",
            "/devices/d/modules/m/messages",
            "/devices/d/modules/m/inputs/in1",
            "/devices/d/modules/m/twin/extra",
            "/devices/d/modules/m/methods/other",
            "/devices/d/Modulez/m/twin",
        ] {
            assert_eq!(parse_node(a), None, "{a}");
        }
    }

    #[test]
    fn other_addresses_are_unknown() {
        for a in [
            "",
            "/",
            "amqps://host",
            "/messages",
            "/messages/devicebound/extra",
            "/devices//messages/devicebound",
            "/devices/d/modules/m/messages/devicebound",
            "/devices/d/messages/other",
            "/messages/serviceBound/filenotifications",
            "/devices/%FF/messages/events",
        ] {
            assert_eq!(parse_node(a), None, "{a}");
        }
    }

    #[test]
    fn c2d_to_names_the_device() {
        assert_eq!(
            c2d_target(Some("/devices/dev%231/messages/deviceBound")),
            Ok("dev#1".into())
        );
        for bad in [
            None,
            Some(""),
            Some("/devices/d/messages/events"),
            Some("/devices/d/modules/m/messages/devicebound"),
            Some("devices"),
        ] {
            assert!(
                matches!(c2d_target(bad), Err(HubError::ArgumentInvalid { .. })),
                "{bad:?}"
            );
        }
    }
}
