//! Bulk registry operations: `POST /devices` with up to 100 create / update / delete /
//! twin-update operations (swagger `BulkRegistry_UpdateRegistry`).
//!
//! The request as a whole is refused (nothing applied) when it is empty, holds more than
//! [`MAX_BULK_OPERATIONS`] items (`TooManyDevices`, 413) or names an identity twice
//! (`DeviceDefinedMultipleTimes`, 400). Otherwise every operation runs in order and on its own:
//! one that fails leaves the others applied and appears in `errors` with the code's name and
//! message, and `isSuccessful` is false. The adapter answers 200 in both cases: the Node SDK
//! turns any other status into an exception and would hide the per-device errors, and Python
//! reads the same body from 200 and 400.
//!
//! Import-mode semantics follow the import/export documentation: `update` and
//! `updateIfMatchETag` register a missing device; `delete*` of a missing device is an error;
//! the `*IfMatchETag` modes without an etag fail with `PreconditionFailed`. `tags` and
//! `properties.desired`, when given, replace those twin sections (on create they are the
//! initial twin); reported properties cannot be written by the service.

use std::collections::HashSet;

use iothub_protocol::HubError;
use iothub_protocol::bulk::{
    BulkRegistryOperationResult, DeviceRegistryOperationError, ExportImportDevice, ImportMode,
    MAX_BULK_OPERATIONS,
};
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::twin::{SectionWrite, TwinWrite};
use time::OffsetDateTime;

use super::store::Store;
use super::twin::{TwinState, WriteMode};
use super::{Hub, Identity};

impl<S: Store> Hub<S> {
    /// Runs a bulk registry request; see the module documentation for the rules.
    ///
    /// ```
    /// use iothub_emulator::hub::{Hub, HubSettings};
    /// use iothub_protocol::bulk::{ExportImportDevice, ImportMode};
    ///
    /// let now = time::OffsetDateTime::UNIX_EPOCH;
    /// let mut hub = Hub::new(HubSettings::default(), 1);
    /// let ops = vec![
    ///     ExportImportDevice::new("d1", ImportMode::Create),
    ///     ExportImportDevice::new("ghost", ImportMode::Delete),
    /// ];
    /// let result = hub.bulk_registry(&ops, now).unwrap();
    /// assert!(!result.is_successful);
    /// assert_eq!(result.errors[0].error_code, "DeviceNotFound");
    /// assert!(hub.get_device("d1").is_ok());
    /// ```
    pub fn bulk_registry(
        &mut self,
        ops: &[ExportImportDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistryOperationResult, HubError> {
        self.handle_timeout(now);
        if ops.is_empty() {
            return Err(HubError::argument(
                "the bulk registry request holds no operations; send 1 to 100",
            ));
        }
        if ops.len() > MAX_BULK_OPERATIONS {
            return Err(HubError::TooManyDevices {
                count: ops.len(),
                max: MAX_BULK_OPERATIONS,
            });
        }
        let mut seen = HashSet::new();
        for op in ops {
            let id = Identity {
                device_id: op.id.clone(),
                module_id: op.module_id.clone(),
            };
            if !seen.insert(id.clone()) {
                return Err(HubError::DeviceDefinedMultipleTimes {
                    device_id: id.to_string(),
                });
            }
        }
        let mut errors = Vec::new();
        for op in ops {
            if let Err(e) = self.bulk_one(op, now) {
                errors.push(DeviceRegistryOperationError {
                    device_id: op.id.clone(),
                    error_code: e.code().name().to_owned(),
                    error_status: e.to_string(),
                    module_id: op.module_id.clone(),
                    operation: Some(op.import_mode.as_str().to_owned()),
                });
            }
        }
        Ok(BulkRegistryOperationResult {
            is_successful: errors.is_empty(),
            errors,
            warnings: Vec::new(),
        })
    }

    fn bulk_one(&mut self, op: &ExportImportDevice, now: OffsetDateTime) -> Result<(), HubError> {
        if let Some(m) = &op.module_id {
            return Err(HubError::ModuleNotFound {
                device_id: op.id.clone(),
                module_id: m.clone(),
            });
        }
        let write = twin_write(op)?;
        let exists = self.store.get(&op.id).is_some();
        match op.import_mode {
            ImportMode::Create => self.bulk_create(op, &write, now),
            ImportMode::Update | ImportMode::CreateOrUpdate if exists => {
                self.bulk_update(op, "*", &write, now)
            }
            ImportMode::UpdateIfMatchETag if exists => {
                let etag = required(op.e_tag.as_deref(), "eTag", op)?;
                self.bulk_update(op, etag, &write, now)
            }
            ImportMode::Update | ImportMode::CreateOrUpdate | ImportMode::UpdateIfMatchETag => {
                self.bulk_create(op, &write, now)
            }
            ImportMode::Delete => self.delete_device(&op.id, None, now),
            ImportMode::DeleteIfMatchETag => {
                let etag = required(op.e_tag.as_deref(), "eTag", op)?;
                self.delete_device(&op.id, Some(etag), now)
            }
            ImportMode::UpdateTwin => self
                .write_twin(
                    &Identity::device(&op.id),
                    &write,
                    WriteMode::ReplaceGiven,
                    None,
                    now,
                )
                .map(drop),
            ImportMode::UpdateTwinIfMatchETag => {
                let etag = required(op.twin_e_tag.as_deref(), "twinETag", op)?;
                self.write_twin(
                    &Identity::device(&op.id),
                    &write,
                    WriteMode::ReplaceGiven,
                    Some(etag),
                    now,
                )
                .map(drop)
            }
        }
    }

    fn bulk_create(
        &mut self,
        op: &ExportImportDevice,
        write: &TwinWrite,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        // Check the twin before the device exists, so a bad twin creates nothing.
        let mut twin = TwinState::new(now);
        let initial = twin.write(write, WriteMode::ReplaceGiven, now)?.is_some();
        let mut device = Device::new(op.id.clone());
        device.status = op.status.unwrap_or(DeviceStatus::Enabled);
        device.status_reason = op.status_reason.clone();
        if let Some(auth) = &op.authentication {
            device.authentication = auth.clone();
        }
        if let Some(caps) = op.capabilities {
            device.capabilities = caps;
        }
        self.create_device(device, now)?;
        if initial && let Some(entry) = self.store.get_mut(&op.id) {
            entry.twin = twin;
            self.store.commit(&[&op.id]);
        }
        Ok(())
    }

    fn bulk_update(
        &mut self,
        op: &ExportImportDevice,
        if_match: &str,
        write: &TwinWrite,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        // A replacement's limits do not depend on the current twin: check on a scratch one.
        TwinState::new(now).write(write, WriteMode::ReplaceGiven, now)?;
        let mut device = self.get_device(&op.id)?;
        if let Some(s) = op.status {
            device.status = s;
        }
        if op.status_reason.is_some() {
            device.status_reason = op.status_reason.clone();
        }
        if let Some(auth) = &op.authentication {
            device.authentication = auth.clone();
        }
        if let Some(caps) = op.capabilities {
            device.capabilities = caps;
        }
        self.update_device(device, if_match, now)?;
        self.write_twin(
            &Identity::device(&op.id),
            write,
            WriteMode::ReplaceGiven,
            None,
            now,
        )?;
        Ok(())
    }
}

/// The twin sections a bulk item sets.
fn twin_write(op: &ExportImportDevice) -> Result<TwinWrite, HubError> {
    let props = op.properties.as_ref();
    if props
        .and_then(|p| p.reported.as_ref())
        .is_some_and(|r| !r.is_empty())
    {
        return Err(HubError::argument(
            "reported properties are read-only for the service: only the device can write properties.reported",
        ));
    }
    let section = |v: Option<&iothub_protocol::twin::JsonObject>| match v {
        Some(m) => SectionWrite::Set(m.clone()),
        None => SectionWrite::Absent,
    };
    Ok(TwinWrite {
        tags: section(op.tags.as_ref()),
        desired: section(props.and_then(|p| p.desired.as_ref())),
    })
}

fn required<'a>(
    v: Option<&'a str>,
    field: &str,
    op: &ExportImportDevice,
) -> Result<&'a str, HubError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| HubError::PreconditionFailed {
            detail: format!(
                "importMode {} needs '{field}' for '{}'; read the current etag first",
                op.import_mode.as_str(),
                op.id
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use crate::hub::twin::obj;
    use iothub_protocol::ErrorCode;
    use iothub_protocol::bulk::BulkTwinProperties;
    use serde_json::json;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-01-01 0:00 UTC);

    fn op(id: &str, mode: ImportMode) -> ExportImportDevice {
        ExportImportDevice::new(id, mode)
    }

    #[test]
    fn create_update_delete_round() {
        let mut hub = Hub::new(HubSettings::default(), 3);
        let mut a = op("a", ImportMode::Create);
        a.status = Some(DeviceStatus::Disabled);
        a.tags = Some(obj(json!({"floor": 3})));
        a.properties = Some(BulkTwinProperties {
            desired: Some(obj(json!({"fw": "1"}))),
            reported: None,
        });
        let r = hub
            .bulk_registry(&[a, op("b", ImportMode::Create)], T0)
            .unwrap();
        assert!(r.is_successful, "{r:?}");
        let da = hub.get_device("a").unwrap();
        assert_eq!(da.status, DeviceStatus::Disabled);
        assert!(da.primary_key().is_some());
        let twin = hub.get_twin(&Identity::device("a")).unwrap();
        assert_eq!(twin.tags["floor"], 3);
        assert_eq!(twin.properties.desired["fw"], "1");

        // Node's updateDevices(force=true): status only, keys kept.
        let mut up = op("a", ImportMode::Update);
        up.status = Some(DeviceStatus::Enabled);
        let r = hub.bulk_registry(&[up], T0).unwrap();
        assert!(r.is_successful);
        let after = hub.get_device("a").unwrap();
        assert_eq!(after.status, DeviceStatus::Enabled);
        assert_eq!(after.primary_key(), da.primary_key());
        assert_ne!(after.etag, da.etag);
        // The twin was not named, so it stays.
        assert_eq!(
            hub.get_twin(&Identity::device("a")).unwrap().tags["floor"],
            3
        );

        let r = hub
            .bulk_registry(
                &[op("a", ImportMode::Delete), op("b", ImportMode::Delete)],
                T0,
            )
            .unwrap();
        assert!(r.is_successful);
        assert_eq!(hub.device_count(), 0);
    }

    #[test]
    fn per_device_errors_leave_the_rest_applied() {
        let mut hub = Hub::new(HubSettings::default(), 3);
        hub.create_device(Device::new("x"), T0).unwrap();
        hub.create_device(Device::new("x2"), T0).unwrap();
        let mut stale = op("x2", ImportMode::UpdateIfMatchETag);
        stale.e_tag = Some("stale".into());
        let mut bad_twin = op("t", ImportMode::Create);
        bad_twin.tags = Some(obj(json!({"a.b": 1})));
        let r = hub
            .bulk_registry(
                &[
                    op("x", ImportMode::Create),
                    op("new", ImportMode::Create),
                    stale,
                    op("ghost", ImportMode::Delete),
                    op("y", ImportMode::DeleteIfMatchETag),
                    bad_twin,
                    op("bad id/", ImportMode::Create),
                ],
                T0,
            )
            .unwrap();
        assert!(!r.is_successful);
        let codes: Vec<(&str, &str)> = r
            .errors
            .iter()
            .map(|e| (e.device_id.as_str(), e.error_code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("x", "DeviceAlreadyExists"),
                ("x2", "PreconditionFailed"),
                ("ghost", "DeviceNotFound"),
                ("y", "PreconditionFailed"),
                ("t", "ArgumentInvalid"),
                ("bad id/", "ArgumentInvalid"),
            ]
        );
        assert_eq!(r.errors[0].operation.as_deref(), Some("create"));
        assert!(hub.get_device("new").is_ok());
        assert!(hub.get_device("t").is_err(), "a bad twin creates nothing");
    }

    #[test]
    fn etag_modes_and_update_creates() {
        let mut hub = Hub::new(HubSettings::default(), 3);
        let r = hub
            .bulk_registry(&[op("u", ImportMode::UpdateIfMatchETag)], T0)
            .unwrap();
        assert!(r.is_successful, "update registers a missing device");
        let etag = hub.get_device("u").unwrap().etag.unwrap();
        let mut good = op("u", ImportMode::UpdateIfMatchETag);
        good.e_tag = Some(format!("\"{etag}\""));
        good.status = Some(DeviceStatus::Disabled);
        assert!(hub.bulk_registry(&[good], T0).unwrap().is_successful);

        let twin_etag = hub.get_twin(&Identity::device("u")).unwrap().etag.unwrap();
        let mut tw = op("u", ImportMode::UpdateTwinIfMatchETag);
        tw.twin_e_tag = Some(twin_etag.clone());
        tw.tags = Some(obj(json!({"k": "v"})));
        assert!(hub.bulk_registry(&[tw.clone()], T0).unwrap().is_successful);
        let r = hub.bulk_registry(&[tw], T0).unwrap();
        assert_eq!(r.errors[0].error_code, "PreconditionFailed");
        assert_eq!(hub.get_twin(&Identity::device("u")).unwrap().tags["k"], "v");

        let mut rep = op("u", ImportMode::UpdateTwin);
        rep.properties = Some(BulkTwinProperties {
            desired: None,
            reported: Some(obj(json!({"r": 1}))),
        });
        let r = hub.bulk_registry(&[rep], T0).unwrap();
        assert_eq!(r.errors[0].error_code, "ArgumentInvalid");
        let r = hub
            .bulk_registry(&[op("nobody", ImportMode::UpdateTwin)], T0)
            .unwrap();
        assert_eq!(r.errors[0].error_code, "DeviceNotFound");
    }

    #[test]
    fn request_level_errors_apply_nothing() {
        let mut hub = Hub::new(HubSettings::default(), 3);
        let e = hub.bulk_registry(&[], T0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
        let many: Vec<_> = (0..101)
            .map(|i| op(&format!("d{i}"), ImportMode::Create))
            .collect();
        let e = hub.bulk_registry(&many, T0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooManyDevices);
        assert!(hub.bulk_registry(&many[..100], T0).unwrap().is_successful);
        let e = hub
            .bulk_registry(
                &[op("z", ImportMode::Create), op("z", ImportMode::Delete)],
                T0,
            )
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::DeviceDefinedMultipleTimes);
        assert!(hub.get_device("z").is_err());
        let mut m = op("d0", ImportMode::Create);
        m.module_id = Some("m".into());
        let r = hub.bulk_registry(&[m], T0).unwrap();
        assert_eq!(r.errors[0].error_code, "ModuleNotFound");
        assert_eq!(r.errors[0].module_id.as_deref(), Some("m"));
    }
}
