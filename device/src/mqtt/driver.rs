//! The driver task: connects, serves the connection (events from the hub, commands from the
//! client, the token deadline), reconnects with backoff, and stops on close or on a refusal no
//! retry can fix. What it does with telemetry and C2D messages is in `telemetry.rs` and
//! `c2d.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::c2d::C2d;
use super::connection::{self, Connection, DISCONNECT_GRACE, Deadline, Lost};
use super::errors::{describe_lost, stale};
use super::params::Params;
use super::subscriptions::Subscriptions;
use super::telemetry::Telemetry;
use super::topics::c2d_filter;
use super::twin::TwinState;
use super::{Command, Commands, Setup};
use crate::error::Error;
use crate::runtime::Runtime;
use crate::state::{ConnectionState, DisconnectReason};
use crate::token::Auth;

/// Commands taken in one go before the driver writes: a burst of sends leaves in one write.
const COMMAND_BURST: usize = 64;

/// Why a connection ended.
enum Ended {
    Closed,
    Renew,
    Lost(String),
    Fatal(Error),
}

/// The driver task's state.
pub(super) struct Driver {
    pub params: Params,
    auth: Auth,
    commands: mpsc::UnboundedReceiver<Command>,
    /// A sender of our own queue, handed to received messages so they can be settled.
    pub own_commands: Commands,
    pub c2d: C2d,
    pub telemetry: Telemetry,
    /// Every topic filter wanted, and the hub's answers.
    pub subscriptions: Subscriptions,
    /// Twin requests waiting for their answer, and where desired patches go.
    pub twin: TwinState,
    /// Where method requests go.
    pub methods: crate::methods::IncomingSender,
    generation: Arc<AtomicU64>,
    runtime: Runtime,
}

impl Driver {
    /// A driver reading `commands` (of which `own_commands` is a sender); [`Driver::run`]
    /// starts it.
    pub fn new(
        setup: Setup,
        commands: mpsc::UnboundedReceiver<Command>,
        own_commands: Commands,
    ) -> Self {
        Driver {
            params: setup.params,
            auth: setup.auth,
            commands,
            own_commands,
            c2d: C2d::new(setup.c2d),
            telemetry: Telemetry::default(),
            subscriptions: Subscriptions::default(),
            twin: TwinState::default(),
            methods: setup.methods,
            generation: setup.generation,
            runtime: setup.runtime,
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
            self.runtime.state.set(ConnectionState::Disconnected {
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
                    self.runtime.state.set(ConnectionState::Disconnected {
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
                _ = self.runtime.shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command_offline(cmd),
                    None => return false,
                },
            }
        }
    }

    fn on_command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Twin(t) => self.on_twin_command(None, t),
            Command::Send {
                topic,
                payload,
                reply,
            } => {
                self.telemetry.queue(topic, payload, reply);
            }
            Command::EnableC2d => {
                let filter = c2d_filter(&self.params.device_id);
                self.subscriptions.want(&filter, QoS::AtLeastOnce, None);
            }
            Command::EnableMethods { reply } => {
                let filter = iothub_protocol::method::REQUEST_TOPIC_FILTER;
                self.subscriptions
                    .want(filter, QoS::AtMostOnce, Some(reply));
            }
            // Lost with the connection: the service gets 504101, as with any SDK.
            Command::MethodResponse { .. } => {}
            Command::Settle { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(stale()));
                }
            }
        }
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
        self.runtime.state.set(ConnectionState::Disconnected {
            reason,
            retrying: false,
        });
        self.telemetry.fail_all(&err);
        self.subscriptions.fail_all(&err);
        // Let anyone waiting on the client notice.
        self.runtime.shutdown.cancel();
    }

    /// Opens a connection: CONNECT, then (re)subscribe and republish what is pending.
    async fn connect(&mut self) -> Result<Connection, Error> {
        let token = self.auth.issue(SystemTime::now())?;
        let generation = self.generation.load(Ordering::Acquire);
        let (mut conn, connack) =
            connection::open(&self.params, &token, &self.runtime, generation).await?;
        tracing::debug!(
            device = %self.params.device_id,
            session_present = connack.session_present,
            "MQTT connected"
        );
        for (filter, qos) in self.subscriptions.connected(connack.session_present) {
            self.send_subscribe(&mut conn, &filter, qos);
        }
        for id in self.telemetry.ids() {
            self.publish(&mut conn, id);
        }
        self.twin_connected(&mut conn);
        self.runtime.state.set(ConnectionState::Connected);
        Ok(conn)
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, conn: &mut Connection) -> Ended {
        let wake_at = |conn: &Connection| conn.deadline.at().min(conn.next_ping());
        let timer = tokio::time::sleep_until(wake_at(conn));
        tokio::pin!(timer);
        // What arrived with the CONNACK (a redelivered C2D message, say) is already read.
        if let Err(e) = self.on_packets(conn) {
            return Ended::Lost(describe_lost(&e, &self.params));
        }
        loop {
            if timer.deadline() != wake_at(conn) {
                timer.as_mut().reset(wake_at(conn));
            }
            tokio::select! {
                biased;
                _ = self.runtime.shutdown.cancelled() => {
                    self.disconnect(conn).await;
                    return Ended::Closed;
                }
                io = conn.io() => {
                    if let Err(e) = io.and_then(|()| self.on_packets(conn)) {
                        return Ended::Lost(describe_lost(&e, &self.params));
                    }
                }
                cmd = self.commands.recv(), if conn.accepts_commands() => match cmd {
                    Some(cmd) => {
                        self.on_command(conn, cmd);
                        // The application's tasks that woke with this one (a burst of
                        // PUBACKs answers many sends at once) run first and queue their
                        // commands: they then share one write instead of one each.
                        tokio::task::yield_now().await;
                        if self.on_more_commands(conn) {
                            self.disconnect(conn).await;
                            return Ended::Closed;
                        }
                    }
                    None => {
                        self.disconnect(conn).await;
                        return Ended::Closed;
                    }
                },
                _ = &mut timer => {
                    let deadline = conn.deadline;
                    if Instant::now() < deadline.at() {
                        if let Err(e) = conn.ping() {
                            return Ended::Lost(describe_lost(&e, &self.params));
                        }
                        continue;
                    }
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

    /// Handles every complete packet read so far.
    fn on_packets(&mut self, conn: &mut Connection) -> Result<(), Lost> {
        while let Some(packet) = conn.next_packet()? {
            self.on_packet(conn, packet);
        }
        Ok(())
    }

    /// Takes the commands already queued (up to a burst), so they leave in one write. True
    /// when the client is gone.
    fn on_more_commands(&mut self, conn: &mut Connection) -> bool {
        for _ in 0..COMMAND_BURST {
            match self.commands.try_recv() {
                Ok(cmd) => self.on_command(conn, cmd),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        false
    }

    /// Routes a packet from the hub to the part of the driver it concerns.
    fn on_packet(&mut self, conn: &mut Connection, packet: Packet) {
        match packet {
            Packet::Publish(p) if super::methods::is_request(&p.topic) => {
                self.on_method_request(&p)
            }
            Packet::Publish(p) => self.on_publish(conn, p),
            Packet::PubAck(ack) => self.on_puback(conn, ack.pkid),
            Packet::SubAck(ack) => self.on_suback(&ack),
            Packet::PingResp => conn.pong(),
            other => {
                tracing::debug!(device = %self.params.device_id, packet = ?other, "ignoring an unexpected MQTT packet")
            }
        }
    }

    /// Routes a command of the client to the part of the driver it concerns.
    fn on_command(&mut self, conn: &mut Connection, cmd: Command) {
        match cmd {
            Command::Twin(t) => self.on_twin_command(Some(conn), t),
            Command::Send {
                topic,
                payload,
                reply,
            } => {
                let id = self.telemetry.queue(topic, payload, reply);
                self.publish(conn, id);
            }
            Command::EnableC2d => {
                let filter = c2d_filter(&self.params.device_id);
                self.want_subscription(Some(conn), &filter, QoS::AtLeastOnce, None);
            }
            Command::EnableMethods { reply } => self.enable_methods(Some(conn), reply),
            Command::MethodResponse { topic, payload } => {
                self.send_method_response(conn, topic, payload)
            }
            Command::Settle {
                generation,
                pkid,
                ack,
                reply,
            } => {
                let result = if generation == conn.generation {
                    self.settle(conn, pkid, ack);
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

    /// Sends DISCONNECT and closes the stream, waiting briefly for both to go out.
    async fn disconnect(&mut self, conn: &mut Connection) {
        let _ = conn.send(&Packet::Disconnect);
        let _ = tokio::time::timeout(DISCONNECT_GRACE, conn.finish()).await;
    }
}
