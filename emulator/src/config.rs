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
//! Embedders skip the command line: start from [`Config::for_tests`], change fields, and call
//! [`Config::validate`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::credentials::{self, Policy};
use crate::hub::{DeliveryCountRule, HubSettings, SettingsError};
use crate::tls::{self, TlsError, TlsMaterial};

/// The command line. Parse it with [`clap::Parser::parse`], then resolve it with
/// [`Config::from_cli`].
#[derive(Debug, Clone, Parser)]
#[command(
    name = "iothub-emulator",
    version,
    about = "A local Azure IoT Hub emulator: device registry, C2D messages and feedback over MQTT, AMQP and HTTPS"
)]
pub struct Cli {
    /// What to do; without a subcommand, run the emulator.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the listeners bind to (0.0.0.0 or :: for every interface).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_HOST",
        default_value = "127.0.0.1",
        global = true
    )]
    pub host: IpAddr,

    /// Host name clients use: printed in connection strings and put in the certificate.
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_HOSTNAME",
        default_value = "localhost",
        global = true
    )]
    pub hostname: String,

    /// Hub name [default: the first label of --hostname].
    #[arg(long, env = "IOTHUB_EMULATOR_HUB_NAME", global = true)]
    pub hub_name: Option<String>,

    /// HTTPS port: registry REST, device HTTP, feedback (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_HTTPS_PORT",
        default_value_t = 443,
        global = true
    )]
    pub https_port: u16,

    /// MQTT over TLS port (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_MQTT_PORT",
        default_value_t = 8883,
        global = true
    )]
    pub mqtt_port: u16,

    /// AMQP over TLS port (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_AMQP_PORT",
        default_value_t = 5671,
        global = true
    )]
    pub amqp_port: u16,

    /// Plain HTTP port: /health, /ready and the CA download (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_HTTP_PORT",
        default_value_t = 8088,
        global = true
    )]
    pub http_port: u16,

    /// Also serve MQTT over plain TCP on this port, for debugging [default: off].
    #[arg(long, env = "IOTHUB_EMULATOR_MQTT_TCP_PORT", global = true)]
    pub mqtt_tcp_port: Option<u16>,

    /// Directory for the CA, certificates and state [default: the per-user data directory,
    /// e.g. ~/.local/share/iothub-emulator].
    #[arg(long, env = "IOTHUB_EMULATOR_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Server certificate chain (PEM) to use instead of the generated one; needs --key.
    #[arg(long, env = "IOTHUB_EMULATOR_CERT", global = true)]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, env = "IOTHUB_EMULATOR_KEY", global = true)]
    pub key: Option<PathBuf>,

    /// Extra DNS names or IP addresses for the generated certificate (repeat, or separate with
    /// commas).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_SAN",
        value_delimiter = ',',
        global = true
    )]
    pub san: Vec<String>,

    /// TOML file with hub settings, policy keys and devices to seed.
    #[arg(long, env = "IOTHUB_EMULATOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or tracing directives.
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,

    /// Start with a virtual clock that only the test-control API moves.
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_VIRTUAL_CLOCK",
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    pub virtual_clock: bool,

    /// Most unacknowledged C2D messages per MQTT connection.
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_MQTT_MAX_INFLIGHT",
        default_value_t = 16,
        global = true
    )]
    pub mqtt_max_inflight: u16,
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print shell `export` lines: connection strings and CA paths (`eval "$(iothub-emulator env)"`).
    Env,
    /// Exit 0 when a running emulator answers ready on the plain HTTP port (for Docker HEALTHCHECK).
    Healthcheck,
}

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
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            https: 443,
            mqtt: 8883,
            amqp: 5671,
            http: 8088,
            mqtt_tcp: None,
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
}

/// A configuration value that cannot be used. Each names the setting as the user spelled it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("could not read the config file {} (--config): {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {origin}: {source}")]
    ParseFile {
        /// The file, or `<inline>` for a string.
        origin: String,
        /// What the TOML parser reported, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is outside its allowed range.
    #[error("{setting} = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        /// The setting: a flag (`--mqtt-max-inflight`) or a file key (`hub.default_ttl_secs`).
        setting: String,
        /// The value given.
        value: String,
        /// The allowed range, in words.
        allowed: String,
    },
    /// Only one of `--cert` and `--key` was given.
    #[error(
        "{given} was given without {missing}: pass both (PEM files) or neither (a development CA is generated)"
    )]
    IncompleteUserCert {
        /// The flag given.
        given: &'static str,
        /// The flag missing.
        missing: &'static str,
    },
    /// A key is not usable as an IoT Hub symmetric key.
    #[error("{setting} is not a valid key: {reason}")]
    InvalidKey {
        /// Where the key was given, e.g. `policies.service.primary_key`.
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// `[policies.<name>]` names a policy that does not exist.
    #[error("policies.{name}: there is no policy named {name:?}; the policies are {known}")]
    UnknownPolicy {
        /// The name given.
        name: String,
        /// The policies that exist.
        known: String,
    },
    /// A seeded device id breaks the registry's rules.
    #[error("{setting} = {id:?} is not a valid device id: {reason}")]
    InvalidDeviceId {
        /// Where, e.g. `devices[2].id`.
        setting: String,
        /// The id given.
        id: String,
        /// Why.
        reason: String,
    },
    /// Two seeded devices share an id.
    #[error("devices: the device id {id:?} appears more than once")]
    DuplicateDevice {
        /// The id.
        id: String,
    },
    /// A host name or hub name that clients could not use.
    #[error("{setting} = {value:?} is not valid: {reason}")]
    InvalidName {
        /// `--hostname` or `--hub-name`.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A `--san` value that cannot go into a certificate.
    #[error("--san: {0}")]
    InvalidSan(#[source] TlsError),
    /// Two listeners on the same port.
    #[error("{first} and {second} are both {port}: give each listener its own port")]
    PortClash {
        /// The port.
        port: u16,
        /// One flag.
        first: &'static str,
        /// The other flag.
        second: &'static str,
    },
}

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
    policies: BTreeMap<String, PolicyTable>,
    #[serde(default)]
    devices: Vec<DeviceTable>,
}

/// The default data directory: `<per-user data dir>/iothub-emulator`, or `./.iothub-emulator`
/// where the platform has none.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .map(|d| d.join("iothub-emulator"))
        .unwrap_or_else(|| PathBuf::from(".iothub-emulator"))
}

impl Config {
    /// Resolves the command line (and the TOML file it names) into a validated configuration.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let hostname = cli.hostname.trim().to_owned();
        let hub_name = match &cli.hub_name {
            Some(name) => name.trim().to_owned(),
            None => hostname.split('.').next().unwrap_or_default().to_owned(),
        };
        let user_cert = match (&cli.cert, &cli.key) {
            (Some(cert), Some(key)) => Some(UserCert {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::IncompleteUserCert {
                    given: "--cert",
                    missing: "--key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::IncompleteUserCert {
                    given: "--key",
                    missing: "--cert",
                });
            }
        };
        let mut config = Config {
            bind: cli.host,
            hostname,
            ports: Ports {
                https: cli.https_port,
                mqtt: cli.mqtt_port,
                amqp: cli.amqp_port,
                http: cli.http_port,
                mqtt_tcp: cli.mqtt_tcp_port,
            },
            data_dir: cli.data_dir.clone().unwrap_or_else(default_data_dir),
            user_cert,
            extra_sans: cli
                .san
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            hub: HubSettings {
                hub_name,
                ..HubSettings::default()
            },
            policies: credentials::well_known_policies(),
            devices: Vec::new(),
            log_level: cli.log_level.trim().to_owned(),
            virtual_clock: cli.virtual_clock,
            mqtt_max_inflight: cli.mqtt_max_inflight,
        };
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            config.apply_toml(&text, &path.display().to_string())?;
        }
        config.validate()?;
        Ok(config)
    }

    /// A configuration for tests and embedding: every port 0 (the OS picks), `localhost`,
    /// well-known policies, no devices, and a zero feedback window so feedback is released at
    /// once. Nothing is read from the environment.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            hostname: "localhost".to_owned(),
            ports: Ports::ephemeral(),
            data_dir: data_dir.into(),
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
        }
    }

    /// The same configuration with one more device to seed.
    pub fn with_device(mut self, device: SeedDevice) -> Config {
        self.devices.push(device);
        self
    }

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

    /// Checks every value; the error names the first bad setting and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_hostname(&self.hostname)?;
        check_hub_name(&self.hub.hub_name)?;
        self.hub
            .validate()
            .map_err(|e| hub_setting_error(&self.hub, e))?;
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

    /// The `iothubowner` service connection string.
    pub fn owner_connection_string(&self) -> Option<String> {
        self.policy(credentials::IOTHUBOWNER)
            .map(|p| credentials::service_connection_string(&self.hostname, p))
    }

    /// A seeded device's connection string, if its primary key is fixed in the configuration.
    pub fn device_connection_string(&self, device: &SeedDevice) -> Option<String> {
        device
            .primary_key
            .as_deref()
            .map(|key| credentials::device_connection_string(&self.hostname, &device.id, key))
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

    /// The `env` subcommand's output: POSIX shell `export` lines for the owner connection
    /// string, the first seeded device's connection string and the CA at `ca_path`.
    pub fn env_exports(&self, ca_path: &Path) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# IoT Hub emulator at {} (hub {}): development credentials, public by design",
            self.hostname,
            self.hub_name()
        );
        let mut export = |name: &str, value: &str| {
            let _ = writeln!(out, "export {name}={}", shell_quote(value));
        };
        if let Some(cs) = self.owner_connection_string() {
            export("IOTHUB_CONNECTION_STRING", &cs);
        }
        let first_device = self.devices.first();
        if let Some(cs) = first_device.and_then(|d| self.device_connection_string(d)) {
            export("IOTHUB_DEVICE_CONNECTION_STRING", &cs);
        }
        let ca = ca_path.display().to_string();
        for name in [
            "IOTHUB_CA_CERT",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        ] {
            export(name, &ca);
        }
        if let Some(d) = first_device.filter(|d| d.primary_key.is_none()) {
            let _ = writeln!(
                out,
                "# device {:?} has no primary_key in the config file, so its key is generated at start; \
                 set one to get IOTHUB_DEVICE_CONNECTION_STRING here",
                d.id
            );
        }
        out.push_str(
            "# SSL_CERT_FILE and REQUESTS_CA_BUNDLE replace the default trust store in this shell\n",
        );
        out
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
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

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["iothub-emulator"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_cli(&parse(args))
    }

    /// A unique temporary file, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "iothub-emulator-config-{}-{n}.toml",
                std::process::id()
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn defaults() {
        let c = config(&["--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.hub_name(), "localhost");
        assert_eq!(c.ports, Ports::default());
        assert_eq!(
            (c.ports.https, c.ports.mqtt, c.ports.amqp, c.ports.http),
            (443, 8883, 5671, 8088)
        );
        assert_eq!(c.ports.mqtt_tcp, None);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.user_cert, None);
        assert!(c.extra_sans.is_empty());
        assert_eq!(
            c.hub,
            HubSettings {
                hub_name: "localhost".into(),
                ..HubSettings::default()
            }
        );
        assert_eq!(c.policies, credentials::well_known_policies());
        assert!(c.devices.is_empty());
        assert_eq!(c.log_level, "info");
        assert!(!c.virtual_clock);
        assert_eq!(c.mqtt_max_inflight, 16);
        assert_eq!(parse(&[]).command, None);
        assert_eq!(c.health_addr(), "127.0.0.1:8088".parse().unwrap());
    }

    #[test]
    fn default_data_dir_is_per_user() {
        let c = config(&[]).unwrap();
        assert_eq!(c.data_dir, default_data_dir());
        assert!(
            c.data_dir.ends_with("iothub-emulator") || c.data_dir.ends_with(".iothub-emulator")
        );
    }

    #[test]
    fn every_flag_has_an_env_var_named_after_it() {
        let cmd = Cli::command();
        let mut count = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let expected = format!(
                "IOTHUB_EMULATOR_{}",
                long.to_ascii_uppercase().replace('-', "_")
            );
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            count += 1;
        }
        assert_eq!(count, 16);
        let mqtt = cmd
            .get_arguments()
            .find(|a| a.get_id() == "mqtt_port")
            .unwrap();
        assert_eq!(
            mqtt.get_env().and_then(|e| e.to_str()),
            Some("IOTHUB_EMULATOR_MQTT_PORT")
        );
        cmd.debug_assert();
    }

    #[test]
    fn flags_are_parsed() {
        let cert = PathBuf::from("/c.pem");
        let key = PathBuf::from("/k.pem");
        let c = config(&[
            "--host",
            "0.0.0.0",
            "--hostname",
            "myhub.azure-devices.localhost",
            "--https-port",
            "8443",
            "--mqtt-port",
            "0",
            "--amqp-port",
            "0",
            "--http-port",
            "9000",
            "--mqtt-tcp-port",
            "1883",
            "--data-dir",
            "/d",
            "--cert",
            "/c.pem",
            "--key",
            "/k.pem",
            "--san",
            "a.example,10.0.0.1",
            "--san",
            "b.example",
            "--log-level",
            "debug",
            "--virtual-clock",
            "--mqtt-max-inflight",
            "4",
        ])
        .unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.hub_name(), "myhub");
        assert_eq!(
            c.ports,
            Ports {
                https: 8443,
                mqtt: 0,
                amqp: 0,
                http: 9000,
                mqtt_tcp: Some(1883)
            }
        );
        assert_eq!(c.user_cert, Some(UserCert { cert, key }));
        assert_eq!(c.extra_sans, ["a.example", "10.0.0.1", "b.example"]);
        assert_eq!(
            c.tls_names(),
            [
                "myhub.azure-devices.localhost",
                "a.example",
                "10.0.0.1",
                "b.example"
            ]
        );
        assert_eq!(c.log_level, "debug");
        assert!(c.virtual_clock);
        assert_eq!(c.mqtt_max_inflight, 4);
        assert_eq!(c.health_addr(), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.ca_path(), PathBuf::from("/d/tls/user-ca.pem"));

        let c = config(&["--hostname", "a.b.c", "--hub-name", "other"]).unwrap();
        assert_eq!(c.hub_name(), "other");
    }

    #[test]
    fn subcommands_accept_flags_before_or_after() {
        let cli = parse(&["env", "--data-dir", "/x"]);
        assert_eq!(cli.command, Some(Command::Env));
        assert_eq!(cli.data_dir, Some(PathBuf::from("/x")));
        let cli = parse(&["--http-port", "1234", "healthcheck"]);
        assert_eq!(cli.command, Some(Command::Healthcheck));
        assert_eq!(cli.http_port, 1234);
    }

    #[test]
    fn toml_sets_every_field() {
        let file = TempFile::new(&format!(
            r#"
            [hub]
            queue_depth = 7
            default_ttl_secs = 120
            max_delivery_count = 3
            lock_duration_secs = 5
            delivery_count_rule = "every-release"
            feedback_window_ms = 250
            feedback_batch_size = 2
            feedback_ttl_secs = 600
            feedback_lock_duration_secs = 30
            feedback_max_delivery_count = 4
            d2c_retention = 0

            [policies.service]
            primary_key = "{KEY_A}"
            secondary_key = "{KEY_B}"

            [policies.iothubowner]
            secondary_key = "{KEY_A}"

            [[devices]]
            id = "d1"
            primary_key = "{KEY_A}"
            secondary_key = "{KEY_B}"

            [[devices]]
            id = "d2"
            status = "disabled"

            [[devices]]
            id = "d3"
            status = "enabled"
            "#
        ));
        let path = file.0.to_str().unwrap();
        let c = config(&["--config", path, "--hostname", "h.example"]).unwrap();
        let expected = HubSettings {
            hub_name: "h".into(),
            queue_depth: 7,
            default_ttl: Duration::from_secs(120),
            max_delivery_count: 3,
            lock_duration: Duration::from_secs(5),
            delivery_count_rule: DeliveryCountRule::EveryRelease,
            feedback_window: Duration::from_millis(250),
            feedback_batch_size: 2,
            feedback_ttl: Duration::from_secs(600),
            feedback_lock_duration: Duration::from_secs(30),
            feedback_max_delivery_count: 4,
            d2c_retention: 0,
            routes: Default::default(),
        };
        assert_eq!(c.hub, expected);
        let service = c.policy("service").unwrap();
        assert_eq!(
            (service.primary_key.as_str(), service.secondary_key.as_str()),
            (KEY_A, KEY_B)
        );
        let wk = credentials::well_known_policies();
        let owner = c.policy("iothubowner").unwrap();
        assert_eq!(owner.primary_key, wk[0].primary_key);
        assert_eq!(owner.secondary_key, KEY_A);
        assert_eq!(c.policy("device"), wk.iter().find(|p| p.name == "device"));
        assert_eq!(
            c.devices,
            [
                SeedDevice::new("d1").with_keys(KEY_A, KEY_B),
                SeedDevice {
                    enabled: false,
                    ..SeedDevice::new("d2")
                },
                SeedDevice::new("d3"),
            ]
        );
        // "abandon-only" parses too.
        let mut c = Config::for_tests("/x");
        c.apply_toml("[hub]\ndelivery_count_rule = \"abandon-only\"", "<inline>")
            .unwrap();
        assert_eq!(c.hub.delivery_count_rule, DeliveryCountRule::AbandonOnly);
    }

    #[test]
    fn toml_typos_and_bad_types_are_errors() {
        for (text, needle) in [
            ("[hub]\nqueue_dept = 5", "queue_dept"),
            ("[hubb]\n", "hubb"),
            ("[hub]\nqueue_depth = -1", "queue_depth"),
            ("[hub]\ndelivery_count_rule = \"sometimes\"", "sometimes"),
            ("[[devices]]\nid = \"d\"\nstatus = \"off\"", "off"),
            ("[[devices]]\nid = \"d\"\nkey = \"x\"", "key"),
            ("[[devices]]\nprimary_key = \"x\"", "id"),
            ("[policies.service]\nprimary = \"x\"", "primary"),
        ] {
            let err = Config::for_tests("/x")
                .apply_toml(text, "test.toml")
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::ParseFile { .. }),
                "{text}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("test.toml") && msg.contains(needle),
                "{text}: {msg}"
            );
        }
        let missing = std::env::temp_dir().join("iothub-emulator-no-such-config.toml");
        let err = config(&["--config", missing.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
        assert!(err.to_string().contains("--config"), "{err}");
    }

    /// Each validation error names the setting, as the user wrote it, and what is allowed.
    #[test]
    fn validation_errors_name_their_setting() {
        let toml_err = |text: &str| {
            let mut c = Config::for_tests("/x");
            c.apply_toml(text, "t.toml").unwrap();
            c.validate().unwrap_err()
        };
        for (text, setting, allowed) in [
            ("[hub]\nqueue_depth = 0", "hub.queue_depth", "1 to 100000"),
            (
                "[hub]\ndefault_ttl_secs = 59",
                "hub.default_ttl_secs = 59",
                "1 minute to 2 days",
            ),
            (
                "[hub]\nmax_delivery_count = 101",
                "hub.max_delivery_count",
                "1 to 100",
            ),
            (
                "[hub]\nlock_duration_secs = 0",
                "hub.lock_duration_secs = 0",
                "1 second",
            ),
            (
                "[hub]\nfeedback_window_ms = 3600001",
                "hub.feedback_window_ms = 3600001",
                "0 to 1 hour",
            ),
            (
                "[hub]\nfeedback_batch_size = 0",
                "hub.feedback_batch_size",
                "1 to 1000",
            ),
            (
                "[hub]\nfeedback_ttl_secs = 1",
                "hub.feedback_ttl_secs = 1",
                "1 minute",
            ),
            (
                "[hub]\nfeedback_lock_duration_secs = 4",
                "hub.feedback_lock_duration_secs = 4",
                "5 to 300",
            ),
            (
                "[hub]\nfeedback_max_delivery_count = 0",
                "hub.feedback_max_delivery_count",
                "1 to 100",
            ),
            (
                "[hub]\nd2c_retention = 1000001",
                "hub.d2c_retention",
                "0 to 1000000",
            ),
        ] {
            let err = toml_err(text);
            assert!(
                matches!(err, ConfigError::OutOfRange { .. }),
                "{text}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(setting) && msg.contains(allowed),
                "{text}: {msg}"
            );
        }

        let err = toml_err("[policies.service]\nprimary_key = \"not base64!\"");
        assert!(
            matches!(&err, ConfigError::InvalidKey { setting, .. } if setting == "policies.service.primary_key")
        );
        let err = toml_err("[policies.device]\nsecondary_key = \"c2hvcnQ=\"");
        assert!(
            err.to_string().contains("policies.device.secondary_key"),
            "{err}"
        );
        assert!(err.to_string().contains("16 to 64 bytes"), "{err}");
        let err = toml_err("[[devices]]\nid = \"d1\"\nprimary_key = \"%%%\"");
        assert!(err.to_string().contains("devices[0].primary_key"), "{err}");
        let err = toml_err("[[devices]]\nid = \"ok\"\n[[devices]]\nid = \"bad/id\"");
        assert!(
            matches!(&err, ConfigError::InvalidDeviceId { setting, .. } if setting == "devices[1].id")
        );
        assert!(err.to_string().contains("bad/id"), "{err}");
        let err = toml_err("[[devices]]\nid = \"d\"\n[[devices]]\nid = \"d\"");
        assert!(matches!(&err, ConfigError::DuplicateDevice { id } if id == "d"));

        let err = Config::for_tests("/x")
            .apply_toml("[policies.owner]\nprimary_key = \"x\"", "t.toml")
            .unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownPolicy { name, .. } if name == "owner"));
        assert!(err.to_string().contains("iothubowner"), "{err}");

        let err = config(&["--cert", "/c.pem"]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::IncompleteUserCert {
                given: "--cert",
                missing: "--key"
            }
        ));
        assert!(err.to_string().contains("--key"), "{err}");
        let err = config(&["--key", "/k.pem"]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::IncompleteUserCert { given: "--key", .. }
        ));

        let err = config(&["--mqtt-max-inflight", "0"]).unwrap_err();
        assert!(err.to_string().contains("--mqtt-max-inflight"), "{err}");
        let err = config(&["--http-port", "8883"]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::PortClash {
                port: 8883,
                first: "--mqtt-port",
                second: "--http-port"
            }
        ));
        assert!(
            config(&["--https-port", "0", "--mqtt-port", "0"]).is_ok(),
            "0 never clashes"
        );
        let err = config(&["--san", "ok.example,bad name"]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSan(_)), "{err:?}");
        assert!(
            err.to_string().contains("--san") && err.to_string().contains("bad name"),
            "{err}"
        );
        let err = config(&["--hostname", "localhost:8883"]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidName {
                    setting: "--hostname",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = config(&["--hub-name", "a.b"]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidName {
                    setting: "--hub-name",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = config(&["--hub-name", ""]).unwrap_err();
        assert!(err.to_string().contains("--hub-name"), "{err}");
    }

    #[test]
    fn for_tests_is_valid_and_ephemeral() {
        let c =
            Config::for_tests("/data").with_device(SeedDevice::new("d1").with_keys(KEY_A, KEY_B));
        c.validate().unwrap();
        assert_eq!(c.ports, Ports::ephemeral());
        assert_eq!(c.hub.feedback_window, Duration::ZERO);
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert_eq!(c.ca_path(), PathBuf::from("/data/tls/ca.pem"));
        assert_eq!(
            c.device_connection_string(&c.devices[0]).unwrap(),
            format!("HostName=localhost;DeviceId=d1;SharedAccessKey={KEY_A}")
        );
    }

    #[test]
    fn env_exports() {
        let c =
            Config::for_tests("/data").with_device(SeedDevice::new("d1").with_keys(KEY_A, KEY_B));
        let out = c.env_exports(Path::new("/data/tls/ca.pem"));
        let owner = &credentials::well_known_policies()[0];
        assert!(out.contains(&format!(
            "export IOTHUB_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={}'\n",
            owner.primary_key
        )), "{out}");
        assert!(out.contains(&format!(
            "export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=d1;SharedAccessKey={KEY_A}'\n"
        )), "{out}");
        for var in [
            "IOTHUB_CA_CERT",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        ] {
            assert!(
                out.contains(&format!("export {var}='/data/tls/ca.pem'\n")),
                "{out}"
            );
        }
        assert!(
            out.lines()
                .all(|l| l.starts_with("export ") || l.starts_with("# ")),
            "{out}"
        );

        let c = Config::for_tests("/data").with_device(SeedDevice::new("d1"));
        let out = c.env_exports(Path::new("/data/tls/ca.pem"));
        assert!(!out.contains("IOTHUB_DEVICE_CONNECTION_STRING="), "{out}");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn load_tls_uses_hostname_and_sans() {
        let dir =
            std::env::temp_dir().join(format!("iothub-emulator-config-tls-{}", std::process::id()));
        let mut c = Config::for_tests(&dir);
        c.hostname = "myhub.azure-devices.localhost".into();
        c.extra_sans = vec!["10.9.8.7".into()];
        let material = c.load_tls().unwrap();
        assert_eq!(material.ca_path(), c.ca_path());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
