//! Device and module twins on the wire (iothub-beyond-c2d.md 1).
//!
//! - [`Twin`]: the service view (`GET /twins/{id}`, query rows, lifecycle events): identity
//!   fields, `tags`, `properties.desired` and `properties.reported` with `$metadata` and
//!   `$version`, the twin `version` and `etag`.
//! - [`TwinProperties`]: the device view (MQTT/AMQP GET): `{"desired":{..,"$version":n},
//!   "reported":{..,"$version":m}}`, no tags.
//! - [`TwinWrite`]: what a service PATCH or PUT body asks for, parsed so that a section set to
//!   `null` ("clear it") differs from a section that is absent ("leave it").
//!
//! Field names are the swagger's (`Twin` in the gateway API); every field is optional on input
//! so the service client can read what any hub (or the emulator) writes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::HubError;
use crate::registry::{Capabilities, ConnectionState, DeviceStatus, X509Thumbprint};

/// A JSON object: a twin section (`tags`, `desired`, `reported`) or a patch to one.
pub type JsonObject = Map<String, Value>;

/// `$version`: the per-section version counter inside `desired` and `reported`.
pub const VERSION_KEY: &str = "$version";
/// `$metadata`: the per-section timestamps inside `desired` and `reported`.
pub const METADATA_KEY: &str = "$metadata";
/// `$lastUpdated`: when a key (or object) was last written, inside `$metadata`.
pub const LAST_UPDATED_KEY: &str = "$lastUpdated";
/// `$lastUpdatedVersion`: the desired `$version` of that write, inside desired `$metadata`.
pub const LAST_UPDATED_VERSION_KEY: &str = "$lastUpdatedVersion";

/// The desired and reported sections, as both views carry them.
///
/// In the service view each section holds `$metadata` and `$version`; in the device view only
/// `$version` (the emulator's choice for open question 1 of the reference: no device SDK reads
/// `$metadata`, and Python reads `desired["$version"]` after every connect).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinProperties {
    /// Desired properties, written by the service.
    #[serde(default)]
    pub desired: JsonObject,
    /// Reported properties, written by the device.
    #[serde(default)]
    pub reported: JsonObject,
}

impl TwinProperties {
    /// `desired.$version`, if present and an integer.
    pub fn desired_version(&self) -> Option<i64> {
        self.desired.get(VERSION_KEY).and_then(Value::as_i64)
    }

    /// `reported.$version`, if present and an integer.
    pub fn reported_version(&self) -> Option<i64> {
        self.reported.get(VERSION_KEY).and_then(Value::as_i64)
    }
}

/// A twin as the service sees it (swagger `Twin`).
///
/// ```
/// use iothub_protocol::twin::Twin;
/// let body = r#"{"deviceId":"d1","etag":"AAAAAAAAAAE=","version":2,"tags":{},
///   "properties":{"desired":{"$version":1},"reported":{"$version":1}}}"#;
/// let twin: Twin = serde_json::from_str(body).unwrap();
/// assert_eq!(twin.properties.desired_version(), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// The device id.
    pub device_id: String,
    /// The module id, for a module twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The twin's etag, for `If-Match` on twin writes.
    #[serde(default)]
    pub etag: Option<String>,
    /// The device identity's etag (registry `etag`).
    #[serde(default)]
    pub device_etag: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(default)]
    pub status: Option<DeviceStatus>,
    /// Free text explaining the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (ISO 8601).
    #[serde(default)]
    pub status_update_time: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(default)]
    pub connection_state: Option<ConnectionState>,
    /// Last connect, send or receive (ISO 8601).
    #[serde(default)]
    pub last_activity_time: Option<String>,
    /// Pending C2D messages.
    #[serde(default)]
    pub cloud_to_device_message_count: Option<u64>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(default)]
    pub authentication_type: Option<String>,
    /// X.509 thumbprints.
    #[serde(default)]
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// Plug and Play model id (newer hubs; the emulator does not set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Twin version: moves with every write to tags, desired or reported.
    #[serde(default)]
    pub version: Option<i64>,
    /// Tags: written by the service, never visible to the device.
    #[serde(default)]
    pub tags: JsonObject,
    /// Desired and reported properties.
    #[serde(default)]
    pub properties: TwinProperties,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// Edge device scope (the emulator does not set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Parent scopes of an edge device (the emulator does not set them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// What a service write asks for one section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SectionWrite {
    /// The section is not in the body: leave it alone (PATCH) or empty it (PUT).
    #[default]
    Absent,
    /// The section is `null`: remove every key.
    Null,
    /// A patch (PATCH: merge, `null` members remove keys) or the new content (PUT).
    Set(JsonObject),
}

/// The parts of a twin a service may write: the body of `PATCH` or `PUT /twins/{id}`.
///
/// ```
/// use iothub_protocol::twin::{SectionWrite, TwinWrite};
/// let body = serde_json::json!({"tags": null, "properties": {"desired": {"fw": "1.2"}}});
/// let w = TwinWrite::from_json(&body).unwrap();
/// assert_eq!(w.tags, SectionWrite::Null);
/// assert!(matches!(w.desired, SectionWrite::Set(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwinWrite {
    /// `tags`.
    pub tags: SectionWrite,
    /// `properties.desired`.
    pub desired: SectionWrite,
}

impl TwinWrite {
    /// A write of desired properties only.
    pub fn desired(patch: JsonObject) -> Self {
        TwinWrite {
            tags: SectionWrite::Absent,
            desired: SectionWrite::Set(patch),
        }
    }

    /// A write of tags only.
    pub fn tags(patch: JsonObject) -> Self {
        TwinWrite {
            tags: SectionWrite::Set(patch),
            desired: SectionWrite::Absent,
        }
    }

    /// Reads a service write body.
    ///
    /// Identity fields (`deviceId`, `etag`, `status`, ...) are ignored, as the hub ignores
    /// them; SDKs send whole `Twin` objects. Read-only `$version`/`$metadata` at the top of a
    /// section are dropped (a twin read with GET and sent back carries them). Reported
    /// properties belong to the device: an empty or `null` `reported` is accepted and
    /// ignored, anything else is refused.
    pub fn from_json(body: &Value) -> Result<Self, HubError> {
        let Value::Object(body) = body else {
            return Err(HubError::argument(
                "the twin body must be a JSON object such as {\"tags\":{...},\"properties\":{\"desired\":{...}}}",
            ));
        };
        let tags = section(body.get("tags"), "tags")?;
        let (desired, reported) = match body.get("properties") {
            None | Some(Value::Null) => (SectionWrite::Absent, SectionWrite::Absent),
            Some(Value::Object(p)) => (
                section(p.get("desired"), "properties.desired")?,
                section(p.get("reported"), "properties.reported")?,
            ),
            Some(_) => {
                return Err(HubError::argument(
                    "'properties' must be a JSON object with 'desired' (reported properties are written by the device)",
                ));
            }
        };
        if let SectionWrite::Set(r) = &reported
            && !r.is_empty()
        {
            return Err(HubError::argument(
                "reported properties are read-only for the service: only the device can write properties.reported",
            ));
        }
        Ok(TwinWrite { tags, desired })
    }
}

/// Reads a device's reported-properties patch (MQTT/AMQP body): a JSON object whose `null`
/// members remove keys. Read-only `$version`/`$metadata` at the top are dropped.
pub fn reported_patch_from_json(body: &Value) -> Result<JsonObject, HubError> {
    match body {
        Value::Object(m) => Ok(strip_read_only(m.clone())),
        _ => Err(HubError::argument(
            "the reported properties patch must be a JSON object",
        )),
    }
}

fn section(v: Option<&Value>, name: &str) -> Result<SectionWrite, HubError> {
    match v {
        None => Ok(SectionWrite::Absent),
        Some(Value::Null) => Ok(SectionWrite::Null),
        Some(Value::Object(m)) => Ok(SectionWrite::Set(strip_read_only(m.clone()))),
        Some(_) => Err(HubError::argument(format!(
            "Provided json is not a valid 'tags' or 'properties' object: '{name}' must be a JSON object or null"
        ))),
    }
}

fn strip_read_only(mut m: JsonObject) -> JsonObject {
    m.remove(VERSION_KEY);
    m.remove(METADATA_KEY);
    m
}

/// The JSON body of a failed device-side twin request (MQTT `$iothub/twin/res/{status}`, AMQP
/// twin response): `{"message","errorCode","trackingId","timestampUtc"}`. Node detects a
/// failure only by the `errorCode` member and throws on a body that is not JSON, so errors
/// always carry one.
pub fn device_error_body(e: &HubError, tracking_id: &str, now: time::OffsetDateTime) -> Vec<u8> {
    let body = serde_json::json!({
        "message": e.to_string(),
        "errorCode": e.code().code(),
        "trackingId": tracking_id,
        "timestampUtc": crate::time_format::format_round_trip(now),
    });
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_null_and_set_sections_differ() {
        let w = TwinWrite::from_json(&json!({"properties": {"desired": null}})).unwrap();
        assert_eq!(w.tags, SectionWrite::Absent);
        assert_eq!(w.desired, SectionWrite::Null);
        let w = TwinWrite::from_json(&json!({"tags": {"a": 1}})).unwrap();
        assert_eq!(w.tags, SectionWrite::Set(json_object(json!({"a": 1}))));
        assert_eq!(w.desired, SectionWrite::Absent);
    }

    #[test]
    fn a_twin_read_back_from_get_is_accepted() {
        let body = json!({
            "deviceId": "d1", "etag": "AAAAAAAAAAE=", "version": 4,
            "properties": {
                "desired": {"x": 1, "$metadata": {"$lastUpdated": "2020-01-01T00:00:00Z"}, "$version": 3},
                "reported": {"$metadata": {"$lastUpdated": "2020-01-01T00:00:00Z"}, "$version": 1}
            }
        });
        let w = TwinWrite::from_json(&body).unwrap();
        assert_eq!(w.desired, SectionWrite::Set(json_object(json!({"x": 1}))));
    }

    #[test]
    fn bad_bodies_are_refused_with_argument_invalid() {
        for body in [
            json!([1]),
            json!({"tags": [1]}),
            json!({"properties": 3}),
            json!({"properties": {"desired": "x"}}),
            json!({"properties": {"reported": {"x": 1}}}),
        ] {
            let e = TwinWrite::from_json(&body).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::ArgumentInvalid, "{body}");
        }
        assert!(reported_patch_from_json(&json!("x")).is_err());
        assert_eq!(
            reported_patch_from_json(&json!({"a": null, "$version": 3})).unwrap(),
            json_object(json!({"a": null}))
        );
    }

    #[test]
    fn service_view_reads_the_docs_sample() {
        let body = json!({ "deviceId": "d1", "etag": "AAAAAAAAAAE=", "deviceEtag": "NTgwMDg5MDAz", "status": "enabled",
          "statusUpdateTime": "0001-01-01T00:00:00Z", "connectionState": "Disconnected",
          "lastActivityTime": "0001-01-01T00:00:00Z", "cloudToDeviceMessageCount": 0, "authenticationType": "sas",
          "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null }, "version": 2,
          "properties": {
            "desired":  { "$metadata": { "$lastUpdated": "2019-12-29T00:58:49.9315265Z" }, "$version": 1 },
            "reported": { "$metadata": { "$lastUpdated": "2019-12-29T00:58:49.9315265Z" }, "$version": 1 } },
          "capabilities": { "iotEdge": false }, "tags": {} });
        let t: Twin = serde_json::from_value(body).unwrap();
        assert_eq!(t.version, Some(2));
        assert_eq!(t.connection_state, Some(ConnectionState::Disconnected));
        assert_eq!(t.properties.reported_version(), Some(1));
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["x509Thumbprint"]["primaryThumbprint"], Value::Null);
        assert!(back.get("moduleId").is_none());
    }

    fn json_object(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }
}
