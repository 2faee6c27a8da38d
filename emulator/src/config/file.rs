//! The `--config` TOML file: its schema and how it applies on top of a [`Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, SeedDevice};
use crate::hub::DeliveryCountRule;

/// The `[hub]` table: overrides of [`HubSettings::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubTable {
    queue_depth: Option<usize>,
    default_ttl_secs: Option<u64>,
    max_delivery_count: Option<u32>,
    lock_duration_secs: Option<u64>,
    delivery_count_rule: Option<DeliveryCountRule>,
    feedback_window_ms: Option<u64>,
    feedback_batch_size: Option<usize>,
    feedback_ttl_secs: Option<u64>,
    feedback_lock_duration_secs: Option<u64>,
    feedback_max_delivery_count: Option<u32>,
    d2c_retention: Option<usize>,
}

/// The `[connections]` table: overrides of [`crate::accept::ConnectionLimits::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionsTable {
    max: Option<usize>,
    pre_auth_timeout_secs: Option<u64>,
}

/// A `[policies.<name>]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DeviceStatus {
    #[default]
    Enabled,
    Disabled,
}

/// A `[[devices]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTable {
    id: String,
    primary_key: Option<String>,
    secondary_key: Option<String>,
    #[serde(default)]
    status: DeviceStatus,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    hub: HubTable,
    #[serde(default)]
    connections: ConnectionsTable,
    #[serde(default)]
    policies: BTreeMap<String, PolicyTable>,
    #[serde(default)]
    devices: Vec<DeviceTable>,
}

impl Config {
    /// Applies a TOML document (the `--config` file format) on top of this configuration.
    /// `origin` names it in errors. Call [`Config::validate`] afterwards.
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            origin: origin.to_owned(),
            source: Box::new(e),
        })?;
        let h = file.hub;
        let hub = &mut self.hub;
        let secs = Duration::from_secs;
        set(&mut hub.queue_depth, h.queue_depth);
        set(&mut hub.default_ttl, h.default_ttl_secs.map(secs));
        set(&mut hub.max_delivery_count, h.max_delivery_count);
        set(&mut hub.lock_duration, h.lock_duration_secs.map(secs));
        set(&mut hub.delivery_count_rule, h.delivery_count_rule);
        set(
            &mut hub.feedback_window,
            h.feedback_window_ms.map(Duration::from_millis),
        );
        set(&mut hub.feedback_batch_size, h.feedback_batch_size);
        set(&mut hub.feedback_ttl, h.feedback_ttl_secs.map(secs));
        set(
            &mut hub.feedback_lock_duration,
            h.feedback_lock_duration_secs.map(secs),
        );
        set(
            &mut hub.feedback_max_delivery_count,
            h.feedback_max_delivery_count,
        );
        set(&mut hub.d2c_retention, h.d2c_retention);
        set(&mut self.connections.max, file.connections.max);
        set(
            &mut self.connections.pre_auth,
            file.connections.pre_auth_timeout_secs.map(secs),
        );

        for (name, keys) in file.policies {
            let known = self
                .policies
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let Some(policy) = self.policies.iter_mut().find(|p| p.name == name) else {
                return Err(ConfigError::UnknownPolicy { name, known });
            };
            set(&mut policy.primary_key, keys.primary_key);
            set(&mut policy.secondary_key, keys.secondary_key);
        }

        self.devices
            .extend(file.devices.into_iter().map(|d| SeedDevice {
                id: d.id,
                primary_key: d.primary_key,
                secondary_key: d.secondary_key,
                enabled: matches!(d.status, DeviceStatus::Enabled),
            }));
        Ok(())
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
