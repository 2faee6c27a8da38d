//! The service view of a device twin: identity fields from the registry plus the twin.

use iothub_protocol::registry::{NEVER, NEVER_TIME};
use iothub_protocol::time_format::format_millis;
use iothub_protocol::twin::Twin;

use super::super::modules::ModuleEntry;
use super::super::store::DeviceEntry;

/// The twin of a device as `GET /twins/{id}`, query rows and lifecycle events show it.
pub(crate) fn service_view(entry: &DeviceEntry) -> Twin {
    let d = &entry.device;
    let t = &entry.twin;
    let time = |v: &Option<time::OffsetDateTime>| Some(wire_time(*v));
    Twin {
        device_id: d.device_id.clone(),
        module_id: None,
        etag: Some(t.etag()),
        device_etag: d.etag.clone(),
        status: Some(d.status),
        status_reason: d.status_reason.clone(),
        status_update_time: time(&d.status_updated_time),
        connection_state: Some(d.connection_state),
        last_activity_time: time(&d.last_activity_time),
        cloud_to_device_message_count: Some(entry.queue.len() as u64),
        authentication_type: Some(d.authentication.kind.clone()),
        x509_thumbprint: Some(d.authentication.x509_thumbprint.clone()),
        model_id: None,
        version: Some(t.version()),
        tags: t.tags().clone(),
        properties: t.properties(true),
        capabilities: Some(d.capabilities),
        device_scope: None,
        parent_scopes: None,
    }
}

/// The twin of a module: its own identity fields and twin, its device's status (a module has
/// none of its own), no capabilities and no C2D queue.
pub(crate) fn module_service_view(device: &DeviceEntry, entry: &ModuleEntry) -> Twin {
    let d = &device.device;
    let m = &entry.module;
    let t = &entry.twin;
    let time = |v: &Option<time::OffsetDateTime>| Some(wire_time(*v));
    Twin {
        device_id: m.device_id.clone(),
        module_id: Some(m.module_id.clone()),
        etag: Some(t.etag()),
        device_etag: m.etag.clone(),
        status: Some(d.status),
        status_reason: d.status_reason.clone(),
        status_update_time: time(&d.status_updated_time),
        connection_state: Some(m.connection_state),
        last_activity_time: time(&m.last_activity_time),
        cloud_to_device_message_count: Some(0),
        authentication_type: Some(m.authentication.kind.clone()),
        x509_thumbprint: Some(m.authentication.x509_thumbprint.clone()),
        model_id: None,
        version: Some(t.version()),
        tags: t.tags().clone(),
        properties: t.properties(true),
        capabilities: None,
        device_scope: None,
        parent_scopes: None,
    }
}

/// A registry timestamp as twins and query rows write it: [`NEVER`] when unset.
pub(crate) fn wire_time(t: Option<time::OffsetDateTime>) -> String {
    match t {
        Some(t) if t != NEVER_TIME => format_millis(t),
        _ => NEVER.to_owned(),
    }
}
