//! Starting and stopping a whole emulator: TLS material, listeners, the hub, and every task.
//!
//! [`Emulator::builder`] is the embeddable API: a Rust test starts an emulator in-process on
//! ports the OS picks, reads its endpoints and CA, and stops it with [`RunningEmulator::shutdown`].
//! The binary uses the same path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iothub_protocol::HubError;
use iothub_protocol::registry::{Device, DeviceStatus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Ports, SeedDevice};
use crate::context::{Context, Endpoints, ServerInfo};
use crate::credentials;
use crate::driver::{Clock, HubHandle};
use crate::http::dashboard::{Dashboard, RandomFailed as DashboardRandomFailed};
use crate::http::{WebSocketRoutes, WsPath};
use crate::hub::{Entropy, Hub, HubSettings};
use crate::mqtt::{MqttSettings, MqttState, SessionStore};
use crate::tls::{TlsError, TlsMaterial};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A port could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}{hint}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// How to fix it, when we know.
        hint: String,
    },
    /// A seeded device could not be created.
    #[error("cannot seed device: {0}")]
    Seed(HubError),
    /// The dashboard's secrets could not be drawn.
    #[error(transparent)]
    Dashboard(#[from] DashboardRandomFailed),
    /// The hub's state file cannot be used.
    #[error(transparent)]
    State(#[from] crate::persist::PersistError),
}

/// The entry point for embedding.
pub struct Emulator;

impl Emulator {
    /// A builder with test-friendly defaults: every port picked by the OS, `localhost`, the
    /// well-known policies, a zero feedback window, and a fresh data directory under the
    /// system temp directory.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            config: Config::embedded(fresh_temp_dir()),
        }
    }
}

fn fresh_temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("iothub-emulator-{}-{n}", std::process::id()))
}

/// Configures an emulator before [`EmulatorBuilder::start`].
pub struct EmulatorBuilder {
    config: Config,
}

impl EmulatorBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Where TLS files are kept (reused across starts).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// Keeps the hub's state (devices, twins, queues, feedback) in `dir`, as the command line
    /// does by default: a later start on the same directory continues where this one stopped.
    /// Without it an embedded emulator keeps everything in memory.
    pub fn durable(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self.config.in_memory = false;
        self
    }

    /// The hub name (default `localhost`): tokens signed for `{name}.anything` are this hub's,
    /// as when a device signs for `myhub.azure-devices.net` and connects through
    /// `GatewayHostName=localhost`.
    pub fn hub_name(mut self, name: &str) -> Self {
        self.config.hub.hub_name = name.to_owned();
        self
    }

    /// Hub settings (queue depth, TTL, feedback window, ...). The hub name is kept.
    pub fn hub_settings(mut self, settings: HubSettings) -> Self {
        let name = self.config.hub.hub_name.clone();
        self.config.hub = HubSettings {
            hub_name: name,
            ..settings
        };
        self
    }

    /// Start with a clock the control API can move forward.
    pub fn virtual_clock(mut self, on: bool) -> Self {
        self.config.virtual_clock = on;
        self
    }

    /// Listening ports (0 = any free port).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.config.ports = ports;
        self
    }

    /// A device to create at start.
    pub fn device(mut self, device: SeedDevice) -> Self {
        self.config.devices.push(device);
        self
    }

    /// Most unacknowledged C2D messages per MQTT connection.
    pub fn mqtt_max_inflight(mut self, n: u16) -> Self {
        self.config.mqtt_max_inflight = n;
        self
    }

    /// The connection cap over all listeners and the time a connection has to authenticate.
    pub fn connection_limits(mut self, limits: crate::accept::ConnectionLimits) -> Self {
        self.config.connections = limits;
        self
    }

    /// Binds every listener, starts every task, and returns once the emulator is ready.
    pub async fn start(self) -> Result<RunningEmulator, StartError> {
        start(self.config).await
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            format!(
                ". Port {} is privileged: run as root, grant the binary CAP_NET_BIND_SERVICE (sudo setcap cap_net_bind_service=+ep $(which iothub-emulator)), use the docker-compose file, or pick another port with --{}-port",
                addr.port(),
                what
            )
        } else if source.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                ". Another process uses port {}; stop it or pick another port with --{}-port",
                addr.port(),
                what
            )
        } else {
            String::new()
        };
        StartError::Bind {
            what,
            addr,
            source,
            hint,
        }
    })
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn seed(
    hub: &mut Hub,
    devices: &[SeedDevice],
    now: time::OffsetDateTime,
) -> Result<(), StartError> {
    for d in devices {
        // Kept from an earlier start (durable state): the stored device, keys and all, wins.
        if hub.get_device(&d.id).is_ok() {
            continue;
        }
        let mut device = Device::new(d.id.clone());
        device.authentication.symmetric_key.primary_key = d.primary_key.clone();
        device.authentication.symmetric_key.secondary_key = d.secondary_key.clone();
        if !d.enabled {
            device.status = DeviceStatus::Disabled;
        }
        hub.create_device(device, now).map_err(StartError::Seed)?;
    }
    Ok(())
}

async fn start(config: Config) -> Result<RunningEmulator, StartError> {
    config.validate()?;
    let tls = config.load_tls()?;
    let at = |port| SocketAddr::new(config.bind, port);
    let https = bind("https", at(config.ports.https)).await?;
    let mqtt = bind("mqtt", at(config.ports.mqtt)).await?;
    let amqp = bind("amqp", at(config.ports.amqp)).await?;
    let http = bind("http", at(config.ports.http)).await?;
    let eventhubs = bind("eventhubs", at(config.ports.eventhubs)).await?;
    let mqtt_tcp = match config.ports.mqtt_tcp {
        Some(p) => Some(bind("mqtt-tcp", at(p)).await?),
        None => None,
    };
    let endpoints = Endpoints {
        https: port_of(&https),
        mqtt: port_of(&mqtt),
        amqp: port_of(&amqp),
        http: port_of(&http),
        mqtt_tcp: mqtt_tcp.as_ref().map(port_of),
        eventhubs: port_of(&eventhubs),
    };

    let clock = Clock::new(config.virtual_clock);
    let seed_value = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    // Ids replay from the seed; keys and lock tokens must not, so they come from the OS.
    let mut hub = Hub::new(config.hub.clone(), seed_value).with_entropy(Entropy::os());
    let persister = if config.in_memory {
        None
    } else {
        let started = std::time::Instant::now();
        let (persister, restored) = crate::persist::open(&config.data_dir)?;
        let devices = restored.devices.len();
        let messages: usize = restored.devices.iter().map(|d| d.queue.len()).sum();
        hub.restore(restored, clock.now());
        // From here on changes are written: the seeded devices below are the first.
        hub.track_changes();
        tracing::info!(
            devices,
            messages,
            ms = started.elapsed().as_millis() as u64,
            dir = %config.data_dir.display(),
            "hub state loaded"
        );
        Some(persister)
    };
    seed(&mut hub, &config.devices, clock.now())?;
    let handle = HubHandle::with_persister(hub, clock, persister);
    // Seeded devices are written like any other change.
    handle.run(|_, _| ());

    let info = Arc::new(ServerInfo::new(
        endpoints,
        tls.ca_pem().to_owned(),
        tls.ca_path().display().to_string(),
    ));
    let ctx = Context {
        hub: handle.clone(),
        // Tokens must name this hub: its name, host name or a certificate name.
        auth: Arc::new(
            Authenticator::new(config.policies.clone()).for_hub(
                &config.hub.hub_name,
                crate::tls::DEFAULT_NAMES
                    .iter()
                    .map(|n| (*n).to_owned())
                    .chain([config.hostname.clone()])
                    .chain(config.extra_sans.iter().cloned()),
            ),
        ),
        host_name: config.hostname.clone(),
        hub_name: config.hub.hub_name.clone(),
        info: info.clone(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        admission: crate::accept::Admission::new(
            config.connections,
            crate::accept::raise_fd_limit(),
        ),
    };

    // Each adapter owns its state; the adapters meet only here.
    let mqtt_state = MqttState::new(MqttSettings {
        max_inflight: usize::from(config.mqtt_max_inflight.max(1)),
    });
    let websockets = websocket_routes(&mqtt_state);
    let dashboard = Arc::new(Dashboard::new(&config.hostname, endpoints.http)?);

    let https_tls = tls.server_config(&[b"h2", b"http/1.1"]);
    let plain_tls = tls.server_config(&[]);
    let t = &ctx.tasks;
    t.spawn(handle.clone().run_timers(ctx.shutdown.clone()));
    t.spawn(crate::http::serve_https(
        https,
        https_tls,
        ctx.clone(),
        websockets,
    ));
    t.spawn(crate::http::serve_plain(
        http,
        ctx.clone(),
        Some(dashboard.clone()),
    ));
    t.spawn(crate::mqtt::serve_tls(
        mqtt,
        plain_tls.clone(),
        ctx.clone(),
        mqtt_state.clone(),
    ));
    t.spawn(crate::amqp::serve_tls(amqp, plain_tls, ctx.clone()));
    t.spawn(crate::amqp::serve_plain(eventhubs, ctx.clone()));
    if let Some(l) = mqtt_tcp {
        t.spawn(crate::mqtt::serve_tcp(l, ctx.clone(), mqtt_state.clone()));
    }
    info.set_ready(true);
    Ok(RunningEmulator {
        ctx,
        config,
        tls,
        mqtt: mqtt_state,
        dashboard,
    })
}

/// The protocols served over WebSockets on the HTTPS port, in preference order: MQTT (devices)
/// on `/$iothub/websocket`; AMQP there and on `/$servicebus/websocket`.
fn websocket_routes(mqtt: &MqttState) -> WebSocketRoutes {
    let mqtt = mqtt.clone();
    WebSocketRoutes::new()
        .register(
            crate::mqtt::WEBSOCKET_SUBPROTOCOLS,
            &[WsPath::IotHub],
            move |io, peer, ctx| crate::mqtt::serve_connection(io, peer, ctx, mqtt.clone()),
        )
        .register(
            crate::amqp::WEBSOCKET_SUBPROTOCOLS,
            &[WsPath::IotHub, WsPath::ServiceBus],
            crate::amqp::serve_connection,
        )
}

/// A started emulator. Dropping it stops the listeners; [`RunningEmulator::shutdown`] also
/// waits until every connection and task has ended.
pub struct RunningEmulator {
    ctx: Context,
    config: Config,
    tls: TlsMaterial,
    mqtt: MqttState,
    dashboard: Arc<Dashboard>,
}

impl RunningEmulator {
    /// The web dashboard's URL on the plain-HTTP port, with this start's token.
    pub fn dashboard_url(&self) -> &str {
        self.dashboard.url()
    }

    /// The bound ports.
    pub fn endpoints(&self) -> Endpoints {
        self.ctx.info.endpoints
    }

    /// The CA certificate to trust, PEM.
    pub fn ca_pem(&self) -> &str {
        self.tls.ca_pem()
    }

    /// Where the CA certificate is stored.
    pub fn ca_path(&self) -> &Path {
        self.tls.ca_path()
    }

    /// The hub, for direct inspection and control in tests.
    pub fn hub(&self) -> &HubHandle {
        &self.ctx.hub
    }

    /// The shared adapter context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The MQTT endpoint's persisted sessions (clean session 0), to inspect or drop them in tests.
    pub fn mqtt_sessions(&self) -> &SessionStore {
        &self.mqtt.sessions
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `iothubowner` connection string (host name from the configuration).
    pub fn service_connection_string(&self) -> String {
        self.config.owner_connection_string().unwrap_or_default()
    }

    /// Creates a device with generated keys and returns its connection string.
    pub fn create_device(&self, device_id: &str) -> Result<String, HubError> {
        let d = self
            .ctx
            .hub
            .run(|hub, now| hub.create_device(Device::new(device_id), now))?;
        Ok(credentials::device_connection_string(
            &self.config.hostname,
            device_id,
            d.primary_key().unwrap_or_default(),
        ))
    }

    /// Stops accepting, closes every connection, and waits for every task to end.
    pub async fn shutdown(self) {
        self.ctx.info.set_ready(false);
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
        self.ctx.hub.close_store().await;
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}
