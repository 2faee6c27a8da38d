//! The hub's tunable settings, their defaults and their allowed ranges.
//!
//! Defaults are the real hub's (iothub-protocol.md 1.3, 1.4, 2.4, 2.5). Every setting can be
//! changed so tests can use, say, a zero feedback window or a short lock.

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
}
