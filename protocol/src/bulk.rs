//! Bulk registry operations on the wire: `POST /devices` with a list of operations.
//!
//! Request items are swagger `ExportImportDevice`; the response is `BulkRegistryOperationResult`
//! with one `DeviceRegistryOperationError` per failed item. What the SDKs send:
//! - Node `addDevices` / `updateDevices(force)` / `removeDevices(force)`: the device
//!   descriptions with `deviceId` renamed to `id`, an `authentication` block added when absent,
//!   and `importMode` `create`, `Update` / `UpdateIfMatchETag`, `Delete` / `DeleteIfMatchETag`
//!   (note the capitals); the etag travels as the device's own `etag` field.
//! - Python `bulk_create_or_update_devices`: msrest `ExportImportDevice` (`id`, `eTag`,
//!   `importMode`, ...), only non-null fields.
//!
//! The hub reads JSON the .NET way (property names and enum values case-insensitively), so
//! `importMode` is matched without regard to case and `etag`/`eTag` are both read.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::registry::{Authentication, Capabilities, DeviceStatus};
use crate::twin::JsonObject;

/// Most operations in one request.
pub const MAX_BULK_OPERATIONS: usize = 100;

/// What to do with one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportMode {
    /// Register a new identity; fails if it exists.
    Create,
    /// Update the identity regardless of etag; registers it if it does not exist.
    Update,
    /// Update only if `eTag` matches; registers it if it does not exist.
    UpdateIfMatchETag,
    /// Same as [`ImportMode::Update`] (import jobs' name for it).
    CreateOrUpdate,
    /// Delete regardless of etag; fails if it does not exist.
    Delete,
    /// Delete only if `eTag` matches.
    DeleteIfMatchETag,
    /// Overwrite the twin's tags and desired properties that are given, regardless of etag.
    UpdateTwin,
    /// Overwrite the twin only if `twinETag` matches.
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    /// Every mode.
    pub const ALL: [ImportMode; 8] = [
        ImportMode::Create,
        ImportMode::Update,
        ImportMode::UpdateIfMatchETag,
        ImportMode::CreateOrUpdate,
        ImportMode::Delete,
        ImportMode::DeleteIfMatchETag,
        ImportMode::UpdateTwin,
        ImportMode::UpdateTwinIfMatchETag,
    ];

    /// The swagger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::Update => "update",
            ImportMode::UpdateIfMatchETag => "updateIfMatchETag",
            ImportMode::CreateOrUpdate => "createOrUpdate",
            ImportMode::Delete => "delete",
            ImportMode::DeleteIfMatchETag => "deleteIfMatchETag",
            ImportMode::UpdateTwin => "updateTwin",
            ImportMode::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }

    /// Reads a mode in any letter case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl Serialize for ImportMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ImportMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImportMode::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown importMode '{s}': expected create, update, updateIfMatchETag, delete, deleteIfMatchETag, updateTwin or updateTwinIfMatchETag"
            ))
        })
    }
}

/// Desired (and, refused, reported) properties in a bulk item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BulkTwinProperties {
    /// Desired properties to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<JsonObject>,
    /// Reported properties; the service cannot write them, so a non-empty value is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<JsonObject>,
}

/// One operation of a bulk request (swagger `ExportImportDevice`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    /// The device id (`id`; `deviceId` is read too).
    #[serde(alias = "deviceId")]
    pub id: String,
    /// The module id, for module operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The device etag for `updateIfMatchETag` / `deleteIfMatchETag` (`eTag`; `etag` is read too).
    #[serde(
        default,
        rename = "eTag",
        alias = "etag",
        skip_serializing_if = "Option::is_none"
    )]
    pub e_tag: Option<String>,
    /// What to do; absent means `createOrUpdate`, as in import jobs.
    #[serde(default = "default_mode")]
    pub import_mode: ImportMode,
    /// `enabled` or `disabled`; absent keeps the current status (or enabled on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Free text explaining the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Credentials; absent or empty keys are generated on create and kept on update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// The twin etag for `updateTwinIfMatchETag` (`twinETag`; `twinEtag` is read too).
    #[serde(
        default,
        rename = "twinETag",
        alias = "twinEtag",
        skip_serializing_if = "Option::is_none"
    )]
    pub twin_e_tag: Option<String>,
    /// Tags to set on the twin (replacing the current ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<JsonObject>,
    /// Desired properties to set on the twin (replacing the current ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BulkTwinProperties>,
    /// Capabilities; absent keeps the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Edge scope (kept by the hub; the emulator ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Edge parent scopes (ignored by the emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

fn default_mode() -> ImportMode {
    ImportMode::CreateOrUpdate
}

impl ExportImportDevice {
    /// An operation on a device with nothing else set.
    pub fn new(id: impl Into<String>, import_mode: ImportMode) -> Self {
        ExportImportDevice {
            id: id.into(),
            module_id: None,
            e_tag: None,
            import_mode,
            status: None,
            status_reason: None,
            authentication: None,
            twin_e_tag: None,
            tags: None,
            properties: None,
            capabilities: None,
            device_scope: None,
            parent_scopes: None,
        }
    }
}

/// One failed operation (swagger `DeviceRegistryOperationError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationError {
    /// The device the operation named.
    pub device_id: String,
    /// The error code's name, e.g. `DeviceAlreadyExists`.
    pub error_code: String,
    /// What went wrong, in words.
    pub error_status: String,
    /// The module, for module operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The import mode of the failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// A warning about one operation (swagger `DeviceRegistryOperationWarning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationWarning {
    /// The device the operation named.
    pub device_id: String,
    /// The warning code, e.g. `DeviceRegisteredWithoutTwin`.
    pub warning_code: String,
    /// The details.
    pub warning_status: String,
}

/// The response of a bulk request (swagger `BulkRegistryOperationResult`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRegistryOperationResult {
    /// True when every operation succeeded.
    pub is_successful: bool,
    /// One entry per failed operation, in request order.
    #[serde(default)]
    pub errors: Vec<DeviceRegistryOperationError>,
    /// Warnings (the emulator has none to give).
    #[serde(default)]
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_node_sends() {
        let body = r#"[{"id":"d1","status":"disabled","importMode":"create","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}},
                      {"id":"d2","importMode":"UpdateIfMatchETag","etag":"MQ==","status":"enabled"},
                      {"id":"d3","importMode":"Delete"}]"#;
        let ops: Vec<ExportImportDevice> = serde_json::from_str(body).unwrap();
        assert_eq!(ops[0].import_mode, ImportMode::Create);
        assert_eq!(ops[0].status, Some(DeviceStatus::Disabled));
        assert_eq!(ops[1].import_mode, ImportMode::UpdateIfMatchETag);
        assert_eq!(ops[1].e_tag.as_deref(), Some("MQ=="));
        assert_eq!(ops[2].import_mode, ImportMode::Delete);
    }

    #[test]
    fn reads_what_python_sends_and_writes_swagger_names() {
        let body = r#"[{"id":"d1","eTag":"x","importMode":"updateTwinIfMatchETag","twinETag":"AAAAAAAAAAE=","tags":{"a":1},"properties":{"desired":{"b":2}}}]"#;
        let ops: Vec<ExportImportDevice> = serde_json::from_str(body).unwrap();
        assert_eq!(ops[0].twin_e_tag.as_deref(), Some("AAAAAAAAAAE="));
        let v = serde_json::to_value(&ops[0]).unwrap();
        assert_eq!(v["importMode"], "updateTwinIfMatchETag");
        assert_eq!(v["eTag"], "x");
        assert_eq!(v["properties"]["desired"]["b"], 2);
        let missing: ExportImportDevice = serde_json::from_str(r#"{"id":"d"}"#).unwrap();
        assert_eq!(missing.import_mode, ImportMode::CreateOrUpdate);
        assert!(
            serde_json::from_str::<ExportImportDevice>(r#"{"id":"d","importMode":"x"}"#).is_err()
        );
    }

    #[test]
    fn result_has_swagger_names() {
        let r = BulkRegistryOperationResult {
            is_successful: false,
            errors: vec![DeviceRegistryOperationError {
                device_id: "d1".into(),
                error_code: "DeviceAlreadyExists".into(),
                error_status: "exists".into(),
                module_id: None,
                operation: Some("create".into()),
            }],
            warnings: vec![],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["isSuccessful"], false);
        assert_eq!(v["errors"][0]["errorCode"], "DeviceAlreadyExists");
        assert_eq!(v["errors"][0]["errorStatus"], "exists");
        assert_eq!(v["warnings"], serde_json::json!([]));
    }
}
