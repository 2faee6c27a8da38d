//! Validation: every value is checked at start, and an error names the setting as the user
//! wrote it and what is allowed.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;

use super::{Config, ConfigError};
use crate::hub::{HubSettings, SettingsError};
use crate::tls;

impl Config {
    /// Checks every value; the error names the first bad setting and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_hostname(&self.hostname)?;
        check_hub_name(&self.hub.hub_name)?;
        self.hub
            .validate()
            .map_err(|e| hub_setting_error(&self.hub, e))?;
        if self.connections.max == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "--max-connections".to_owned(),
                value: "0".to_owned(),
                allowed: "at least 1 connection".to_owned(),
            });
        }
        if self.connections.pre_auth.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "--pre-auth-timeout-secs".to_owned(),
                value: "0".to_owned(),
                allowed: "at least 1 second".to_owned(),
            });
        }
        if self.mqtt_max_inflight == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "--mqtt-max-inflight".to_owned(),
                value: "0".to_owned(),
                allowed: "1 to 65535 messages".to_owned(),
            });
        }
        let ports = [
            ("--https-port", Some(self.ports.https)),
            ("--mqtt-port", Some(self.ports.mqtt)),
            ("--amqp-port", Some(self.ports.amqp)),
            ("--http-port", Some(self.ports.http)),
            ("--mqtt-tcp-port", self.ports.mqtt_tcp),
        ];
        for (i, (first, a)) in ports.iter().enumerate() {
            for (second, b) in &ports[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && a == b
                    && *a != 0
                {
                    return Err(ConfigError::PortClash {
                        port: *a,
                        first,
                        second,
                    });
                }
            }
        }
        for san in &self.extra_sans {
            tls::check_subject_name(san).map_err(ConfigError::InvalidSan)?;
        }
        for policy in &self.policies {
            check_key(
                || format!("policies.{}.primary_key", policy.name),
                &policy.primary_key,
            )?;
            check_key(
                || format!("policies.{}.secondary_key", policy.name),
                &policy.secondary_key,
            )?;
        }
        let mut seen = HashSet::new();
        for (i, device) in self.devices.iter().enumerate() {
            iothub_protocol::device_id::validate_device_id(&device.id).map_err(|reason| {
                ConfigError::InvalidDeviceId {
                    setting: format!("devices[{i}].id"),
                    id: device.id.clone(),
                    reason,
                }
            })?;
            if !seen.insert(device.id.as_str()) {
                return Err(ConfigError::DuplicateDevice {
                    id: device.id.clone(),
                });
            }
            for (which, key) in [
                ("primary_key", &device.primary_key),
                ("secondary_key", &device.secondary_key),
            ] {
                if let Some(key) = key {
                    check_key(
                        || format!("devices[{i}].{which} (device {:?})", device.id),
                        key,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Maps a [`SettingsError`] to the name the user wrote and the value in the file's unit.
fn hub_setting_error(hub: &HubSettings, e: SettingsError) -> ConfigError {
    let secs = |d: Duration| d.as_secs().to_string();
    let (setting, value) = match e.name {
        "hub_name" => ("--hub-name".to_owned(), format!("{:?}", hub.hub_name)),
        "default_ttl" => ("hub.default_ttl_secs".to_owned(), secs(hub.default_ttl)),
        "lock_duration" => ("hub.lock_duration_secs".to_owned(), secs(hub.lock_duration)),
        "feedback_window" => (
            "hub.feedback_window_ms".to_owned(),
            hub.feedback_window.as_millis().to_string(),
        ),
        "feedback_ttl" => ("hub.feedback_ttl_secs".to_owned(), secs(hub.feedback_ttl)),
        "feedback_lock_duration" => (
            "hub.feedback_lock_duration_secs".to_owned(),
            secs(hub.feedback_lock_duration),
        ),
        other => (format!("hub.{other}"), e.value.clone()),
    };
    ConfigError::OutOfRange {
        setting,
        value,
        allowed: e.allowed.to_owned(),
    }
}

/// IoT Hub symmetric keys are base64 of 16 to 64 bytes.
fn check_key(setting: impl Fn() -> String, key: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidKey {
        setting: setting(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| invalid(format!("not valid base64 ({e})")))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(invalid(format!(
            "it decodes to {} bytes; IoT Hub keys are 16 to 64 bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// Connection strings carry the host name; the C# SDK accepts `[A-Za-z0-9_.-]` (iothub-protocol.md 7.5).
fn check_hostname(hostname: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidName {
        setting: "--hostname",
        value: hostname.to_owned(),
        reason,
    };
    if hostname.is_empty() {
        return Err(invalid("it is empty"));
    }
    if hostname.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if hostname.len() > 253
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        || hostname.split('.').any(str::is_empty)
    {
        return Err(invalid(
            "use a DNS name (ASCII letters, digits, '-', '_' in dot-separated labels, no port) or an IP address",
        ));
    }
    Ok(())
}

fn check_hub_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidName {
            setting: "--hub-name",
            value: name.to_owned(),
            reason: "use 1 to 63 ASCII letters, digits, '-' or '_' (the hub name defaults to the first label of --hostname)",
        })
    }
}
