//! The fixed facts of the MQTT connection.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use rustls::ClientConfig;

use crate::api::{API_VERSION, CLIENT_TYPE, QUERY_VALUE};
use crate::backoff::Backoff;
use crate::config::Transport;

/// Largest MQTT packet either way: a 256 KB D2C body plus a topic with its property bag.
pub(super) const MAX_PACKET: usize = 512 * 1024;

/// Fixed facts about the MQTT connection.
pub(crate) struct Params {
    pub device_id: String,
    /// The module id, when the client is a module identity.
    pub module_id: Option<String>,
    /// `HostName` as written: the username's host.
    pub host_name: String,
    /// Where to connect (the gateway, if any) and on which port.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub tls: Arc<ClientConfig>,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
}

impl Params {
    /// The MQTT client id: `{deviceId}`, or `{deviceId}/{moduleId}` for a module.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            None => self.device_id.clone(),
            Some(m) => format!("{}/{m}", self.device_id),
        }
    }

    /// `{HostName}/{clientId}/?api-version=...&DeviceClientType=...` (iothub-protocol.md 3.2;
    /// for a module `{HostName}/{deviceId}/{moduleId}/?...`, iothub-beyond-c2d.md 4).
    pub fn username(&self) -> String {
        username(&self.host_name, &self.client_id())
    }

    /// The WebSocket URL, for MQTT over WebSockets.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("wss://{host}:{}/$iothub/websocket", self.port)
    }

    /// Where the connection goes, for messages.
    pub fn endpoint(&self) -> String {
        match self.transport {
            Transport::MqttWebSocket => self.url(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The MQTT username for a client id (a device id, or `{deviceId}/{moduleId}`).
pub(crate) fn username(host_name: &str, client_id: &str) -> String {
    format!(
        "{host_name}/{client_id}/?api-version={API_VERSION}&DeviceClientType={}",
        utf8_percent_encode(CLIENT_TYPE, QUERY_VALUE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_matches_the_sdks() {
        assert_eq!(
            username("myhub.azure-devices.net", "dev-1"),
            format!(
                "myhub.azure-devices.net/dev-1/?api-version=2021-04-12&DeviceClientType=iothub-device-rust%2F{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(
            username("h.example", "d1/m1").starts_with("h.example/d1/m1/?api-version=2021-04-12&")
        );
    }
}
