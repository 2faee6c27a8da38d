//! The MQTT transport (iothub-protocol.md 3): one driver task per client that owns the
//! connection, reconnects, renews the token, and settles C2D messages.
//!
//! Each connection is a fresh rumqttc `EventLoop` polled by its own small "pump" task that
//! forwards every event to the driver; the driver talks to the connection through the
//! matching `AsyncClient`. A new event loop per connection keeps packet ids, PUBACKs and
//! unacknowledged telemetry from one connection away from the next: the driver itself keeps
//! the telemetry waiting for a PUBACK and publishes it again after a reconnect, and a C2D
//! message can only be acknowledged on the connection it arrived on (the hub redelivers the
//! others). CONNECT uses clean session 0, as every official SDK does, so the hub keeps the
//! subscription and the undelivered messages while the device is away.

mod acks;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use iothub_protocol::ErrorCode;
use iothub_protocol::property_bag::{c2d_topic_prefix, decode_c2d_topic};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, SubscribeReasonCode, TlsConfiguration,
};
use rustls::ClientConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::backoff::Backoff;
use crate::config::Transport;
use crate::error::Error;
use crate::message::{ReceivedMessage, Settle};
use crate::state::{ConnectionState, DisconnectReason, StateReporter};
use crate::tls::describe_tls_failure;

use acks::AckQueue;

/// The api-version the username carries (the Node SDK's).
pub(crate) const API_VERSION: &str = "2021-04-12";
/// What the client calls itself in `DeviceClientType` and `User-Agent`.
pub(crate) const CLIENT_TYPE: &str = concat!("iothub-device-rust/", env!("CARGO_PKG_VERSION"));
/// Largest MQTT packet either way: a 256 KB D2C body plus a topic with its property bag.
const MAX_PACKET: usize = 512 * 1024;
/// What query values keep unencoded: the RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Capacity of rumqttc's request channel.
const REQUEST_CAPACITY: usize = 64;
/// How long a DISCONNECT may take before the connection is just dropped.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// What the client asks of the driver.
pub(crate) enum Command {
    /// Publish telemetry at QoS 1; `reply` gets the outcome once the hub PUBACKed it.
    Send {
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// The application wants C2D messages: subscribe (now and after a lost session).
    EnableC2d,
    /// Settle a C2D message: PUBACK it (`ack`) or let it go without one.
    Settle {
        generation: u64,
        pkid: u16,
        ack: bool,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
}

/// Fixed facts about the MQTT connection.
pub(crate) struct Params {
    pub device_id: String,
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
    /// `{HostName}/{deviceId}/?api-version=...&DeviceClientType=...` (iothub-protocol.md 3.2).
    pub fn username(&self) -> String {
        username(&self.host_name, &self.device_id)
    }

    fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("wss://{host}:{}/$iothub/websocket", self.port)
    }

    fn options(&self, password: String) -> MqttOptions {
        let tls = TlsConfiguration::Rustls(self.tls.clone());
        let mut o = match self.transport {
            Transport::MqttWebSocket => {
                let mut o = MqttOptions::new(self.device_id.clone(), self.url(), self.port);
                o.set_transport(rumqttc::Transport::Wss(tls));
                o
            }
            _ => {
                let mut o = MqttOptions::new(self.device_id.clone(), self.host.clone(), self.port);
                o.set_transport(rumqttc::Transport::Tls(tls));
                o
            }
        };
        o.set_credentials(self.username(), password)
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(self.keep_alive.as_secs().max(1)))
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o
    }

    fn endpoint(&self) -> String {
        match self.transport {
            Transport::MqttWebSocket => self.url(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The MQTT username for a device.
pub(crate) fn username(host_name: &str, device_id: &str) -> String {
    format!(
        "{host_name}/{device_id}/?api-version={API_VERSION}&DeviceClientType={}",
        utf8_percent_encode(CLIENT_TYPE, QUERY_VALUE)
    )
}

/// The C2D subscription filter.
pub(crate) fn c2d_filter(device_id: &str) -> String {
    format!("{}#", c2d_topic_prefix(device_id))
}

/// Device ids may hold `+` and `#`, which MQTT forbids in topic names.
pub(crate) fn check_device_id(device_id: &str) -> Result<(), Error> {
    if device_id.contains(['+', '#']) {
        return Err(Error::Unsupported {
            what: "a device id containing '+' or '#' over MQTT (MQTT topics cannot contain them); use Transport::Https",
        });
    }
    Ok(())
}

/// Maps a failed CONNECT to the client's error (iothub-protocol.md 3.2, CONNACK refusals).
fn connect_error(e: ConnectionError, params: &Params) -> Error {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => Error::Unauthorized {
                detail: "MQTT CONNACK 4, bad user name or password".into(),
                code: ErrorCode::IotHubUnauthorizedAccess,
            },
            ConnectReturnCode::NotAuthorized => Error::Unauthorized {
                detail: "MQTT CONNACK 5, not authorized".into(),
                code: ErrorCode::IotHubUnauthorizedAccess,
            },
            ConnectReturnCode::BadClientId => Error::Unauthorized {
                detail: "MQTT CONNACK 2, identifier rejected: the client id and user name do not name the same device".into(),
                code: ErrorCode::IotHubUnauthorizedAccess,
            },
            ConnectReturnCode::ServiceUnavailable => Error::DeviceDisabled {
                device_id: params.device_id.clone(),
            },
            other => Error::Connection {
                detail: format!("{} refused the MQTT connection: {other:?}", params.endpoint()),
            },
        },
        ConnectionError::NetworkTimeout => Error::Timeout {
            what: "opening the MQTT connection",
            after: params.connect_timeout,
        },
        other => describe_tls_failure(&other, &params.host).unwrap_or_else(|| Error::Connection {
            detail: format!("{}: {other}", params.endpoint()),
        }),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One open connection.
struct Connection {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    _pump: AbortOnDrop,
    generation: u64,
    acks: AckQueue,
    /// Telemetry published on this connection and not yet given a packet id, in order.
    unassigned: VecDeque<u64>,
    /// Packet id → telemetry waiting for its PUBACK.
    inflight: HashMap<u16, u64>,
    subscribe_sent: bool,
    deadline: Deadline,
}

/// What happens to the token next.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Reconnect with a new token at this time.
    Renew(Instant),
    /// The ready-made token expires then; the client stops.
    Expire(Instant, u64),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Renew(t) | Deadline::Expire(t, _) => t,
        }
    }
}

/// Why a connection ended.
enum Ended {
    Closed,
    Renew,
    Lost(String),
    Fatal(Error),
}

/// Telemetry waiting for the hub's PUBACK.
struct PendingSend {
    topic: String,
    payload: Bytes,
    reply: Option<oneshot::Sender<Result<(), Error>>>,
}

/// The driver task's state.
pub(crate) struct Driver {
    params: Params,
    auth: Auth,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    cmd_tx: mpsc::UnboundedSender<Command>,
    c2d_tx: mpsc::UnboundedSender<ReceivedMessage>,
    state: StateReporter,
    generation: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    c2d_wanted: bool,
    /// The hub's session holds our C2D subscription.
    session_subscribed: bool,
    pending: BTreeMap<u64, PendingSend>,
    next_send: u64,
}

impl Driver {
    /// A driver; [`Driver::run`] starts it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: Params,
        auth: Auth,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        cmd_tx: mpsc::UnboundedSender<Command>,
        c2d_tx: mpsc::UnboundedSender<ReceivedMessage>,
        state: StateReporter,
        generation: Arc<AtomicU64>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Driver {
            params,
            auth,
            cmd_rx,
            cmd_tx,
            c2d_tx,
            state,
            generation,
            shutdown,
            tasks,
            c2d_wanted: false,
            session_subscribed: false,
            pending: BTreeMap::new(),
            next_send: 0,
        }
    }

    /// Connects, reports the first outcome on `first`, then serves until the client closes or
    /// a fatal refusal.
    pub async fn run(mut self, first: oneshot::Sender<Result<(), Error>>) {
        let mut conn = match self.connect().await {
            Ok(c) => {
                let _ = first.send(Ok(()));
                c
            }
            Err(e) => {
                self.stop(e.clone());
                let _ = first.send(Err(e));
                return;
            }
        };
        loop {
            let ended = self.serve(&mut conn).await;
            // Every message of this connection is stale from now on.
            self.generation.fetch_add(1, Ordering::AcqRel);
            drop(conn);
            let (reason, renew) = match ended {
                Ended::Closed => return self.stop(Error::Closed),
                Ended::Fatal(e) => return self.stop(e),
                Ended::Renew => (DisconnectReason::TokenRenewal, true),
                Ended::Lost(detail) => (DisconnectReason::ConnectionLost { detail }, false),
            };
            tracing::info!(device = %self.params.device_id, ?reason, "MQTT connection ended; reconnecting");
            self.state.set(ConnectionState::Disconnected {
                reason,
                retrying: true,
            });
            conn = match self.reconnect(renew).await {
                Some(c) => c,
                None => return,
            };
        }
    }

    /// Reconnects with backoff; `None` once the client has stopped.
    async fn reconnect(&mut self, immediately: bool) -> Option<Connection> {
        let mut attempt: u32 = 0;
        loop {
            if !(immediately && attempt == 0) {
                let wait = self
                    .params
                    .backoff
                    .delay(attempt.saturating_sub(u32::from(immediately)));
                if !self.wait_offline(wait).await {
                    self.stop(Error::Closed);
                    return None;
                }
            }
            match self.connect().await {
                Ok(c) => return Some(c),
                Err(Error::Closed) => {
                    self.stop(Error::Closed);
                    return None;
                }
                Err(e) if e.is_fatal() => {
                    self.stop(e);
                    return None;
                }
                Err(e) => {
                    tracing::info!(device = %self.params.device_id, error = %e, attempt, "MQTT reconnect failed");
                    self.state.set(ConnectionState::Disconnected {
                        reason: DisconnectReason::Refused(e),
                        retrying: true,
                    });
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Waits `wait` while handling commands; false if the client closed meanwhile.
    async fn wait_offline(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_command_offline(cmd),
                    None => return false,
                },
            }
        }
    }

    fn on_command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                topic,
                payload,
                reply,
            } => {
                self.queue_send(topic, payload, reply);
            }
            Command::EnableC2d => self.c2d_wanted = true,
            Command::Settle { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(stale()));
                }
            }
        }
    }

    fn queue_send(
        &mut self,
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    ) -> u64 {
        let id = self.next_send;
        self.next_send += 1;
        self.pending.insert(
            id,
            PendingSend {
                topic,
                payload,
                reply: Some(reply),
            },
        );
        id
    }

    /// Ends the driver: final state, and every waiting send fails with `err`.
    fn stop(&mut self, err: Error) {
        let reason = match &err {
            Error::Closed => DisconnectReason::Closed,
            e => DisconnectReason::Refused(e.clone()),
        };
        if !matches!(err, Error::Closed) {
            tracing::warn!(device = %self.params.device_id, error = %err, "MQTT client stopped");
        }
        self.state.set(ConnectionState::Disconnected {
            reason,
            retrying: false,
        });
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(err.clone()));
            }
        }
        // Let anyone waiting on the client notice.
        self.shutdown.cancel();
    }

    /// Opens a connection: CONNECT, then (re)subscribe and republish what is pending.
    async fn connect(&mut self) -> Result<Connection, Error> {
        let token = self.auth.issue(SystemTime::now())?;
        let (client, mut eventloop) =
            AsyncClient::new(self.params.options(token.text.clone()), REQUEST_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(self.params.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(net);
        let limit = self.params.connect_timeout;
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Error::Closed),
            r = tokio::time::timeout(limit, eventloop.poll()) => r,
        };
        let connack = match first {
            Err(_) => {
                return Err(Error::Timeout {
                    what: "opening the MQTT connection",
                    after: limit,
                });
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack,
            Ok(Ok(other)) => {
                return Err(Error::Connection {
                    detail: format!(
                        "{} answered CONNECT with {other:?} instead of CONNACK",
                        self.params.endpoint()
                    ),
                });
            }
            Ok(Err(e)) => return Err(connect_error(e, &self.params)),
        };
        let now = Instant::now();
        let deadline = match token.renew_after {
            Some(after) => Deadline::Renew(now + after),
            None => Deadline::Expire(now + token.valid_for, token.expiry),
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let pump = self.tasks.spawn(pump(eventloop, events_tx));
        let mut conn = Connection {
            client,
            events,
            _pump: AbortOnDrop(pump),
            generation: self.generation.load(Ordering::Acquire),
            acks: AckQueue::default(),
            unassigned: VecDeque::new(),
            inflight: HashMap::new(),
            subscribe_sent: false,
            deadline,
        };
        tracing::debug!(
            device = %self.params.device_id,
            session_present = connack.session_present,
            "MQTT connected"
        );
        if !connack.session_present {
            self.session_subscribed = false;
        }
        if self.c2d_wanted {
            self.subscribe(&mut conn).await;
        }
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            self.publish(&mut conn, id).await;
        }
        self.state.set(ConnectionState::Connected);
        Ok(conn)
    }

    async fn subscribe(&mut self, conn: &mut Connection) {
        if self.session_subscribed || conn.subscribe_sent {
            return;
        }
        conn.subscribe_sent = true;
        let filter = c2d_filter(&self.params.device_id);
        if let Err(e) = conn.client.subscribe(filter, QoS::AtLeastOnce).await {
            tracing::debug!(error = %e, "SUBSCRIBE not queued; the connection is going away");
        }
    }

    async fn publish(&mut self, conn: &mut Connection, id: u64) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let publish = conn
            .client
            .publish_bytes(p.topic.clone(), QoS::AtLeastOnce, false, p.payload.clone())
            .await;
        match publish {
            Ok(()) => conn.unassigned.push_back(id),
            Err(e) => {
                // Only a closed event loop refuses a publish; the pump reports why and the
                // message goes out again on the next connection.
                tracing::debug!(error = %e, "PUBLISH not queued");
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, conn: &mut Connection) -> Ended {
        loop {
            let deadline = conn.deadline;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.disconnect(conn).await;
                    return Ended::Closed;
                }
                event = conn.events.recv() => match event {
                    Some(Ok(event)) => self.on_event(conn, event).await,
                    Some(Err(e)) => return Ended::Lost(describe_lost(&e, &self.params)),
                    None => return Ended::Lost("the MQTT event loop stopped".into()),
                },
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_command(conn, cmd).await,
                    None => {
                        self.disconnect(conn).await;
                        return Ended::Closed;
                    }
                },
                _ = tokio::time::sleep_until(deadline.at()) => {
                    self.disconnect(conn).await;
                    return match deadline {
                        Deadline::Renew(_) => Ended::Renew,
                        Deadline::Expire(_, expired_at) => {
                            Ended::Fatal(Error::TokenExpired { expired_at })
                        }
                    };
                }
            }
        }
    }

    async fn on_event(&mut self, conn: &mut Connection, event: Event) {
        match event {
            Event::Incoming(Packet::Publish(p)) => self.on_publish(conn, p).await,
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(id) = conn.inflight.remove(&ack.pkid)
                    && let Some(p) = self.pending.remove(&id)
                    && let Some(reply) = p.reply
                {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                {
                    self.session_subscribed = true;
                } else {
                    tracing::warn!(
                        device = %self.params.device_id,
                        "the hub refused the C2D subscription; no cloud-to-device messages will arrive"
                    );
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                if let Some(id) = conn.unassigned.pop_front() {
                    conn.inflight.insert(pkid, id);
                }
            }
            _ => {}
        }
    }

    async fn on_publish(&mut self, conn: &mut Connection, p: Publish) {
        let qos1 = p.qos != QoS::AtMostOnce;
        if qos1 {
            conn.acks.received(p.pkid);
        }
        let decoded = if p
            .topic
            .starts_with(&c2d_topic_prefix(&self.params.device_id))
        {
            decode_c2d_topic(&p.topic).map_err(|e| e.to_string())
        } else {
            Err("it is not this device's C2D topic".to_owned())
        };
        match decoded {
            Ok((_, mut message)) => {
                message.body = p.payload.to_vec();
                let settle = if qos1 {
                    Settle::Mqtt {
                        generation: conn.generation,
                        pkid: p.pkid,
                        tx: self.cmd_tx.clone(),
                    }
                } else {
                    Settle::Done
                };
                let msg = ReceivedMessage::new(message, settle, self.params.transport);
                // The receiver lives as long as the client; if it is gone, so is the client.
                let _ = self.c2d_tx.send(msg);
            }
            Err(why) => {
                // Acknowledge it so the hub does not send it forever; nothing can read it.
                tracing::warn!(device = %self.params.device_id, topic = %p.topic, %why, "dropping an unreadable PUBLISH");
                if qos1 {
                    self.settle(conn, p.pkid, true).await;
                }
            }
        }
    }

    async fn on_command(&mut self, conn: &mut Connection, cmd: Command) {
        match cmd {
            Command::Send {
                topic,
                payload,
                reply,
            } => {
                let id = self.queue_send(topic, payload, reply);
                self.publish(conn, id).await;
            }
            Command::EnableC2d => {
                self.c2d_wanted = true;
                self.subscribe(conn).await;
            }
            Command::Settle {
                generation,
                pkid,
                ack,
                reply,
            } => {
                let result = if generation == conn.generation {
                    self.settle(conn, pkid, ack).await;
                    Ok(())
                } else {
                    Err(stale())
                };
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Sends DISCONNECT and waits briefly for it to go out, still handling what arrives
    /// meanwhile (a PUBACK that arrives now spares a resend).
    async fn disconnect(&mut self, conn: &mut Connection) {
        if conn.client.try_disconnect().is_err() {
            return;
        }
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            while let Some(event) = conn.events.recv().await {
                match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(event) => self.on_event(conn, event).await,
                }
            }
        })
        .await;
    }

    /// Records a settlement and sends the PUBACKs it releases, in order.
    async fn settle(&mut self, conn: &mut Connection, pkid: u16, ack: bool) {
        for id in conn.acks.settle(pkid, ack) {
            let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
            publish.pkid = id;
            if let Err(e) = conn.client.ack(&publish).await {
                tracing::debug!(error = %e, "PUBACK not queued; the connection is going away");
            }
        }
    }
}

/// The error for settling a message whose connection has closed.
fn stale() -> Error {
    Error::LockLost {
        detail: "the MQTT connection it arrived on has closed".into(),
    }
}

/// Why a live connection ended, for the connection state.
fn describe_lost(e: &ConnectionError, params: &Params) -> String {
    match describe_tls_failure(e, &params.host) {
        Some(tls) => tls.to_string(),
        None => format!("{}: {e}", params.endpoint()),
    }
}

/// Polls one connection's event loop and forwards everything until it fails.
async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, ConnectionError>>) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if tx.send(event).is_err() || failed {
            return;
        }
    }
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
        assert_eq!(c2d_filter("d1"), "devices/d1/messages/devicebound/#");
    }

    #[test]
    fn wildcard_device_ids_cannot_use_mqtt() {
        assert!(check_device_id("a+b").is_err());
        assert!(check_device_id("a#b").is_err());
        assert!(check_device_id("a$b:c").is_ok());
    }

    #[test]
    fn connack_refusals_map_to_typed_errors() {
        let params = Params {
            device_id: "d1".into(),
            host_name: "h".into(),
            host: "h".into(),
            port: 8883,
            transport: Transport::Mqtt,
            tls: crate::tls::client_config(&rustls::RootCertStore::empty(), true, &[]).unwrap(),
            keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
        };
        let refused = |c| connect_error(ConnectionError::ConnectionRefused(c), &params);
        assert!(matches!(
            refused(ConnectReturnCode::NotAuthorized),
            Error::Unauthorized {
                code: ErrorCode::IotHubUnauthorizedAccess,
                ..
            }
        ));
        assert!(matches!(
            refused(ConnectReturnCode::BadUserNamePassword),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            refused(ConnectReturnCode::BadClientId),
            Error::Unauthorized { .. }
        ));
        assert_eq!(
            refused(ConnectReturnCode::ServiceUnavailable),
            Error::DeviceDisabled {
                device_id: "d1".into()
            }
        );
        assert!(matches!(
            refused(ConnectReturnCode::RefusedProtocolVersion),
            Error::Connection { .. }
        ));
        let io = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(
            matches!(connect_error(io, &params), Error::Connection { ref detail } if detail.contains("h:8883"))
        );
    }
}
