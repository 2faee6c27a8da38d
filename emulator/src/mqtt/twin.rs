//! Device twins over MQTT (iothub-beyond-c2d.md 1.4): the request topics a device publishes
//! on, the response and notification PUBLISHes the hub sends back.
//!
//! - `$iothub/twin/GET/?$rid={rid}` → `$iothub/twin/res/200/?$rid={rid}` with the device view;
//! - `$iothub/twin/PATCH/properties/reported/?$rid={rid}` →
//!   `$iothub/twin/res/204/?$rid={rid}&$version={reported $version}`, empty body;
//! - a failure → `$iothub/twin/res/{status}/?$rid={rid}` with a JSON body carrying `errorCode`
//!   (Node ignores the status in the topic and looks only at the body);
//! - desired changes → `$iothub/twin/PATCH/properties/desired/?$version={n}`, body with
//!   `$version` (C# needs the slash before `?`, Python reads `$version` from the body).
//!
//! `$rid` is opaque: it is echoed byte for byte and always comes first in the query, since the
//! C SDK reads it as the first parameter. Responses go out at QoS 0, which every SDK accepts
//! whatever QoS it subscribed with.

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

use crate::driver::{DesiredPatch, DeviceTwinOp as TwinOp, HubHandle};
use crate::hub::Identity;

/// The filter a device subscribes to for desired-property notifications.
pub const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

const PREFIX: &str = "$iothub/twin/";

/// A twin request PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinRequest {
    /// The operation.
    pub op: TwinOp,
    /// `$rid` exactly as the device wrote it; empty when it sent none.
    pub rid: String,
}

/// Reads a twin request topic; `None` for anything that is not a GET or reported PATCH.
pub fn parse_request(topic: &str) -> Option<TwinRequest> {
    let rest = topic.strip_prefix(PREFIX)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let op = match path.trim_end_matches('/') {
        "GET" => TwinOp::Get,
        "PATCH/properties/reported" => TwinOp::PatchReported,
        _ => return None,
    };
    let rid = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("$rid="))
        .unwrap_or_default()
        .to_owned();
    Some(TwinRequest { op, rid })
}

/// Serves one twin request for `identity` and returns the response PUBLISH.
pub fn answer(hub: &HubHandle, identity: &Identity, req: &TwinRequest, payload: &[u8]) -> Publish {
    let r = hub.device_twin_request(identity, req.op, payload);
    response(r.status, &req.rid, r.version, r.body)
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
pub fn response(status: u16, rid: &str, version: Option<i64>, body: Vec<u8>) -> Publish {
    let mut topic = format!("{PREFIX}res/{status}/?$rid={rid}");
    if let Some(v) = version {
        topic.push_str(&format!("&$version={v}"));
    }
    Publish::new(topic, QoS::AtMostOnce, body)
}

/// The notification PUBLISH of a desired change.
pub fn desired_notification(n: &DesiredPatch) -> Publish {
    let topic = format!("{PREFIX}PATCH/properties/desired/?$version={}", n.version);
    // Serializing a `Value` cannot fail.
    let body = serde_json::to_vec(&n.patch).unwrap_or_default();
    Publish::new(topic, QoS::AtMostOnce, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_topics_of_every_sdk() {
        let get = |rid: &str| TwinRequest {
            op: TwinOp::Get,
            rid: rid.to_owned(),
        };
        assert_eq!(parse_request("$iothub/twin/GET/?$rid=1"), Some(get("1")));
        assert_eq!(
            parse_request("$iothub/twin/GET?$rid=ab-c"),
            Some(get("ab-c"))
        );
        assert_eq!(parse_request("$iothub/twin/GET/"), Some(get("")));
        assert_eq!(
            parse_request("$iothub/twin/PATCH/properties/reported/?$rid=9&x=y"),
            Some(TwinRequest {
                op: TwinOp::PatchReported,
                rid: "9".into()
            })
        );
        assert_eq!(
            parse_request("$iothub/twin/PATCH/properties/reported/?x=y&$rid=%20"),
            Some(TwinRequest {
                op: TwinOp::PatchReported,
                rid: "%20".into()
            })
        );
        for t in [
            "$iothub/twin/PATCH/properties/desired/?$rid=1",
            "$iothub/twin/res/200/?$rid=1",
            "$iothub/twin/",
            "$iothub/methods/res/200/?$rid=1",
            "devices/d1/messages/events/",
        ] {
            assert_eq!(parse_request(t), None, "{t}");
        }
    }

    #[test]
    fn response_topics_put_rid_first_and_keep_the_slash() {
        let p = response(204, "a-1", Some(7), Vec::new());
        assert_eq!(p.topic, "$iothub/twin/res/204/?$rid=a-1&$version=7");
        let p = response(200, "5", None, b"{}".to_vec());
        assert_eq!(p.topic, "$iothub/twin/res/200/?$rid=5");
        let n = desired_notification(&DesiredPatch {
            version: 3,
            patch: json!({"a": null, "$version": 3}),
        });
        assert_eq!(n.topic, "$iothub/twin/PATCH/properties/desired/?$version=3");
        let body: serde_json::Value = serde_json::from_slice(&n.payload).unwrap();
        assert_eq!(body, json!({"a": null, "$version": 3}));
    }
}
