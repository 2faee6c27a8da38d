//! The module identity as the registry REST API writes it (iothub-beyond-c2d.md 4).
//!
//! Field names are the ones the service SDKs read (Node `module.ts`, Python's `Module` model):
//! a module has keys, an etag, a generation id and a connection state like a device, plus
//! `managedBy`, but no status and no capabilities.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::device_id::validate_device_id;
use crate::registry::{Authentication, ConnectionState, registry_time};

/// A module identity under a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    /// Case-sensitive module id, unique on its device (the REST path names it too).
    #[serde(default)]
    pub module_id: String,
    /// The device it belongs to.
    #[serde(default)]
    pub device_id: String,
    /// Distinguishes modules re-created with the same id; set by the hub.
    #[serde(default)]
    pub generation_id: Option<String>,
    /// Entity tag, changed by every update; set by the hub.
    #[serde(default)]
    pub etag: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// When the connection state last changed.
    #[serde(default, with = "registry_time")]
    pub connection_state_updated_time: Option<OffsetDateTime>,
    /// Last connect or send.
    #[serde(default, with = "registry_time")]
    pub last_activity_time: Option<OffsetDateTime>,
    /// Always 0: the hub has no C2D queue for modules.
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    /// Credentials.
    #[serde(default)]
    pub authentication: Authentication,
    /// Free text naming who manages the module (`iotEdge` for Edge modules).
    #[serde(default)]
    pub managed_by: Option<String>,
}

impl Module {
    /// A module with these ids and nothing else set: the hub fills in keys and ids on create.
    pub fn new(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Module {
            module_id: module_id.into(),
            device_id: device_id.into(),
            generation_id: None,
            etag: None,
            connection_state: ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication: Authentication {
                kind: "sas".to_owned(),
                ..Authentication::default()
            },
            managed_by: None,
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

/// Checks a module id: the hub applies the device id rules (length and characters).
pub fn validate_module_id(id: &str) -> Result<(), String> {
    validate_device_id(id).map_err(|reason| reason.replace("device id", "module id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_node_sdk_sends_on_add() {
        let body = r#"{"deviceId":"d1","moduleId":"m1","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;
        let m: Module = serde_json::from_str(body).unwrap();
        assert_eq!((m.device_id.as_str(), m.module_id.as_str()), ("d1", "m1"));
        assert_eq!(m.primary_key(), None);
        assert_eq!(m.managed_by, None);
    }

    #[test]
    fn writes_the_field_names_the_sdks_read() {
        let mut m = Module::new("d1", "m1");
        m.managed_by = Some("me".into());
        let v = serde_json::to_value(&m).unwrap();
        for key in [
            "moduleId",
            "deviceId",
            "generationId",
            "etag",
            "connectionState",
            "connectionStateUpdatedTime",
            "lastActivityTime",
            "cloudToDeviceMessageCount",
            "authentication",
            "managedBy",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["managedBy"], "me");
    }

    #[test]
    fn module_ids_follow_device_id_rules() {
        assert!(validate_module_id("m-1.a").is_ok());
        let e = validate_module_id("bad/id").unwrap_err();
        assert!(e.contains("module id"), "{e}");
        assert!(validate_module_id("").is_err());
    }
}
