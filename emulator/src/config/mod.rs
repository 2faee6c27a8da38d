//! The emulator's configuration: command line, environment variables and an optional TOML file,
//! resolved and validated into one [`Config`].
//!
//! Every flag has an environment variable named `IOTHUB_EMULATOR_<FLAG>` (`--mqtt-port` is
//! `IOTHUB_EMULATOR_MQTT_PORT`); a flag on the command line wins over its variable. The TOML file
//! (`--config`) holds what does not fit on a command line: hub settings, policy keys and devices
//! to seed. Unknown keys in it are errors, so a typo is caught rather than ignored.
//!
//! ```toml
//! [hub]
//! queue_depth = 50                 # pending C2D messages per device
//! default_ttl_secs = 3600
//! max_delivery_count = 10
//! lock_duration_secs = 60
//! delivery_count_rule = "abandon-only"   # or "every-release"
//! feedback_window_ms = 15000
//! feedback_batch_size = 64
//! feedback_ttl_secs = 3600
//! feedback_lock_duration_secs = 60
//! feedback_max_delivery_count = 10
//! d2c_retention = 100
//!
//! [eventhubs]                       # the built-in Event Hubs-compatible endpoint
//! partition_count = 4               # 1 to 32, fixed while the emulator runs
//! retention_secs = 86400            # events older than this are dropped
//! max_events_per_partition = 100000 # and the oldest go first beyond this many
//! max_bytes_per_partition = 33554432
//! consumer_groups = ["analytics"]   # besides $Default
//!
//! [policies.service]                # replaces a well-known policy's keys
//! primary_key = "base64..."
//! secondary_key = "base64..."
//!
//! [[devices]]
//! id = "thermostat-1"
//! primary_key = "base64..."         # optional: generated when absent
//! secondary_key = "base64..."       # optional
//! status = "enabled"                # or "disabled"; default "enabled"
//! ```
//!
//! | file | what |
//! |---|---|
//! | `cli.rs` | the command line ([`Cli`]) and its resolution ([`Config::from_cli`]) |
//! | `file.rs` | the TOML file's schema and [`Config::apply_toml`] |
//! | `validate.rs` | [`Config::validate`]: every range and name check |
//! | `exports.rs` | connection strings and the `env` subcommand's output |
//! | `error.rs` | [`ConfigError`] |
//!
//! Embedders skip the command line: start from [`Config::embedded`], change fields, and call
//! [`Config::validate`].

mod cli;
mod error;
mod exports;
mod file;
mod validate;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::{self, Policy};
use crate::hub::HubSettings;
use crate::tls::{self, TlsError, TlsMaterial};

pub use cli::{Cli, Command};
pub use error::ConfigError;

/// The listening ports. 0 means "pick a free port".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// HTTPS (registry REST, device HTTP, feedback); 443 by default.
    pub https: u16,
    /// MQTT over TLS; 8883 by default.
    pub mqtt: u16,
    /// AMQP over TLS; 5671 by default.
    pub amqp: u16,
    /// Plain HTTP (health, CA download); 8088 by default.
    pub http: u16,
    /// MQTT over plain TCP, for debugging; off by default.
    pub mqtt_tcp: Option<u16>,
    /// Plain AMQP for Event Hubs clients with `UseDevelopmentEmulator=true`; 5672 by default.
    pub eventhubs: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            https: 443,
            mqtt: 8883,
            amqp: 5671,
            http: 8088,
            mqtt_tcp: None,
            eventhubs: 5672,
        }
    }
}

impl Ports {
    /// Every listener on a free port picked by the OS; plain-TCP MQTT off.
    pub fn ephemeral() -> Ports {
        Ports {
            https: 0,
            mqtt: 0,
            amqp: 0,
            http: 0,
            mqtt_tcp: None,
            eventhubs: 0,
        }
    }
}

/// The user's own certificate chain and key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCert {
    /// Certificate chain, server certificate first.
    pub cert: PathBuf,
    /// Private key of the server certificate.
    pub key: PathBuf,
}

/// A device to create in the registry at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedDevice {
    /// The device id.
    pub id: String,
    /// Base64 primary key; `None` lets the registry generate one.
    pub primary_key: Option<String>,
    /// Base64 secondary key; `None` lets the registry generate one.
    pub secondary_key: Option<String>,
    /// `status: enabled` (true) or `disabled`.
    pub enabled: bool,
}

impl SeedDevice {
    /// An enabled device with generated keys.
    pub fn new(id: impl Into<String>) -> SeedDevice {
        SeedDevice {
            id: id.into(),
            primary_key: None,
            secondary_key: None,
            enabled: true,
        }
    }

    /// The same device with fixed keys.
    pub fn with_keys(mut self, primary: impl Into<String>, secondary: impl Into<String>) -> Self {
        self.primary_key = Some(primary.into());
        self.secondary_key = Some(secondary.into());
        self
    }
}

/// The resolved, validated configuration of one emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the listeners bind to.
    pub bind: IpAddr,
    /// Host name in connection strings and the certificate.
    pub hostname: String,
    /// Listening ports.
    pub ports: Ports,
    /// Directory for TLS files and state.
    pub data_dir: PathBuf,
    /// Keep the hub's state in memory only; otherwise it lives in `data_dir` (`crate::persist`).
    pub in_memory: bool,
    /// The user's certificate and key; `None` generates a development CA.
    pub user_cert: Option<UserCert>,
    /// Extra certificate names besides the host name and the defaults.
    pub extra_sans: Vec<String>,
    /// Hub settings; `hub.hub_name` is the hub name.
    pub hub: HubSettings,
    /// Shared access policies.
    pub policies: Vec<Policy>,
    /// Devices created at start.
    pub devices: Vec<SeedDevice>,
    /// Log filter.
    pub log_level: String,
    /// Start with a virtual clock.
    pub virtual_clock: bool,
    /// Most unacknowledged C2D messages per MQTT connection.
    pub mqtt_max_inflight: u16,
    /// The connection cap over all listeners and the time to authenticate.
    pub connections: crate::accept::ConnectionLimits,
}

/// The default data directory: `<per-user data dir>/iothub-emulator`, or `./.iothub-emulator`
/// where the platform has none.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .map(|d| d.join("iothub-emulator"))
        .unwrap_or_else(|| PathBuf::from(".iothub-emulator"))
}

impl Config {
    /// The configuration of an emulator embedded in a process (what [`crate::Emulator::builder`]
    /// starts from): every port 0 (the OS picks), `localhost`, the well-known policies, no
    /// devices, and a zero feedback window so feedback is released at once. Nothing is read
    /// from the command line or the environment.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            hostname: "localhost".to_owned(),
            ports: Ports::ephemeral(),
            data_dir: data_dir.into(),
            // Tests want a clean hub; `EmulatorBuilder::durable` turns the state file on.
            in_memory: true,
            user_cert: None,
            extra_sans: Vec::new(),
            hub: HubSettings {
                hub_name: "localhost".to_owned(),
                feedback_window: Duration::ZERO,
                ..HubSettings::default()
            },
            policies: credentials::well_known_policies(),
            devices: Vec::new(),
            log_level: "info".to_owned(),
            virtual_clock: false,
            mqtt_max_inflight: 16,
            connections: crate::accept::ConnectionLimits::default(),
        }
    }

    /// The same configuration with one more device to seed.
    pub fn with_device(mut self, device: SeedDevice) -> Config {
        self.devices.push(device);
        self
    }

    /// The hub name (the first label of the host name unless set).
    pub fn hub_name(&self) -> &str {
        &self.hub.hub_name
    }

    /// The names the generated server certificate must carry besides the defaults: the host
    /// name and the extra SANs.
    pub fn tls_names(&self) -> Vec<String> {
        std::iter::once(self.hostname.clone())
            .chain(self.extra_sans.iter().cloned())
            .collect()
    }

    /// Loads or generates the TLS material this configuration asks for.
    pub fn load_tls(&self) -> Result<TlsMaterial, TlsError> {
        let user = self
            .user_cert
            .as_ref()
            .map(|u| (u.cert.as_path(), u.key.as_path()));
        TlsMaterial::load_or_generate(&self.data_dir, &self.tls_names(), user)
    }

    /// The CA file clients should trust (it exists once [`Config::load_tls`] has run).
    pub fn ca_path(&self) -> PathBuf {
        tls::ca_path_in(&self.data_dir, self.user_cert.is_some())
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Where a health check should connect: the plain HTTP port on the bind address, or on
    /// loopback when bound to every interface.
    pub fn health_addr(&self) -> SocketAddr {
        let ip = match self.bind {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.ports.http)
    }
}
