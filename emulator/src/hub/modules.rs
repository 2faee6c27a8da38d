//! Module identities under a device (iothub-beyond-c2d.md 4): create, read, update, delete and
//! list, with the device registry's rules for keys and etags.
//!
//! A module lives in its device's [`DeviceEntry`](super::DeviceEntry), so deleting the device
//! deletes its modules and a durable store writes both in one commit. A module has its own
//! keys, twin, connection state and generation id; it has no status of its own (a disabled
//! device disables its modules, as the hub's device-scoped checks do) and no C2D queue.

use iothub_protocol::HubError;
use iothub_protocol::module::{Module, validate_module_id};
use iothub_protocol::registry::{ConnectionState, NEVER_TIME};
use time::OffsetDateTime;

use super::registry::check_key;
use super::store::{DeviceEntry, Store};
use super::twin::TwinState;
use super::{Hub, HubEvent, Identity, if_match_allows};

/// Everything the hub keeps about one module.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ModuleEntry {
    /// The registry identity.
    pub module: Module,
    /// Its twin.
    pub twin: TwinState,
}

fn module_not_found(device_id: &str, module_id: &str) -> HubError {
    HubError::ModuleNotFound {
        device_id: device_id.to_owned(),
        module_id: module_id.to_owned(),
    }
}

fn check_if_match(module: &Module, if_match: &str) -> Result<(), HubError> {
    let current = module.etag.as_deref().unwrap_or_default();
    if if_match_allows(if_match, current) {
        return Ok(());
    }
    Err(HubError::PreconditionFailed {
        detail: format!(
            "the etag in If-Match does not match module '{}/{}' (current etag \"{current}\"); read the module again",
            module.device_id, module.module_id
        ),
    })
}

/// Checks the keys a create or update names; empty or absent ones are fine (generated or kept).
fn check_given_keys(module: &Module) -> Result<(), HubError> {
    let keys = &module.authentication.symmetric_key;
    for (name, k) in [
        ("primary key", keys.primary_key.as_deref()),
        ("secondary key", keys.secondary_key.as_deref()),
    ] {
        if let Some(k) = k.filter(|k| !k.is_empty()) {
            check_key(name, k)?;
        }
    }
    Ok(())
}

impl<S: Store> Hub<S> {
    /// The module `device_id/module_id`. Errors: `DeviceNotFound`, `ModuleNotFound`.
    pub fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module, HubError> {
        Ok(self.module_entry(device_id, module_id)?.module.clone())
    }

    /// The device's modules in id order (`GET /devices/{id}/modules`).
    pub fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, HubError> {
        Ok(self
            .entry(device_id)?
            .modules
            .values()
            .map(|m| m.module.clone())
            .collect())
    }

    /// Creates a module (`if_match` absent) or updates one (`if_match` present), as
    /// `PUT /devices/{id}/modules/{mid}` does.
    ///
    /// ```
    /// use iothub_emulator::hub::{Hub, HubSettings};
    /// use iothub_protocol::module::Module;
    /// use iothub_protocol::registry::Device;
    ///
    /// let now = time::OffsetDateTime::UNIX_EPOCH;
    /// let mut hub = Hub::new(HubSettings::default(), 1);
    /// hub.create_device(Device::new("d1"), now).unwrap();
    /// let m = hub.put_module(Module::new("d1", "m1"), None, now).unwrap();
    /// assert!(m.primary_key().is_some());
    /// assert_eq!(hub.list_modules("d1").unwrap().len(), 1);
    /// ```
    pub fn put_module(
        &mut self,
        module: Module,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Module, HubError> {
        match if_match {
            None => self.create_module(module, now),
            Some(m) => self.update_module(module, m, now),
        }
    }

    /// Creates a module on an existing device, generating keys that are absent or empty.
    ///
    /// Errors: `DeviceNotFound`, `ModuleAlreadyExistsOnDevice`, `ArgumentInvalid` (id rules,
    /// malformed keys).
    pub fn create_module(
        &mut self,
        mut module: Module,
        now: OffsetDateTime,
    ) -> Result<Module, HubError> {
        self.handle_timeout(now);
        let device_id = module.device_id.clone();
        let module_id = module.module_id.clone();
        validate_module_id(&module_id).map_err(HubError::argument)?;
        let entry = self.entry(&device_id)?;
        if entry.modules.contains_key(&module_id) {
            return Err(HubError::ModuleAlreadyExistsOnDevice {
                device_id,
                module_id,
            });
        }
        check_given_keys(&module)?;
        let keys = &mut module.authentication.symmetric_key;
        for slot in [&mut keys.primary_key, &mut keys.secondary_key] {
            if slot.as_deref().is_none_or(str::is_empty) {
                *slot = Some(self.entropy.key()?);
            }
        }
        if module.authentication.kind.is_empty() {
            module.authentication.kind = "sas".to_owned();
        }
        module.generation_id = Some(self.ids.generation_id());
        module.etag = Some(self.ids.etag());
        module.connection_state = ConnectionState::Disconnected;
        module.connection_state_updated_time = Some(NEVER_TIME);
        module.last_activity_time = Some(NEVER_TIME);
        module.cloud_to_device_message_count = 0;
        let created = module.clone();
        let entry = self.entry_mut(&device_id)?;
        entry.modules.insert(
            module_id.clone(),
            ModuleEntry {
                module,
                twin: TwinState::new(now),
            },
        );
        self.store.commit(&[&device_id]);
        self.identity_created(&Identity::module(&device_id, &module_id), now);
        Ok(created)
    }

    /// Replaces a module's keys, authentication type and `managedBy`, if `if_match` allows it.
    /// Empty keys keep the current ones.
    pub fn update_module(
        &mut self,
        module: Module,
        if_match: &str,
        now: OffsetDateTime,
    ) -> Result<Module, HubError> {
        self.handle_timeout(now);
        let etag = self.ids.etag();
        let (device_id, module_id) = (module.device_id.clone(), module.module_id.clone());
        let entry = self.module_entry_mut(&device_id, &module_id)?;
        check_if_match(&entry.module, if_match)?;
        check_given_keys(&module)?;
        let stored = &mut entry.module;
        let new_keys = module.authentication.symmetric_key;
        let keys = &mut stored.authentication.symmetric_key;
        if let Some(k) = new_keys.primary_key.filter(|k| !k.is_empty()) {
            keys.primary_key = Some(k);
        }
        if let Some(k) = new_keys.secondary_key.filter(|k| !k.is_empty()) {
            keys.secondary_key = Some(k);
        }
        if !module.authentication.kind.is_empty() {
            stored.authentication.kind = module.authentication.kind;
        }
        stored.authentication.x509_thumbprint = module.authentication.x509_thumbprint;
        stored.managed_by = module.managed_by;
        stored.etag = Some(etag);
        let updated = stored.clone();
        self.store.commit(&[&device_id]);
        Ok(updated)
    }

    /// Deletes a module and its twin; its connections close and its pending method calls end
    /// with `ModuleNotFound`. Errors: `DeviceNotFound`, `ModuleNotFound`, `PreconditionFailed`.
    pub fn delete_module(
        &mut self,
        device_id: &str,
        module_id: &str,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        let entry = self.module_entry(device_id, module_id)?;
        if let Some(m) = if_match {
            check_if_match(&entry.module, m)?;
        }
        let identity = Identity::module(device_id, module_id);
        let twin = self.twin_before_delete(&identity);
        self.entry_mut(device_id)?.modules.remove(module_id);
        self.methods_module_deleted(&identity);
        self.events.push_back(HubEvent::ModuleGone {
            identity: identity.clone(),
        });
        self.identity_deleted(twin, now);
        self.store.commit(&[device_id]);
        Ok(())
    }

    /// Records that a device or module connected or disconnected over MQTT or AMQP.
    pub fn set_identity_connection_state(
        &mut self,
        identity: &Identity,
        connected: bool,
        now: OffsetDateTime,
    ) {
        let Some(module_id) = &identity.module_id else {
            self.set_connection_state(&identity.device_id, connected, now);
            return;
        };
        let Ok(entry) = self.module_entry_mut(&identity.device_id, module_id) else {
            return;
        };
        let m = &mut entry.module;
        let state = if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        };
        let changed = m.connection_state != state;
        if changed {
            m.connection_state = state;
            m.connection_state_updated_time = Some(now);
        }
        m.last_activity_time = Some(now);
        if changed {
            self.connection_state_changed(identity, connected, now);
        }
    }

    /// Checks that `identity` exists: its device, and its module if it names one.
    pub fn check_identity(&self, identity: &Identity) -> Result<(), HubError> {
        match &identity.module_id {
            Some(m) => self.module_entry(&identity.device_id, m).map(|_| ()),
            None => self.entry(&identity.device_id).map(|_| ()),
        }
    }

    /// The module's entry. Errors: `DeviceNotFound`, `ModuleNotFound`.
    pub(super) fn module_entry(
        &self,
        device_id: &str,
        module_id: &str,
    ) -> Result<&ModuleEntry, HubError> {
        self.entry(device_id)?
            .modules
            .get(module_id)
            .ok_or_else(|| module_not_found(device_id, module_id))
    }

    /// The module's entry, to change it.
    pub(super) fn module_entry_mut(
        &mut self,
        device_id: &str,
        module_id: &str,
    ) -> Result<&mut ModuleEntry, HubError> {
        self.entry_mut(device_id)?
            .modules
            .get_mut(module_id)
            .ok_or_else(|| module_not_found(device_id, module_id))
    }

    /// The device's entry, to change it, or `DeviceNotFound`.
    pub(super) fn entry_mut(&mut self, device_id: &str) -> Result<&mut DeviceEntry, HubError> {
        self.store
            .get_mut(device_id)
            .ok_or_else(|| HubError::DeviceNotFound {
                device_id: device_id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests;
