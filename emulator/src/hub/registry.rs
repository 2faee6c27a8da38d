//! Registry operations: create, read, update, delete and list device identities.
//!
//! Reference: iothub-protocol.md 6. Create without keys (or with empty ones) generates them;
//! every write gives a new etag; a re-created device gets a new generation id; `If-Match`
//! accepts `*`, `"*"`, a bare or quoted etag, and a weak `W/"..."` one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::HubError;
use iothub_protocol::device_id::validate_device_id;
use iothub_protocol::registry::{ConnectionState, Device, DeviceStatus, NEVER_TIME};
use time::OffsetDateTime;

use super::c2d::Outcome;
use super::store::{DeviceEntry, Store};
use super::{Hub, HubEvent, Identity};

/// True when an `If-Match` value matches `etag` (or is a wildcard).
pub fn if_match_allows(if_match: &str, etag: &str) -> bool {
    let v = if_match.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    v == "*" || v == etag
}

fn check_if_match(device: &Device, if_match: &str) -> Result<(), HubError> {
    let current = device.etag.as_deref().unwrap_or_default();
    if if_match_allows(if_match, current) {
        return Ok(());
    }
    Err(HubError::PreconditionFailed {
        detail: format!(
            "the etag in If-Match does not match device '{}' (current etag \"{current}\"); read the device again",
            device.device_id
        ),
    })
}

pub(super) fn check_key(name: &str, key: &str) -> Result<(), HubError> {
    match STANDARD.decode(key) {
        Ok(raw) if (16..=64).contains(&raw.len()) => Ok(()),
        _ => Err(HubError::argument(format!(
            "the {name} is not a valid key: it must be base64 of 16 to 64 bytes"
        ))),
    }
}

impl<S: Store> Hub<S> {
    /// The device with this id, with its current C2D message count.
    pub fn get_device(&self, device_id: &str) -> Result<Device, HubError> {
        let entry = self
            .store
            .get(device_id)
            .ok_or_else(|| HubError::DeviceNotFound {
                device_id: device_id.to_owned(),
            })?;
        Ok(view(entry))
    }

    /// Devices in id order, at most `top`.
    pub fn list_devices(&self, top: usize) -> Vec<Device> {
        self.store.list(None, top).into_iter().map(view).collect()
    }

    /// Number of registered devices.
    pub fn device_count(&self) -> usize {
        self.store.len()
    }

    /// Creates a device (`if_match` absent) or updates one (`if_match` present), as
    /// `PUT /devices/{id}` does.
    pub fn put_device(
        &mut self,
        device: Device,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Device, HubError> {
        self.handle_timeout(now);
        match if_match {
            None => self.create_device(device, now),
            Some(m) => self.update_device(device, m, now),
        }
    }

    /// Creates a device, generating keys that are absent or empty.
    pub fn create_device(
        &mut self,
        mut device: Device,
        now: OffsetDateTime,
    ) -> Result<Device, HubError> {
        self.handle_timeout(now);
        validate_device_id(&device.device_id).map_err(HubError::argument)?;
        if self.store.get(&device.device_id).is_some() {
            return Err(HubError::DeviceAlreadyExists {
                device_id: device.device_id,
            });
        }
        let keys = &mut device.authentication.symmetric_key;
        for (name, slot) in [
            ("primary key", &mut keys.primary_key),
            ("secondary key", &mut keys.secondary_key),
        ] {
            match slot.as_deref() {
                Some(k) if !k.is_empty() => check_key(name, k)?,
                _ => *slot = Some(self.entropy.key()?),
            }
        }
        if device.authentication.kind.is_empty() {
            device.authentication.kind = "sas".to_owned();
        }
        device.generation_id = Some(self.ids.generation_id());
        device.etag = Some(self.ids.etag());
        device.connection_state = ConnectionState::Disconnected;
        device.connection_state_updated_time = Some(NEVER_TIME);
        device.status_updated_time = Some(now);
        device.last_activity_time = Some(NEVER_TIME);
        device.cloud_to_device_message_count = 0;
        let id = device.device_id.clone();
        self.store.insert(DeviceEntry::created(device, now));
        self.store.commit(&[&id]);
        self.identity_created(&Identity::device(&id), now);
        self.get_device(&id)
    }

    /// Replaces a device's status, keys and capabilities, if `if_match` allows it. Empty keys
    /// keep the current ones.
    pub fn update_device(
        &mut self,
        device: Device,
        if_match: &str,
        now: OffsetDateTime,
    ) -> Result<Device, HubError> {
        self.handle_timeout(now);
        let etag = self.ids.etag();
        let id = device.device_id.clone();
        let entry = self
            .store
            .get_mut(&id)
            .ok_or_else(|| HubError::DeviceNotFound {
                device_id: id.clone(),
            })?;
        check_if_match(&entry.device, if_match)?;
        let new_keys = device.authentication.symmetric_key.clone();
        for (name, k) in [
            ("primary key", new_keys.primary_key.as_deref()),
            ("secondary key", new_keys.secondary_key.as_deref()),
        ] {
            if let Some(k) = k.filter(|k| !k.is_empty()) {
                check_key(name, k)?;
            }
        }
        let stored = &mut entry.device;
        let disabled_now =
            stored.status == DeviceStatus::Enabled && device.status == DeviceStatus::Disabled;
        if stored.status != device.status {
            stored.status_updated_time = Some(now);
        }
        stored.status = device.status;
        stored.status_reason = device.status_reason;
        stored.capabilities = device.capabilities;
        stored.authentication.kind = device.authentication.kind;
        stored.authentication.x509_thumbprint = device.authentication.x509_thumbprint;
        let keys = &mut stored.authentication.symmetric_key;
        if let Some(k) = new_keys.primary_key.filter(|k| !k.is_empty()) {
            keys.primary_key = Some(k);
        }
        if let Some(k) = new_keys.secondary_key.filter(|k| !k.is_empty()) {
            keys.secondary_key = Some(k);
        }
        stored.etag = Some(etag);
        if disabled_now {
            self.methods_device_disabled(&id);
            self.events.push_back(HubEvent::DeviceGone {
                device_id: id.clone(),
            });
        }
        self.store.commit(&[&id]);
        self.get_device(&id)
    }

    /// Deletes a device, its queue and the feedback about it that the service has not received.
    pub fn delete_device(
        &mut self,
        device_id: &str,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        let entry = self
            .store
            .get(device_id)
            .ok_or_else(|| HubError::DeviceNotFound {
                device_id: device_id.to_owned(),
            })?;
        if let Some(m) = if_match {
            check_if_match(&entry.device, m)?;
        }
        let twin = self.twin_before_delete(&Identity::device(device_id));
        if let Some(mut entry) = self.store.remove(device_id) {
            for m in entry.queue.drain(&mut self.timers) {
                self.events.push_back(HubEvent::C2dSettled {
                    device_id: device_id.to_owned(),
                    sequence_number: m.sequence_number(),
                    outcome: Outcome::DeviceDeleted,
                });
            }
        }
        self.store
            .feedback_mut()
            .drop_device(device_id, &mut self.timers);
        self.methods_device_deleted(device_id);
        self.events.push_back(HubEvent::DeviceGone {
            device_id: device_id.to_owned(),
        });
        self.identity_deleted(twin, now);
        self.store.commit(&[device_id]);
        Ok(())
    }

    /// Records that the device connected or disconnected over MQTT or AMQP.
    pub fn set_connection_state(&mut self, device_id: &str, connected: bool, now: OffsetDateTime) {
        if let Some(e) = self.store.get_mut(device_id) {
            let state = if connected {
                ConnectionState::Connected
            } else {
                ConnectionState::Disconnected
            };
            let changed = e.device.connection_state != state;
            if changed {
                e.device.connection_state = state;
                e.device.connection_state_updated_time = Some(now);
            }
            e.device.last_activity_time = Some(now);
            if changed {
                self.connection_state_changed(&Identity::device(device_id), connected, now);
            }
        }
    }
}

fn view(entry: &DeviceEntry) -> Device {
    let mut d = entry.device.clone();
    d.cloud_to_device_message_count = entry.queue.len() as u64;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert!(if_match_allows("*", "abc"));
        assert!(if_match_allows("\"*\"", "abc"));
        assert!(if_match_allows("abc", "abc"));
        assert!(if_match_allows("\"abc\"", "abc"));
        assert!(if_match_allows("W/\"abc\"", "abc"));
        assert!(!if_match_allows("\"abd\"", "abc"));
        assert!(!if_match_allows("", "abc"));
    }
}
