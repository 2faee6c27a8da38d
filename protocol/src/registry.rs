//! The device identity as the registry REST API writes it (iothub-protocol.md 6.2).
//!
//! Field names and casing are the swagger's; the service SDKs deserialize these exact names.
//! Fields the SDKs may omit on create (etag, generationId, keys, timestamps) are optional on
//! input and always present on output.

use serde::{Deserialize, Serialize};

/// `0001-01-01T00:00:00Z`: how the hub writes "never" in timestamps.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

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
    /// When the connection state last changed.
    #[serde(default)]
    pub connection_state_updated_time: Option<String>,
    /// When the status last changed.
    #[serde(default)]
    pub status_updated_time: Option<String>,
    /// Last connect, send or receive.
    #[serde(default)]
    pub last_activity_time: Option<String>,
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
    }
}
