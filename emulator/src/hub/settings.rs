//! The hub's tunable settings, their defaults and their allowed ranges.
//!
//! Defaults are the real hub's (iothub-protocol.md 1.3, 1.4, 2.4, 2.5; iothub-beyond-c2d.md 3.1
//! and 3.5 for the event log). Every setting can be changed so tests can use, say, a zero
//! feedback window, a short lock or a one-minute event retention.

use std::time::Duration;

/// What makes a C2D message's delivery count go up (iothub-protocol.md 1.3, open question 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryCountRule {
    /// Only an explicit abandon counts (the current documentation). A lock that expires, or a
    /// connection that drops with the message in flight, returns it without counting.
    #[default]
    AbandonOnly,
    /// Every return to the queue counts: abandon, lock expiry, or a dropped connection (the
    /// older documentation).
    EveryRelease,
}

/// The name of the consumer group every hub has.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";
/// Most consumer groups that can be added to `$Default` (the real hub's S1-S3 limit).
pub const MAX_CONSUMER_GROUPS: usize = 20;

/// The built-in Event Hubs-compatible endpoint's log: partitions, retention, consumer groups.
///
/// Memory: a partition keeps at most `max_events_per_partition` events and at most
/// `max_bytes_per_partition` bytes, counting each event as its message size (body plus property
/// names and values) plus its sender's ids plus a fixed 512 bytes for the event's own
/// bookkeeping (close to what an event really takes in memory). With the defaults a hub holds
/// at most 4 x 32 MiB of telemetry however fast devices send; the oldest events go first,
/// exactly as when they pass the retention time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogSettings {
    /// Number of partitions, fixed for the hub's lifetime (default 4; 1 to 32).
    pub partition_count: u32,
    /// How long an event is kept (default 1 day; 1 second to 7 days, the real hub's 1 to 7
    /// days plus shorter values for tests).
    pub retention: Duration,
    /// Most events kept per partition (default 100,000; 1 to 10,000,000).
    pub max_events_per_partition: usize,
    /// Most bytes kept per partition, counted as above (default 32 MiB; 1 MiB to 4 GiB).
    pub max_bytes_per_partition: u64,
    /// Consumer groups besides `$Default` (names compare case-insensitively; at most 20).
    pub consumer_groups: Vec<String>,
}

impl Default for EventLogSettings {
    fn default() -> Self {
        EventLogSettings {
            partition_count: 4,
            retention: Duration::from_secs(86_400),
            max_events_per_partition: 100_000,
            max_bytes_per_partition: 32 * 1024 * 1024,
            consumer_groups: Vec::new(),
        }
    }
}

/// Which non-telemetry events go to the built-in Event Hubs-compatible endpoint, as a route with
/// that source would send them on a real hub. A real hub has no such route until one is made,
/// so every source is off by default (iothub-beyond-c2d.md 1.8, 3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventRoutes {
    /// `twinChangeEvents`: service twin writes and device reported-property writes.
    pub twin_change_events: bool,
    /// `deviceLifecycleEvents`: identity created or deleted.
    pub device_lifecycle_events: bool,
    /// `deviceConnectionStateEvents`: device connected or disconnected.
    pub device_connection_state_events: bool,
}

/// Hub-wide settings for C2D queues, feedback and recorded telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub name: the first label of the host name. Feedback `user-id` carries it.
    pub hub_name: String,
    /// Most pending C2D messages per device (default 50).
    pub queue_depth: usize,
    /// Expiry of a C2D message that does not set its own (default 1 hour; 1 minute to 2 days).
    pub default_ttl: Duration,
    /// Deliveries after which a message is dead-lettered (default 10; 1 to 100).
    pub max_delivery_count: u32,
    /// How long a received C2D message stays locked (default 60 s).
    pub lock_duration: Duration,
    /// What counts as a delivery.
    pub delivery_count_rule: DeliveryCountRule,
    /// How long feedback records wait for more before a batch is released (default 15 s; 0 sends
    /// each record as soon as it exists).
    pub feedback_window: Duration,
    /// Most records per feedback batch (default 64).
    pub feedback_batch_size: usize,
    /// How long an undelivered feedback batch is kept (default 1 hour; 1 minute to 2 days).
    pub feedback_ttl: Duration,
    /// How long a received feedback batch stays locked (default 60 s; 5 to 300 s).
    pub feedback_lock_duration: Duration,
    /// Deliveries after which a feedback batch is dropped (default 10; 1 to 100).
    pub feedback_max_delivery_count: u32,
    /// How many device-to-cloud messages are kept per device for inspection (default 100).
    pub d2c_retention: usize,
    /// The event log behind the Event Hubs-compatible endpoint.
    pub event_log: EventLogSettings,
    /// Non-telemetry event sources routed to the built-in endpoint (default: none).
    pub routes: EventRoutes,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            hub_name: "emulator".to_owned(),
            queue_depth: 50,
            default_ttl: Duration::from_secs(3600),
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(60),
            delivery_count_rule: DeliveryCountRule::AbandonOnly,
            feedback_window: Duration::from_secs(15),
            feedback_batch_size: 64,
            feedback_ttl: Duration::from_secs(3600),
            feedback_lock_duration: Duration::from_secs(60),
            feedback_max_delivery_count: 10,
            d2c_retention: 100,
            event_log: EventLogSettings::default(),
            routes: EventRoutes::default(),
        }
    }
}

/// A setting outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name} = {value} is out of range: allowed {allowed}")]
pub struct SettingsError {
    /// The setting's name as the config file spells it.
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// The allowed range, in words.
    pub allowed: &'static str,
}

fn check<T: PartialOrd + std::fmt::Debug>(
    name: &'static str,
    value: T,
    lo: T,
    hi: T,
    allowed: &'static str,
) -> Result<(), SettingsError> {
    if value < lo || value > hi {
        return Err(SettingsError {
            name,
            value: format!("{value:?}"),
            allowed,
        });
    }
    Ok(())
}

impl HubSettings {
    /// Checks every setting against its range; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let secs = Duration::from_secs;
        if self.hub_name.is_empty() {
            return Err(SettingsError {
                name: "hub_name",
                value: String::new(),
                allowed: "a non-empty host label",
            });
        }
        check(
            "queue_depth",
            self.queue_depth,
            1,
            100_000,
            "1 to 100000 messages",
        )?;
        check(
            "default_ttl",
            self.default_ttl,
            secs(60),
            secs(2 * 86_400),
            "1 minute to 2 days",
        )?;
        check(
            "max_delivery_count",
            self.max_delivery_count,
            1,
            100,
            "1 to 100",
        )?;
        check(
            "lock_duration",
            self.lock_duration,
            secs(1),
            secs(3600),
            "1 second to 1 hour",
        )?;
        check(
            "feedback_window",
            self.feedback_window,
            secs(0),
            secs(3600),
            "0 to 1 hour",
        )?;
        check(
            "feedback_batch_size",
            self.feedback_batch_size,
            1,
            1000,
            "1 to 1000 records",
        )?;
        check(
            "feedback_ttl",
            self.feedback_ttl,
            secs(60),
            secs(2 * 86_400),
            "1 minute to 2 days",
        )?;
        check(
            "feedback_lock_duration",
            self.feedback_lock_duration,
            secs(5),
            secs(300),
            "5 to 300 seconds",
        )?;
        check(
            "feedback_max_delivery_count",
            self.feedback_max_delivery_count,
            1,
            100,
            "1 to 100",
        )?;
        check(
            "d2c_retention",
            self.d2c_retention,
            0,
            1_000_000,
            "0 to 1000000 messages",
        )?;
        self.event_log.validate()
    }
}

/// True when `name` is a valid consumer group name: 1 to 50 ASCII letters, digits, `.`, `-`
/// and `_`, starting and ending with a letter or digit (the Event Hubs rule).
fn is_consumer_group_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=50).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && edge(name.chars().next())
        && edge(name.chars().last())
}

impl EventLogSettings {
    /// Checks every event log setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check(
            "event_partition_count",
            self.partition_count,
            1,
            32,
            "1 to 32 partitions",
        )?;
        check(
            "event_retention_secs",
            self.retention,
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
            "1 second to 7 days",
        )?;
        check(
            "event_max_events_per_partition",
            self.max_events_per_partition,
            1,
            10_000_000,
            "1 to 10000000 events",
        )?;
        check(
            "event_max_bytes_per_partition",
            self.max_bytes_per_partition,
            1024 * 1024,
            4 * 1024 * 1024 * 1024,
            "1 MiB to 4 GiB (1048576 to 4294967296 bytes)",
        )?;
        let groups = self
            .consumer_groups
            .iter()
            .filter(|g| !g.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP));
        let mut seen: Vec<&str> = Vec::new();
        for g in groups {
            if !is_consumer_group_name(g) {
                return Err(SettingsError {
                    name: "consumer_groups",
                    value: format!("{g:?}"),
                    allowed: "names of 1 to 50 letters, digits, '.', '-' and '_', starting and ending with a letter or digit",
                });
            }
            if seen.iter().any(|s| s.eq_ignore_ascii_case(g)) {
                return Err(SettingsError {
                    name: "consumer_groups",
                    value: format!("{g:?} (twice)"),
                    allowed: "names that differ other than in letter case",
                });
            }
            if seen.len() == MAX_CONSUMER_GROUPS {
                return Err(SettingsError {
                    name: "consumer_groups",
                    value: format!("{} groups", self.consumer_groups.len()),
                    allowed: "at most 20 groups besides $Default",
                });
            }
            seen.push(g);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_hubs_and_valid() {
        let s = HubSettings::default();
        assert_eq!(s.queue_depth, 50);
        assert_eq!(s.max_delivery_count, 10);
        assert_eq!(s.lock_duration, Duration::from_secs(60));
        assert_eq!(s.feedback_batch_size, 64);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let s = HubSettings {
            max_delivery_count: 101,
            ..HubSettings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.name, "max_delivery_count");
        assert!(e.to_string().contains("1 to 100"));
        let s = HubSettings {
            default_ttl: Duration::from_secs(59),
            ..HubSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().name, "default_ttl");
    }

    fn log(f: impl FnOnce(&mut EventLogSettings)) -> Result<(), SettingsError> {
        let mut s = HubSettings::default();
        f(&mut s.event_log);
        s.validate()
    }

    #[test]
    fn event_log_defaults_are_the_real_hubs() {
        let s = EventLogSettings::default();
        assert_eq!(s.partition_count, 4);
        assert_eq!(s.retention, Duration::from_secs(86_400));
        assert!(s.consumer_groups.is_empty());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn event_log_ranges_are_checked() {
        let name = |r: Result<(), SettingsError>| r.unwrap_err().name;
        assert_eq!(
            name(log(|l| l.partition_count = 0)),
            "event_partition_count"
        );
        assert_eq!(
            name(log(|l| l.partition_count = 33)),
            "event_partition_count"
        );
        assert!(log(|l| l.partition_count = 32).is_ok());
        assert!(log(|l| l.partition_count = 1).is_ok());
        assert_eq!(
            name(log(|l| l.retention = Duration::ZERO)),
            "event_retention_secs"
        );
        assert_eq!(
            name(log(|l| l.retention = Duration::from_secs(7 * 86_400 + 1))),
            "event_retention_secs"
        );
        assert_eq!(
            name(log(|l| l.max_events_per_partition = 0)),
            "event_max_events_per_partition"
        );
        assert_eq!(
            name(log(|l| l.max_bytes_per_partition = 1024)),
            "event_max_bytes_per_partition"
        );
    }

    #[test]
    fn consumer_groups_are_checked() {
        let groups =
            |g: &[&str]| log(|l| l.consumer_groups = g.iter().map(|s| s.to_string()).collect());
        assert!(groups(&["analytics", "alerts.v2", "a-b_c", "$default"]).is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "has space",
            "ünï",
            &"x".repeat(51),
            "$other",
        ] {
            let e = groups(&[bad]).unwrap_err();
            assert_eq!(e.name, "consumer_groups", "{bad:?}");
        }
        let e = groups(&["Alerts", "alerts"]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let many: Vec<String> = (0..21).map(|i| format!("g{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(groups(&many[..20]).is_ok());
        assert!(
            groups(&many)
                .unwrap_err()
                .to_string()
                .contains("at most 20")
        );
    }
}
