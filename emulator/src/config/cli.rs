//! The command line: flags, their environment variables, and their resolution into a [`Config`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{Config, ConfigError, Ports, UserCert, default_data_dir};
use crate::credentials;
use crate::hub::HubSettings;

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

    /// Plain HTTP port: /health, /ready, the CA download and the web dashboard (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_HTTP_PORT",
        default_value_t = 8088,
        global = true
    )]
    pub http_port: u16,

    /// Plain AMQP port (no TLS) for Event Hubs clients whose connection string says
    /// `UseDevelopmentEmulator=true` (0 picks a free port).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_EVENTHUBS_PORT",
        default_value_t = 5672,
        global = true
    )]
    pub eventhubs_port: u16,

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

    /// Most open connections over all listeners (lowered to the file-descriptor limit).
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_MAX_CONNECTIONS",
        default_value_t = 100_000,
        global = true
    )]
    pub max_connections: usize,

    /// Seconds a new connection may take to authenticate before it is closed.
    #[arg(
        long,
        env = "IOTHUB_EMULATOR_PRE_AUTH_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub pre_auth_timeout_secs: u64,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print shell `export` lines: connection strings and CA paths (`eval "$(iothub-emulator env)"`).
    Env,
    /// Exit 0 when a running emulator answers ready on the plain HTTP port (for Docker HEALTHCHECK).
    Healthcheck,
    /// Print device telemetry as it arrives, like `az iot hub monitor-events` (read from the
    /// built-in Event Hubs-compatible endpoint with the Rust events consumer).
    Monitor(crate::monitor::MonitorArgs),
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
                eventhubs: cli.eventhubs_port,
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
            connections: crate::accept::ConnectionLimits {
                max: cli.max_connections,
                pre_auth: std::time::Duration::from_secs(cli.pre_auth_timeout_secs),
            },
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
}
