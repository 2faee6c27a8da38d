//! What the emulator's start-up banner says: its ports, hub name, CA file and service
//! connection string, read line by line until the ready line. Shared by the bench and the
//! crash test, which both start the release binary as a child process.

use std::path::PathBuf;

/// The line the emulator prints once every listener serves.
pub const READY_LINE: &str = "iothub-emulator ready";

/// The banner read so far (a field the banner has not named yet is empty or 0).
#[derive(Debug, Default, Clone)]
pub struct Banner {
    /// MQTT over TLS.
    pub mqtt_port: u16,
    /// AMQP over TLS.
    pub amqp_port: u16,
    /// HTTPS.
    pub https_port: u16,
    /// The Event Hubs-compatible endpoint's plain-AMQP development port.
    pub eventhubs_port: u16,
    /// The hub's name.
    pub hub_name: String,
    /// The CA certificate file to trust.
    pub ca_path: Option<PathBuf>,
    /// The `iothubowner` connection string.
    pub service_connection_string: String,
    next_is_connection_string: bool,
}

impl Banner {
    /// Reads one line of output; `true` once it is the ready line.
    pub fn read(&mut self, line: &str) -> bool {
        let t = line.trim();
        if self.next_is_connection_string && !t.is_empty() {
            self.service_connection_string = t.to_owned();
            self.next_is_connection_string = false;
        }
        if t.starts_with("Service connection string") {
            self.next_is_connection_string = true;
        } else if let Some(rest) = t.strip_prefix("MQTT (TLS)") {
            self.mqtt_port = port_in(rest).unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("AMQP (TLS)") {
            self.amqp_port = port_in(rest).unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("hub name") {
            self.hub_name = rest.trim().to_owned();
        } else if let Some(rest) = t.strip_prefix("Event Hubs ") {
            self.eventhubs_port = port_in(rest).unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("HTTPS") {
            self.https_port = port_in(rest).unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("CA file") {
            self.ca_path = Some(PathBuf::from(rest.trim()));
        }
        t == READY_LINE
    }
}

/// The port at the end of `scheme://host:PORT` followed by optional text.
fn port_in(rest: &str) -> Option<u16> {
    let url = rest.split_whitespace().next()?;
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_ports() {
        assert_eq!(port_in("   mqtts://localhost:40123"), Some(40123));
        assert_eq!(
            port_in("   https://localhost:443  (registry, device and service REST)"),
            Some(443)
        );
    }

    #[test]
    fn a_banner_gives_ports_ca_and_connection_string() {
        let mut b = Banner::default();
        for line in [
            "  MQTT (TLS)   mqtts://localhost:45957",
            "  AMQP (TLS)   amqps://localhost:37397 (and more)",
            "  HTTPS        https://localhost:8443/",
            "  CA file      /tmp/ca.pem",
            "Service connection string:",
            "  HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=k",
        ] {
            assert!(!b.read(line), "{line}");
        }
        assert!(b.read("iothub-emulator ready"));
        assert_eq!(
            (b.mqtt_port, b.amqp_port, b.https_port),
            (45957, 37397, 8443)
        );
        assert_eq!(b.ca_path, Some(PathBuf::from("/tmp/ca.pem")));
        assert!(
            b.service_connection_string
                .starts_with("HostName=localhost;")
        );
    }
}
