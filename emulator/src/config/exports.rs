//! What the emulator prints for its users: connection strings and the `env` subcommand's
//! `export` lines.

use std::fmt::Write as _;
use std::path::Path;

use super::{Config, SeedDevice};
use crate::credentials;

impl Config {
    /// The `iothubowner` service connection string.
    pub fn owner_connection_string(&self) -> Option<String> {
        self.policy(credentials::IOTHUBOWNER)
            .map(|p| credentials::service_connection_string(&self.hostname, p))
    }

    /// The Event Hubs-compatible connection string of the built-in endpoint, with the `service`
    /// policy: the TLS form, or with `development_port` the `UseDevelopmentEmulator=true` form.
    pub fn eventhub_connection_string(&self, development_port: Option<u16>) -> Option<String> {
        self.policy(credentials::SERVICE).map(|p| {
            credentials::eventhub_connection_string(
                &self.hostname,
                self.hub_name(),
                p,
                development_port,
            )
        })
    }

    /// A seeded device's connection string, if its primary key is fixed in the configuration.
    pub fn device_connection_string(&self, device: &SeedDevice) -> Option<String> {
        device
            .primary_key
            .as_deref()
            .map(|key| credentials::device_connection_string(&self.hostname, &device.id, key))
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
        // Plain AMQP, so an Event Hubs client needs no CA (iothub-beyond-c2d.md 3.8).
        if let Some(cs) = self.eventhub_connection_string(Some(self.ports.eventhubs)) {
            export("EVENTHUB_CONNECTION_STRING", &cs);
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

/// Quotes `s` for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
