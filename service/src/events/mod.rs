//! Reading device telemetry from the hub's built-in Event Hubs-compatible endpoint
//! (iothub-beyond-c2d.md 3): [`EventConsumer`].
//!
//! Every device-to-cloud message a hub accepts lands in a partitioned event log that back ends
//! read over AMQP as an Event Hub. This module is such a reader: it takes either connection
//! string a real hub gives out and reads one partition or all, from a start position, as an
//! async stream of [`Event`]s.
//!
//! | connection string | what the consumer does |
//! |---|---|
//! | `Endpoint=sb://<host>/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=<name>` (the portal's "Event Hub-compatible endpoint") | AMQP over TLS on 5671 (or the port in `Endpoint`), SASL `ANONYMOUS`, CBS put-token for `sb://<host>/<name>` signed the Event Hubs way |
//! | the same with `UseDevelopmentEmulator=true` (the emulator's `EVENTHUB_CONNECTION_STRING`) | the same over plain AMQP on 5672: no CA needed |
//! | `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` (IoT Hub) | first asks the hub host where its endpoint is (`amqp:link:redirect`), then as above |
//!
//! The same code reads from a real hub and from the emulator; options (trust, ports, token
//! lifetime, timeouts) have the names they have on [`ServiceClientBuilder`](crate::ServiceClientBuilder).

mod connection_string;
mod event;
mod link;
mod redirect;
mod stream;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::types::primitives::{OrderedMap, Value};
use iothub_protocol::client::{self, TokenPolicy};
use iothub_protocol::connection_string::ServiceConnectionString;
use iothub_protocol::tls::Trust;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout;

pub use connection_string::{EventHubConnectionString, EventHubCredential};
pub use event::{DEVICE_ID_ANNOTATION, Event, MESSAGE_SOURCE_ANNOTATION, MODULE_ID_ANNOTATION};
pub use iothub_protocol::EventPosition;
pub use stream::EventStream;

use crate::Error;
use crate::amqp::socket::AmqpTransport;
use link::{Conn, Endpoint, LinkSettings};

/// The consumer group every event hub has.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";
/// The port of a `UseDevelopmentEmulator=true` endpoint without one.
pub const DEFAULT_DEVELOPMENT_PORT: u16 = 5672;
/// Events each partition's link may have in flight before the reader takes them (the Event
/// Hubs clients' default prefetch).
pub const DEFAULT_PREFETCH: u32 = 300;
/// Events waiting in a stream before the links stop being read.
const STREAM_QUEUE: usize = 1024;

/// Information about the event hub (`$management`, `com.microsoft:eventhub`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventHubProperties {
    /// The event hub name.
    pub name: String,
    /// When it was created.
    pub created_at: Option<OffsetDateTime>,
    /// Its partition ids, `"0"`, `"1"`, ...
    pub partition_ids: Vec<String>,
}

/// Runtime information about one partition (`$management`, `com.microsoft:partition`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionProperties {
    /// The event hub name.
    pub event_hub_name: String,
    /// The partition id.
    pub id: String,
    /// Sequence number of the first event still retained.
    pub begin_sequence_number: i64,
    /// Sequence number of the last event enqueued (`-1` when there has been none).
    pub last_enqueued_sequence_number: i64,
    /// Offset of the last event enqueued.
    pub last_enqueued_offset: String,
    /// When the last event was enqueued.
    pub last_enqueued_time: Option<OffsetDateTime>,
    /// True when the partition holds no events.
    pub is_empty: bool,
}

/// What the connection string named.
#[derive(Debug, Clone)]
enum Source {
    /// The Event Hubs-compatible endpoint itself.
    EventHub(Endpoint),
    /// An IoT Hub, to be asked for its endpoint.
    IotHub {
        connection_string: ServiceConnectionString,
        host: String,
        port: u16,
    },
}

/// Configures an [`EventConsumer`]; from [`EventConsumer::builder`].
///
/// ```no_run
/// use iothub_service::events::EventConsumer;
///
/// # fn run() -> Result<(), iothub_service::Error> {
/// let consumer = EventConsumer::builder("HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=...")?
///     .consumer_group("monitoring")
///     .trust_ca_file("/etc/iothub-emulator/ca.pem")
///     .build()?;
/// # let _ = consumer; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct EventConsumerBuilder {
    connection_string: ParsedConnectionString,
    consumer_group: String,
    event_hub_name: Option<String>,
    trust: Trust,
    amqp_transport: AmqpTransport,
    amqp_port: Option<u16>,
    tokens: TokenPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
    prefetch: u32,
    owner_level: Option<i64>,
}

#[derive(Debug, Clone)]
enum ParsedConnectionString {
    EventHub(EventHubConnectionString),
    IotHub(ServiceConnectionString),
}

impl EventConsumerBuilder {
    /// A builder for an Event Hubs-compatible connection string (it has `Endpoint=`) or an IoT
    /// Hub service connection string (`HostName=`), with every option at its default.
    pub fn new(connection_string: &str) -> Result<Self, Error> {
        let is_event_hub = connection_string.split(';').any(|part| {
            part.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("Endpoint"))
        });
        let parsed = if is_event_hub {
            ParsedConnectionString::EventHub(EventHubConnectionString::from_str(connection_string)?)
        } else {
            ParsedConnectionString::IotHub(ServiceConnectionString::from_str(connection_string)?)
        };
        Ok(EventConsumerBuilder {
            connection_string: parsed,
            consumer_group: DEFAULT_CONSUMER_GROUP.to_owned(),
            event_hub_name: None,
            trust: Trust::default(),
            amqp_transport: AmqpTransport::default(),
            amqp_port: None,
            tokens: TokenPolicy::default(),
            connect_timeout: client::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: client::DEFAULT_REQUEST_TIMEOUT,
            prefetch: DEFAULT_PREFETCH,
            owner_level: None,
        })
    }

    /// The consumer group to read as (default [`DEFAULT_CONSUMER_GROUP`], `$Default`).
    pub fn consumer_group(mut self, name: impl Into<String>) -> Self {
        self.consumer_group = name.into();
        self
    }

    /// The event hub name, for an Event Hubs connection string without `EntityPath`.
    pub fn event_hub_name(mut self, name: impl Into<String>) -> Self {
        self.event_hub_name = Some(name.into());
        self
    }

    /// Also trusts the CA certificate(s) in this PEM text (for example the emulator's CA).
    pub fn trust_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.trust.add_ca_pem(pem.as_ref());
        self
    }

    /// Also trusts the CA certificate(s) in this PEM file, read by [`build`](Self::build).
    pub fn trust_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.trust.add_ca_file(path.as_ref());
        self
    }

    /// Whether to trust the CA named by [`CA_CERT_ENV`](crate::CA_CERT_ENV) (default `true`).
    pub fn trust_ca_from_env(mut self, read: bool) -> Self {
        self.trust.from_env(read);
        self
    }

    /// Whether to trust the platform's root certificates (default `true`).
    pub fn platform_roots(mut self, trust: bool) -> Self {
        self.trust.platform_roots(trust);
        self
    }

    /// How events travel (default [`AmqpTransport::Tls`] on 5671; [`AmqpTransport::WebSocket`]
    /// on 443, path `/$servicebus/websocket` on the Event Hubs-compatible endpoint and
    /// `/$iothub/websocket` on the hub host, for networks that only let HTTPS through). The
    /// development form (`UseDevelopmentEmulator=true`) is plain AMQP only.
    pub fn amqp_transport(mut self, transport: AmqpTransport) -> Self {
        self.amqp_transport = transport;
        self
    }

    /// The port of the first AMQP connection: the Event Hubs endpoint's for an Event Hubs
    /// connection string (default: the port in `Endpoint`, else 5671, or 5672 with
    /// `UseDevelopmentEmulator=true`, or 443 over WebSockets), the hub host's for an IoT Hub
    /// connection string (default: a `:port` in `HostName`, else 5671, or 443 over
    /// WebSockets). After a redirect, the port the hub names is used (over WebSockets, this
    /// port again: the hub names its AMQP port).
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// Lifetime of the SAS tokens the consumer signs (default one hour, at least
    /// [`MIN_TOKEN_LIFETIME`](crate::MIN_TOKEN_LIFETIME)); they are renewed on the open
    /// connection.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.tokens.lifetime = lifetime;
        self
    }

    /// How long before a token expires the consumer replaces it (default two minutes, or half
    /// the lifetime if shorter).
    pub fn token_renewal_margin(mut self, margin: Duration) -> Self {
        self.tokens.renewal_margin = Some(margin);
        self
    }

    /// Limit for opening a connection (including the redirect) and attaching a link (default
    /// 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit for one `$management` request and one token renewal (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Link credit per partition: how many events may be on their way before they are read
    /// (default [`DEFAULT_PREFETCH`]; at least 1).
    pub fn prefetch(mut self, events: u32) -> Self {
        self.prefetch = events;
        self
    }

    /// Reads as an exclusive owner at this level (`com.microsoft:epoch`): a reader with a
    /// higher level takes the partition over, and this one's stream then yields the hub's
    /// error (`amqp:link:stolen`). Default: none (readers share partitions).
    pub fn owner_level(mut self, level: i64) -> Self {
        self.owner_level = Some(level);
        self
    }

    /// Options that weaken security, for tests against servers you control.
    pub fn dangerous(self) -> DangerousEventConsumerBuilder {
        DangerousEventConsumerBuilder { inner: self }
    }

    /// Checks the options and returns the consumer (not connected).
    ///
    /// Errors: [`Error::InvalidOption`] for a bad token lifetime, a zero timeout or prefetch,
    /// an empty consumer group or no event hub name; [`Error::Tls`] when TLS is needed and the
    /// trusted roots cannot be loaded.
    pub fn build(self) -> Result<EventConsumer, Error> {
        self.tokens.validate().map_err(Error::invalid_option)?;
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid_option(format!("{name} must not be zero")));
            }
        }
        if self.prefetch == 0 {
            return Err(Error::invalid_option("prefetch must be at least 1"));
        }
        if self.consumer_group.trim().is_empty() || self.consumer_group.contains('/') {
            return Err(Error::invalid_option(
                "consumer_group must be a name such as $Default",
            ));
        }
        let (source, needs_tls) = match self.connection_string {
            ParsedConnectionString::EventHub(cs) => {
                let entity = cs
                    .entity_path
                    .clone()
                    .or(self.event_hub_name)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| {
                        Error::invalid_option(
                            "the connection string has no EntityPath; add EntityPath=<event hub name> or call event_hub_name",
                        )
                    })?;
                let tls = !cs.use_development_emulator;
                if !tls && self.amqp_transport == AmqpTransport::WebSocket {
                    return Err(Error::invalid_option(
                        "the development connection string (UseDevelopmentEmulator=true) is plain AMQP on 5672; for WebSockets use the TLS form (without UseDevelopmentEmulator)",
                    ));
                }
                // The port in `Endpoint` is an AMQP port; WebSockets use the transport's.
                let port = self.amqp_port.unwrap_or_else(|| match self.amqp_transport {
                    AmqpTransport::Tls => cs.port(),
                    AmqpTransport::WebSocket => self.amqp_transport.default_port(),
                });
                let endpoint = Endpoint {
                    port,
                    host: cs.host,
                    tls,
                    entity,
                    credential: cs.credential,
                };
                (Source::EventHub(endpoint), tls)
            }
            ParsedConnectionString::IotHub(cs) => {
                let (host, port) = client::endpoint(
                    &cs.host_name,
                    self.amqp_port,
                    self.amqp_transport.default_port(),
                );
                let host = host.to_owned();
                (
                    Source::IotHub {
                        connection_string: cs,
                        host,
                        port,
                    },
                    true,
                )
            }
        };
        // A plain development endpoint needs no roots; a redirect may still lead to TLS, so
        // IoT Hub strings always load them.
        let tls = if needs_tls {
            Some(self.trust.load()?.client_config(&[])?)
        } else {
            None
        };
        Ok(EventConsumer {
            inner: Arc::new(Inner {
                source,
                consumer_group: self.consumer_group,
                settings: LinkSettings {
                    tls,
                    transport: self.amqp_transport,
                    tokens: self.tokens,
                    connect_timeout: self.connect_timeout,
                    request_timeout: self.request_timeout,
                    prefetch: self.prefetch,
                    owner_level: self.owner_level,
                },
                state: Mutex::new(State::default()),
            }),
        })
    }
}

/// Options that weaken security; see [`EventConsumerBuilder::dangerous`].
#[derive(Debug, Clone)]
#[must_use = "call a method, then continue with the builder it returns"]
pub struct DangerousEventConsumerBuilder {
    inner: EventConsumerBuilder,
}

impl DangerousEventConsumerBuilder {
    /// Accepts any server certificate. Never use it against a real hub.
    pub fn accept_any_server_certificate(mut self) -> EventConsumerBuilder {
        self.inner.trust.accept_any_certificate();
        self.inner
    }
}

/// Reads device telemetry from a hub's built-in Event Hubs-compatible endpoint.
///
/// Cheap to clone; clones share one AMQP connection, opened on first use (after the redirect,
/// for an IoT Hub connection string) and reopened when it drops. Each
/// [`receive`](Self::receive) or [`receive_all`](Self::receive_all) attaches its own links
/// and returns once they are attached, so [`EventPosition::Latest`] means "what is sent from
/// now on".
///
/// # Example
///
/// Against the emulator's `UseDevelopmentEmulator=true` string (plain AMQP, no CA); against a
/// real hub, pass its IoT Hub or Event Hubs-compatible connection string instead.
///
/// ```
/// use futures_util::StreamExt;
/// use iothub_service::events::{EventConsumer, EventPosition};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = iothub_emulator::Emulator::builder().start().await?;
/// # emulator.create_device("thermostat")?;
/// # let mut m = iothub_protocol::Message::new(r#"{"temperature": 21.5}"#);
/// # m.properties.insert("alert", "false");
/// # emulator.hub().run(|hub, now| hub.send_telemetry(
/// #     &iothub_emulator::hub::event_log::Origin::device("thermostat"), m, now))?;
/// # let connection_string = emulator.config()
/// #     .eventhub_connection_string(Some(emulator.endpoints().eventhubs)).unwrap();
/// // Endpoint=sb://localhost/;SharedAccessKeyName=service;...;UseDevelopmentEmulator=true
/// let consumer = EventConsumer::from_connection_string(&connection_string)?;
/// let mut events = consumer.receive_all(EventPosition::Earliest).await?;
/// while let Some(event) = events.next().await {
///     let event = event?;
///     println!(
///         "{}: {} {:?}",
///         event.device_id.as_deref().unwrap_or("?"),
///         String::from_utf8_lossy(event.body()),
///         event.properties(),
///     );
/// #   assert_eq!(event.properties().get("alert"), Some("false"));
/// #   break;
/// }
/// consumer.close().await;
/// # emulator.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors in a stream
///
/// A partition link that breaks because the connection did is attached again after its last
/// event; an error the hub names ([`Error::Unauthorized`], [`Error::Hub`] with condition
/// `amqp:link:stolen` when a reader with a higher [owner level](EventConsumerBuilder::owner_level)
/// took over) is yielded once and ends that partition's part of the stream.
#[derive(Clone)]
pub struct EventConsumer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("source", &self.inner.source)
            .field("consumer_group", &self.inner.consumer_group)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    source: Source,
    consumer_group: String,
    settings: LinkSettings,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    endpoint: Option<Endpoint>,
    conn: Option<Conn>,
    connections: u64,
    closed: bool,
}

impl EventConsumer {
    /// A consumer with every option at its default; see [`EventConsumerBuilder::new`] for the
    /// connection strings it takes.
    pub fn from_connection_string(connection_string: &str) -> Result<EventConsumer, Error> {
        Self::builder(connection_string)?.build()
    }

    /// A builder to set options first.
    pub fn builder(connection_string: &str) -> Result<EventConsumerBuilder, Error> {
        EventConsumerBuilder::new(connection_string)
    }

    /// The consumer group this consumer reads as.
    pub fn consumer_group(&self) -> &str {
        &self.inner.consumer_group
    }

    /// The event hub's name, creation time and partition ids.
    pub async fn event_hub_properties(&self) -> Result<EventHubProperties, Error> {
        let map = self
            .inner
            .management("com.microsoft:eventhub", None)
            .await?;
        Ok(EventHubProperties {
            name: text(&map, "name").unwrap_or_default(),
            created_at: time(&map, "created_at"),
            partition_ids: match get(&map, "partition_ids") {
                Some(Value::Array(a)) => a.0.iter().filter_map(value_text).collect(),
                Some(Value::List(l)) => l.iter().filter_map(value_text).collect(),
                _ => {
                    return Err(Error::protocol(
                        "the event hub information has no partition_ids",
                    ));
                }
            },
        })
    }

    /// The partition ids (`"0"`, `"1"`, ...).
    pub async fn partition_ids(&self) -> Result<Vec<String>, Error> {
        Ok(self.event_hub_properties().await?.partition_ids)
    }

    /// One partition's runtime information. Errors: [`Error::ArgumentInvalid`] for a
    /// partition id the hub does not have, ...
    pub async fn partition_properties(
        &self,
        partition_id: &str,
    ) -> Result<PartitionProperties, Error> {
        let map = self
            .inner
            .management("com.microsoft:partition", Some(partition_id))
            .await?;
        let long = |key: &str| match get(&map, key) {
            Some(Value::Long(n)) => Some(*n),
            Some(Value::Int(n)) => Some(i64::from(*n)),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(PartitionProperties {
            event_hub_name: text(&map, "name").unwrap_or_default(),
            id: text(&map, "partition").unwrap_or_else(|| partition_id.to_owned()),
            begin_sequence_number: long("begin_sequence_number").unwrap_or(0),
            last_enqueued_sequence_number: long("last_enqueued_sequence_number").unwrap_or(-1),
            last_enqueued_offset: text(&map, "last_enqueued_offset").unwrap_or_default(),
            last_enqueued_time: time(&map, "last_enqueued_time_utc"),
            is_empty: matches!(get(&map, "is_partition_empty"), Some(Value::Bool(true))),
        })
    }

    /// Reads one partition from `position`. Returns once the link is attached.
    ///
    /// Errors: [`Error::ArgumentInvalid`] or [`Error::Hub`] for a partition or consumer group
    /// the hub does not have, [`Error::Unauthorized`], [`Error::Connection`], [`Error::Tls`],
    /// [`Error::Timeout`], [`Error::Closed`].
    pub async fn receive(
        &self,
        partition_id: &str,
        position: EventPosition,
    ) -> Result<EventStream, Error> {
        self.receive_partitions(vec![partition_id.to_owned()], position)
            .await
    }

    /// Reads every partition from `position` (asking `$management` for the partition ids
    /// first). Returns once every link is attached.
    pub async fn receive_all(&self, position: EventPosition) -> Result<EventStream, Error> {
        let ids = self.partition_ids().await?;
        self.receive_partitions(ids, position).await
    }

    async fn receive_partitions(
        &self,
        ids: Vec<String>,
        position: EventPosition,
    ) -> Result<EventStream, Error> {
        let mut receivers: Vec<(String, Receiver)> = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.inner.attach(id, &position).await {
                Ok(r) => receivers.push((id.clone(), r)),
                Err(e) => {
                    for (_, r) in receivers {
                        let _ = timeout(Duration::from_secs(2), r.close()).await;
                    }
                    return Err(e);
                }
            }
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        for (id, receiver) in receivers {
            tokio::spawn(stream::run_partition(
                self.inner.clone(),
                id,
                receiver,
                position.clone(),
                tx.clone(),
            ));
        }
        Ok(EventStream::new(rx, ids))
    }

    /// Closes the connection. Open streams end (their links are gone) and later calls fail
    /// with [`Error::Closed`].
    pub async fn close(&self) {
        let mut state = self.inner.state.lock().await;
        state.closed = true;
        if let Some(conn) = state.conn.take() {
            conn.close().await;
        }
    }
}

impl Inner {
    /// The open connection and the endpoint, resolving and connecting as needed.
    async fn ensure<'a>(
        &self,
        state: &'a mut State,
    ) -> Result<(&'a mut Conn, &'a Endpoint), Error> {
        if state.closed {
            return Err(Error::Closed);
        }
        if state.endpoint.is_none() {
            state.endpoint = Some(self.resolve().await?);
        }
        if state.conn.as_ref().is_some_and(Conn::is_closed)
            && let Some(old) = state.conn.take()
        {
            old.close().await;
        }
        let State {
            endpoint,
            conn,
            connections,
            ..
        } = state;
        let Some(endpoint) = endpoint.as_ref() else {
            return Err(Error::protocol("no endpoint after resolving it"));
        };
        if conn.is_none() {
            *connections += 1;
            let limit = self.settings.connect_timeout;
            let opened = timeout(limit, link::open(endpoint, &self.settings, *connections))
                .await
                .map_err(|_| Error::Timeout {
                    operation: "opening the AMQP connection to the event hub",
                    after: limit,
                })??;
            tracing::debug!(connection = opened.id, host = %endpoint.host, "event hub connection open");
            *conn = Some(opened);
        }
        match conn.as_mut() {
            Some(c) => Ok((c, endpoint)),
            None => Err(Error::protocol("no connection after opening one")),
        }
    }

    /// Where the Event Hubs-compatible endpoint is.
    async fn resolve(&self) -> Result<Endpoint, Error> {
        match &self.source {
            Source::EventHub(e) => Ok(e.clone()),
            Source::IotHub {
                connection_string,
                host,
                port,
            } => {
                let Some(tls) = self.settings.tls.clone() else {
                    return Err(Error::protocol("no TLS configuration for the hub host"));
                };
                let limit = self.settings.connect_timeout;
                let endpoint = timeout(
                    limit,
                    redirect::resolve(
                        connection_string,
                        host,
                        *port,
                        tls,
                        self.settings.transport,
                        self.settings.tokens,
                    ),
                )
                .await
                .map_err(|_| Error::Timeout {
                    operation: "asking the hub for its Event Hubs-compatible endpoint",
                    after: limit,
                })??;
                tracing::debug!(host = %endpoint.host, port = endpoint.port, entity = %endpoint.entity, "redirected to the event hub");
                Ok(endpoint)
            }
        }
    }

    /// Attaches a partition receiver; a connection that turns out dead is replaced once.
    pub(crate) async fn attach(
        &self,
        partition_id: &str,
        position: &EventPosition,
    ) -> Result<Receiver, Error> {
        let mut state = self.state.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, endpoint) = self.ensure(&mut state).await?;
            let result = conn
                .attach_partition(
                    endpoint,
                    &self.settings,
                    &self.consumer_group,
                    partition_id,
                    position,
                )
                .await;
            match result {
                Err(Error::Connection { .. }) if attempt < 2 => {
                    if let Some(old) = state.conn.take() {
                        old.close().await;
                    }
                }
                other => return other,
            }
        }
    }

    async fn management(
        &self,
        kind: &str,
        partition: Option<&str>,
    ) -> Result<OrderedMap<Value, Value>, Error> {
        let mut state = self.state.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, endpoint) = self.ensure(&mut state).await?;
            let result = conn
                .management(endpoint, &self.settings, kind, partition)
                .await;
            match result {
                Err(Error::Connection { .. }) if attempt < 2 => {
                    if let Some(old) = state.conn.take() {
                        old.close().await;
                    }
                }
                other => return other,
            }
        }
    }
}

fn get<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.get(&Value::String(key.to_owned())).or_else(|| {
        map.get(&Value::Symbol(fe2o3_amqp::types::primitives::Symbol::from(
            key,
        )))
    })
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Long(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text(map: &OrderedMap<Value, Value>, key: &str) -> Option<String> {
    get(map, key).and_then(value_text)
}

fn time(map: &OrderedMap<Value, Value>, key: &str) -> Option<OffsetDateTime> {
    match get(map, key)? {
        Value::Timestamp(t) => iothub_protocol::amqp::timestamp_from_amqp(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn either_connection_string_is_taken() {
        let eh = format!(
            "Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey={KEY};EntityPath=hub;UseDevelopmentEmulator=true"
        );
        let c = EventConsumer::from_connection_string(&eh).unwrap();
        match &c.inner.source {
            Source::EventHub(e) => {
                assert_eq!((e.host.as_str(), e.port, e.tls), ("localhost", 5672, false));
                assert_eq!(e.entity, "hub");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.consumer_group(), "$Default");

        let hub = format!(
            "HostName=myhub.azure-devices.net:15671;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        );
        let c = EventConsumer::builder(&hub)
            .unwrap()
            .dangerous()
            .accept_any_server_certificate()
            .build()
            .unwrap();
        assert!(matches!(
            &c.inner.source,
            Source::IotHub { host, port: 15671, .. } if host == "myhub.azure-devices.net"
        ));
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn options_are_checked() {
        let eh = format!(
            "Endpoint=sb://h/;SharedAccessKeyName=s;SharedAccessKey={KEY};UseDevelopmentEmulator=true"
        );
        let e = EventConsumer::from_connection_string(&eh).unwrap_err();
        assert!(e.to_string().contains("EntityPath"), "{e}");
        let b = EventConsumer::builder(&eh).unwrap().event_hub_name("hub");
        assert!(b.clone().build().is_ok());
        assert!(matches!(
            b.clone().prefetch(0).build(),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(
            b.clone().consumer_group("").build(),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(
            b.clone().request_timeout(Duration::ZERO).build(),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(
            EventConsumer::builder("Endpoint=sb://h/"),
            Err(Error::InvalidConnectionString(_))
        ));
        assert!(matches!(
            EventConsumer::builder("HostName=h"),
            Err(Error::InvalidConnectionString(_))
        ));
    }
}
