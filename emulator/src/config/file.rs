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

/// The `[routes]` table: which non-telemetry sources reach the built-in endpoint (all off by
/// default, as on a hub without routes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesTable {
    twin_change_events: Option<bool>,
    device_lifecycle_events: Option<bool>,
    device_connection_state_events: Option<bool>,
}

/// The `[eventhubs]` table: the built-in Event Hubs-compatible endpoint's log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventHubsTable {
    partition_count: Option<u32>,
    retention_secs: Option<u64>,
    max_events_per_partition: Option<usize>,
    max_bytes_per_partition: Option<u64>,
    consumer_groups: Option<Vec<String>>,
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
/// `[state]`: where the hub's state lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateTable {
    in_memory: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    state: StateTable,
    #[serde(default)]
    hub: HubTable,
    #[serde(default)]
    connections: ConnectionsTable,
    #[serde(default)]
    routes: RoutesTable,
    #[serde(default)]
    eventhubs: EventHubsTable,
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
        set(&mut self.in_memory, file.state.in_memory);
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
        let r = file.routes;
        let routes = &mut hub.routes;
        set(&mut routes.twin_change_events, r.twin_change_events);
        set(
            &mut routes.device_lifecycle_events,
            r.device_lifecycle_events,
        );
        set(
            &mut routes.device_connection_state_events,
            r.device_connection_state_events,
        );
        let e = file.eventhubs;
        let log = &mut hub.event_log;
        set(&mut log.partition_count, e.partition_count);
        set(&mut log.retention, e.retention_secs.map(secs));
        set(
            &mut log.max_events_per_partition,
            e.max_events_per_partition,
        );
        set(&mut log.max_bytes_per_partition, e.max_bytes_per_partition);
        set(&mut log.consumer_groups, e.consumer_groups);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_off_unless_the_file_switches_them_on() {
        let mut c = Config::embedded("unused");
        assert_eq!(c.hub.routes, crate::hub::EventRoutes::default());
        c.apply_toml(
            "[routes]\ntwin_change_events = true\ndevice_connection_state_events = true",
            "t.toml",
        )
        .unwrap();
        assert!(c.hub.routes.twin_change_events);
        assert!(!c.hub.routes.device_lifecycle_events);
        assert!(c.hub.routes.device_connection_state_events);
        assert!(
            c.apply_toml("[routes]\ntwin_changes = true", "t.toml")
                .is_err()
        );
    }
}
