//! The device identity as the registry REST API writes it (iothub-protocol.md 6.2).
//!
//! Field names and casing are the swagger's; the service SDKs deserialize these exact names.
//! Fields the SDKs may omit on create (etag, generationId, keys, timestamps) are optional on
//! input and always present on output.
//!
//! Timestamps are [`OffsetDateTime`]s; only serialization writes them in the hub's form
//! ([`registry_time`]), so the rules never handle wire strings.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::datetime;

/// `0001-01-01T00:00:00Z`: how the hub writes "never" in timestamps.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// The instant the hub means by [`NEVER`] (.NET's `DateTime.MinValue`).
pub const NEVER_TIME: OffsetDateTime = datetime!(0001-01-01 0:00 UTC);

/// Serde helper for the registry's optional timestamps: `null`, [`NEVER`] for [`NEVER_TIME`],
/// and otherwise RFC 3339 with milliseconds (`2015-07-28T16:24:48.789Z`), as the hub writes
/// them. Reading is lenient: the hub ignores these fields on input, so a value that is not an
/// RFC 3339 timestamp (other SDKs echo what they read) reads as `None` rather than failing.
pub mod registry_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Writes `null`, [`super::NEVER`], or the time with milliseconds.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) if *t == super::NEVER_TIME => s.serialize_str(super::NEVER),
            Some(t) => s.serialize_str(&crate::time_format::format_millis(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or a string; a string that is not RFC 3339 reads as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.and_then(|s| crate::time_format::parse(&s)))
    }
}

/// Whether a device may use the device-facing endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect.
    #[default]
    Enabled,
    /// The device is refused on every device-facing endpoint.
    Disabled,
}

/// Whether the device has an MQTT or AMQP connection open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConnectionState {
    /// Connected over MQTT or AMQP.
    Connected,
    /// Not connected (HTTPS does not count).
    #[default]
    Disconnected,
}

/// The device's symmetric keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    /// Base64 primary key; empty or absent on create asks the hub to generate one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    /// Base64 secondary key; empty or absent on create asks the hub to generate one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

/// X.509 thumbprints (kept and echoed; the emulator does not authenticate with them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    /// Primary thumbprint.
    #[serde(default)]
    pub primary_thumbprint: Option<String>,
    /// Secondary thumbprint.
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
}

/// How the device authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// Symmetric keys, for `type: sas`.
    #[serde(default)]
    pub symmetric_key: SymmetricKey,
    /// Thumbprints, for `type: selfSigned`.
    #[serde(default)]
    pub x509_thumbprint: X509Thumbprint,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: String,
}

fn default_auth_type() -> String {
    "sas".to_owned()
}

/// Device capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Whether the device is an IoT Edge device.
    #[serde(default)]
    pub iot_edge: bool,
}

/// A device identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Case-sensitive device id.
    pub device_id: String,
    /// Distinguishes devices re-created with the same id; set by the hub.
    #[serde(default)]
    pub generation_id: Option<String>,
    /// Weak entity tag, changed by every update; set by the hub.
    #[serde(default)]
    pub etag: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// `enabled` or `disabled`.
    #[serde(default)]
    pub status: DeviceStatus,
    /// Free text explaining the status.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// When the connection state last changed ([`NEVER_TIME`] if it never did).
    #[serde(default, with = "registry_time")]
    pub connection_state_updated_time: Option<OffsetDateTime>,
    /// When the status last changed.
    #[serde(default, with = "registry_time")]
    pub status_updated_time: Option<OffsetDateTime>,
    /// Last connect, send or receive ([`NEVER_TIME`] before the first).
    #[serde(default, with = "registry_time")]
    pub last_activity_time: Option<OffsetDateTime>,
    /// Pending C2D messages (computed on read).
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    /// Credentials.
    #[serde(default)]
    pub authentication: Authentication,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl Device {
    /// A device with this id and nothing else set: the hub fills in keys and ids on create.
    pub fn new(device_id: impl Into<String>) -> Self {
        Device {
            device_id: device_id.into(),
            generation_id: None,
            etag: None,
            connection_state: ConnectionState::Disconnected,
            status: DeviceStatus::Enabled,
            status_reason: None,
            connection_state_updated_time: None,
            status_updated_time: None,
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication: Authentication {
                kind: default_auth_type(),
                ..Authentication::default()
            },
            capabilities: Capabilities::default(),
        }
    }

    /// The primary key, if one is set and non-empty.
    pub fn primary_key(&self) -> Option<&str> {
        self.authentication
            .symmetric_key
            .primary_key
            .as_deref()
            .filter(|k| !k.is_empty())
    }

    /// The secondary key, if one is set and non-empty.
    pub fn secondary_key(&self) -> Option<&str> {
        self.authentication
            .symmetric_key
            .secondary_key
            .as_deref()
            .filter(|k| !k.is_empty())
    }
}

/// Body of the purge response (`DELETE /devices/{id}/commands`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeMessageQueueResult {
    /// How many messages were removed.
    pub total_messages_purged: u64,
    /// The device whose queue was purged.
    pub device_id: String,
    /// Module id, absent for devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_python_sdk_sends_on_create() {
        let body = r#"{"deviceId":"d1","status":"enabled","authentication":{"symmetricKey":{},"type":"sas"},"capabilities":{"iotEdge":false}}"#;
        let d: Device = serde_json::from_str(body).unwrap();
        assert_eq!(d.device_id, "d1");
        assert_eq!(d.primary_key(), None);
        let node = r#"{"deviceId":"d2","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;
        let d: Device = serde_json::from_str(node).unwrap();
        assert_eq!(d.primary_key(), None);
        assert_eq!(d.status, DeviceStatus::Enabled);
    }

    #[test]
    fn writes_swagger_field_names() {
        let mut d = Device::new("d1");
        d.authentication.symmetric_key.primary_key = Some("a2V5".into());
        let v = serde_json::to_value(&d).unwrap();
        for k in [
            "deviceId",
            "generationId",
            "etag",
            "connectionState",
            "status",
            "cloudToDeviceMessageCount",
            "authentication",
            "capabilities",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert_eq!(v["authentication"]["symmetricKey"]["primaryKey"], "a2V5");
        assert_eq!(v["authentication"]["type"], "sas");
        assert_eq!(v["status"], "enabled");
        assert_eq!(v["connectionState"], "Disconnected");
        assert_eq!(v["lastActivityTime"], serde_json::Value::Null);
    }

    #[test]
    fn timestamps_are_written_as_the_hub_writes_them_and_read_leniently() {
        let mut d = Device::new("d1");
        d.last_activity_time = Some(NEVER_TIME);
        d.status_updated_time = Some(datetime!(2024-03-01 12:00:00.5 UTC));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["lastActivityTime"], NEVER);
        assert_eq!(v["statusUpdatedTime"], "2024-03-01T12:00:00.500Z");
        assert_eq!(v["connectionStateUpdatedTime"], serde_json::Value::Null);
        let back: Device = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);

        // What real hubs write (seven digits), and what the hub ignores on input.
        let body = r#"{"deviceId":"d1","statusUpdatedTime":"2023-07-19T23:06:40.1234567Z","lastActivityTime":"0001-01-01T00:00:00","connectionStateUpdatedTime":null}"#;
        let d: Device = serde_json::from_str(body).unwrap();
        assert_eq!(
            d.status_updated_time,
            Some(datetime!(2023-07-19 23:06:40.1234567 UTC))
        );
        assert_eq!(d.last_activity_time, None);
        assert_eq!(d.connection_state_updated_time, None);
    }
}
