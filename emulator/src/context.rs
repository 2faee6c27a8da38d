//! What every protocol adapter gets: the hub (with its clock and connection registry), the
//! authenticator, names, server facts, and the shutdown signal.
//!
//! Only what every adapter needs belongs here. An adapter's own state (the MQTT sessions, say)
//! lives in the adapter and is handed to it by the server, so this module imports no adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::driver::HubHandle;

/// The ports the emulator listens on (after binding, so port 0 is resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoints {
    /// HTTPS (registry, device and service REST, WebSockets).
    pub https: u16,
    /// MQTT over TLS.
    pub mqtt: u16,
    /// AMQP over TLS.
    pub amqp: u16,
    /// Plain HTTP: health and CA download.
    pub http: u16,
    /// Plain-TCP MQTT, when enabled.
    pub mqtt_tcp: Option<u16>,
    /// Plain AMQP for Event Hubs clients (`UseDevelopmentEmulator=true`).
    pub eventhubs: u16,
}

/// Facts about the running server that health and control routes report.
#[derive(Debug, Default)]
pub struct ServerInfo {
    /// Bound ports.
    pub endpoints: Endpoints,
    /// The CA certificate clients must trust, PEM.
    pub ca_pem: String,
    /// Where the CA certificate is stored.
    pub ca_path: String,
    ready: AtomicBool,
}

impl ServerInfo {
    /// Facts for a server whose listeners are bound.
    pub fn new(endpoints: Endpoints, ca_pem: String, ca_path: String) -> Self {
        ServerInfo {
            endpoints,
            ca_pem,
            ca_path,
            ready: AtomicBool::new(false),
        }
    }

    /// True once every listener is serving.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the server ready (or not, during shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// Shared by every listener and connection of one emulator.
#[derive(Clone)]
pub struct Context {
    /// The hub.
    pub hub: HubHandle,
    /// Checks SAS tokens.
    pub auth: Arc<Authenticator>,
    /// The host name printed in connection strings (e.g. `localhost`).
    pub host_name: String,
    /// The hub name (first label of the host name); feedback `user-id`.
    pub hub_name: String,
    /// Ports, CA and readiness.
    pub info: Arc<ServerInfo>,
    /// Cancelled when the emulator stops: every accept loop and connection must end.
    pub shutdown: CancellationToken,
    /// Tracks every spawned task so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Context {
    /// A context around a fresh in-memory hub with the well-known policies, for tests of a
    /// single adapter. Nothing is bound and no task is spawned.
    pub fn for_tests(settings: crate::hub::HubSettings) -> Context {
        let hub_name = settings.hub_name.clone();
        let hub = HubHandle::new(
            crate::hub::Hub::new(settings, 42),
            crate::driver::Clock::new(true),
        );
        Context {
            hub,
            auth: Arc::new(Authenticator::new(crate::credentials::well_known_policies())),
            host_name: "localhost".to_owned(),
            hub_name,
            info: Arc::new(ServerInfo::default()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The current time as Unix seconds, for SAS expiry checks (follows the virtual clock).
    pub fn now_unix(&self) -> u64 {
        u64::try_from(self.hub.now().unix_timestamp()).unwrap_or(0)
    }
}
