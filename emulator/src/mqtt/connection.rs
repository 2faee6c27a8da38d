//! The socket side of one MQTT connection: CONNECT, then a loop over packets, C2D wake-ups,
//! keep-alive and cancellation.
//!
//! States, in order (each a function that returns how the connection ends):
//!
//! 1. awaiting CONNECT ([`await_connect`]): the first packet, within the connect timeout;
//! 2. admission ([`admit`]): shape, token, device; a refusal writes its CONNACK and closes;
//! 3. takeover: the device's older connection is closed and hands back the session slot;
//! 4. connected ([`Connected::run`]): nothing is accepted before this point, and CONNACK
//!    precedes every PUBLISH;
//! 5. teardown: every C2D lock still held is released (the message goes back to the queue)
//!    and, with clean session 0, the session is stored for the next connection.
//!
//! Every write happens on this task, bounded by the write timeout and the C2D window; the hub
//! is only touched through [`crate::driver::HubHandle::run`], never across an `.await`, so a
//! client that stops reading stalls only itself.

use std::fmt;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use iothub_protocol::HubError;
use iothub_protocol::sas::SasToken;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::auth::Need;
use crate::context::Context;
use crate::driver::{
    ConnectionGuard, DesiredSubscription, DeviceProtocol, MethodListener, next_desired,
};
use crate::hub::{AuthMethod, Identity, Origin};

use super::MqttState;
use super::after_disk::{self, AfterDisk};

use super::codec::StrictCodec;
use super::connect::{self, ConnectRequest, Refusal};
use super::limits::{FloodGuard, Limits, idle_timeout};
use super::methods;
use super::session::{Delivery, InFlight, Session};
use super::topics::{self, Route};
use super::twin;

type Transport<IO> = Framed<IO, StrictCodec>;

/// Polls once without a waker: for work that usually completes at once, tried before waiting
/// for it properly (which polls again, with a waker).
fn poll_once<T>(f: impl FnOnce(&mut std::task::Context<'_>) -> Poll<T>) -> Poll<T> {
    f(&mut std::task::Context::from_waker(
        futures_util::task::noop_waker_ref(),
    ))
}

/// How often a connection looks at a virtual clock for its token's expiry.
const TOKEN_CHECK_VIRTUAL: Duration = Duration::from_secs(1);
/// Longest single wait for a token's expiry on a real clock (the clock may be adjusted).
const TOKEN_CHECK_MAX: Duration = Duration::from_secs(3600);

/// Most packets handled before the answers are flushed.
const READ_BATCH: usize = 64;

/// PUBACKs answer the hub's own PUBLISHes, which the in-flight window bounds: they cannot
/// flood, and counting them kicked a device that merely kept up with its C2D messages.
fn counts_for_flood(p: &Packet) -> bool {
    !matches!(p, Packet::PubAck(_))
}

/// The close for a sync that failed: the answers waiting for it never go out.
fn sync_failed(e: &crate::persist::PersistError) -> Close {
    Close::Hub(HubError::ServerError {
        detail: e.to_string(),
    })
}

/// How a connection ended.
#[derive(Debug)]
enum Close {
    /// The peer closed the stream.
    PeerClosed,
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The emulator is stopping.
    Shutdown,
    /// Closed by the hub: another connection took over, or the device was deleted, disabled
    /// or force-disconnected.
    Kicked,
    /// No CONNECT in time.
    ConnectTimeout,
    /// No packet within 1.5 x keep-alive.
    KeepAlive(Duration),
    /// The SAS token of the CONNECT expired (the device must reconnect with a new one).
    TokenExpired,
    /// The older connection did not hand the session back in time.
    TakeoverTimeout,
    /// A CONNECT for a protocol level other than 4 (answered with CONNACK 0x01).
    ProtocolLevel(u8),
    /// Bytes that are not MQTT 3.1.1.
    Malformed(String),
    /// Valid MQTT that IoT Hub does not allow (the hub closes the connection).
    Violation(String),
    /// More packets per second than allowed.
    Flood,
    /// A write did not complete in time (the client stopped reading).
    WriteTimeout,
    /// The stream failed.
    Io(String),
    /// A hub operation failed in a way that ends the connection.
    Hub(HubError),
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::PeerClosed => f.write_str("the client closed the connection"),
            Close::ClientDisconnect => f.write_str("the client sent DISCONNECT"),
            Close::Shutdown => f.write_str("the emulator is stopping"),
            Close::Kicked => f.write_str(
                "closed by the hub (new connection for the device, device deleted or disabled, or force-disconnect)",
            ),
            Close::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            Close::KeepAlive(d) => write!(f, "no packet for {d:?} (1.5 x keep-alive)"),
            Close::TokenExpired => f.write_str("the SAS token expired; reconnect with a new one"),
            Close::TakeoverTimeout => {
                f.write_str("the device's previous connection did not close in time")
            }
            Close::ProtocolLevel(l) => {
                write!(f, "CONNECT for protocol level {l}; only 4 (MQTT 3.1.1) is supported")
            }
            Close::Malformed(e) => write!(f, "malformed packet: {e}"),
            Close::Violation(e) => write!(f, "protocol violation: {e}"),
            Close::Flood => f.write_str("too many packets per second"),
            Close::WriteTimeout => f.write_str("the client stopped reading (write timed out)"),
            Close::Io(e) => write!(f, "I/O error: {e}"),
            Close::Hub(e) => write!(f, "hub error: {e}"),
        }
    }
}

fn codec_close(e: CodecError) -> Close {
    match e {
        CodecError::Io(e) => Close::Io(e.to_string()),
        CodecError::PayloadSizeLimitExceeded(n) => {
            Close::Violation(format!("a {n}-byte packet exceeds the size limit"))
        }
        other => Close::Malformed(other.to_string()),
    }
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// Serves one connection until it ends, then closes the stream.
pub(crate) async fn run<IO>(io: IO, ctx: Context, state: MqttState, limits: Limits)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let codec = StrictCodec::new(limits.max_packet_size);
    // Buffers grow on demand: an idle device should not pin 16 KiB (tokio-util's default 8 KiB
    // read + 8 KiB write); writes still coalesce up to 16 KiB before backpressure.
    let mut t = Framed::with_capacity(io, codec, 512);
    t.set_backpressure_boundary(16 * 1024);
    serve(&mut t, &ctx, &state, &limits).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), t.close()).await;
}

/// Logs how a connection ended: warnings for bad clients, info for devices, debug otherwise.
fn log_end(device: Option<&str>, released: usize, close: &Close) {
    let bad = matches!(
        close,
        Close::Malformed(_) | Close::Violation(_) | Close::Flood | Close::WriteTimeout
    );
    match (device, bad) {
        (Some(d), true) => warn!(device = %d, released, reason = %close, "device disconnected"),
        (Some(d), false) => info!(device = %d, released, reason = %close, "device disconnected"),
        (None, true) => warn!(reason = %close, "connection closed before CONNECT was accepted"),
        (None, false) => debug!(reason = %close, "connection closed before CONNECT was accepted"),
    }
}

async fn serve<IO>(t: &mut Transport<IO>, ctx: &Context, state: &MqttState, limits: &Limits)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connect = match await_connect(t, ctx, limits).await {
        Ok(c) => c,
        Err(Close::ProtocolLevel(level)) => {
            // MQTT-3.1.2-2: an unsupported protocol level gets CONNACK 0x01, then the close.
            let ack = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
            let _ = write(t, ctx, limits, Packet::ConnAck(ack)).await;
            return log_end(None, 0, &Close::ProtocolLevel(level));
        }
        Err(close) => return log_end(None, 0, &close),
    };
    match admit(ctx, &connect) {
        Ok(admitted) => serve_device(t, ctx, state, limits, admitted).await,
        Err(refusal) => {
            info!(
                client_id = %connect.client_id,
                code = ?refusal.code(),
                reason = %refusal,
                "CONNECT refused"
            );
            let ack = ConnAck::new(refusal.code(), false);
            let _ = write(t, ctx, limits, Packet::ConnAck(ack)).await;
        }
    }
}

/// States 3 to 5 for an admitted device.
async fn serve_device<IO>(
    t: &mut Transport<IO>,
    ctx: &Context,
    state: &MqttState,
    limits: &Limits,
    admitted: Admitted,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Admitted {
        req,
        generation,
        token_expiry,
        auth,
    } = admitted;
    let identity = match &req.module_id {
        Some(m) => Identity::module(&req.device_id, m),
        None => Identity::device(&req.device_id),
    };
    // The client id: connections, takeovers and sessions are per identity.
    let client_id = identity.to_string();
    let device_id = client_id.as_str();

    // Takeover: close the device's other connections, then wait for the session they hold.
    let guard = ctx.hub.register_connection(device_id, DeviceProtocol::Mqtt);
    let took_over = ctx.hub.disconnect_device_except(device_id, Some(&guard));
    let acquired = tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => return log_end(Some(device_id), 0, &Close::Shutdown),
        _ = guard.cancelled().cancelled() => return log_end(Some(device_id), 0, &Close::Kicked),
        s = tokio::time::timeout(limits.takeover_timeout, state.sessions.acquire(device_id)) => s,
    };
    let Ok(mut slot) = acquired else {
        let ack = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false);
        let _ = write(t, ctx, limits, Packet::ConnAck(ack)).await;
        return log_end(Some(device_id), 0, &Close::TakeoverTimeout);
    };
    // Clean session 1 discards what was stored; so does a re-created device.
    let restored = slot
        .take()
        .filter(|s| !req.clean_session && s.generation == generation);
    let session_present = restored.is_some();
    let session = Session::new(device_id, state.settings.max_inflight, restored);
    let mut conn = Connected {
        t,
        ctx,
        limits,
        device_id: &req.device_id,
        guard: &guard,
        session,
        idle: idle_timeout(req.keep_alive),
        token_expiry,
        flood: FloodGuard::new(limits.max_packets_per_second, Instant::now()),
        origin: Origin { identity, auth },
        desired: None,
        methods: None,
        after_disk: AfterDisk::default(),
        telemetry: Vec::new(),
        completions: Vec::new(),
    };
    conn.sync_desired();

    let ack = ConnAck::new(ConnectReturnCode::Success, session_present);
    crate::accept::authenticated();
    let close = match conn.send(Packet::ConnAck(ack)).await {
        Err(close) => close,
        Ok(()) => {
            info!(
                device = %device_id,
                clean_session = req.clean_session,
                keep_alive = req.keep_alive,
                session_present,
                took_over,
                host = %req.client.host,
                api_version = req.client.api_version.as_deref().unwrap_or(""),
                client_type = req.client.client_type.as_deref().unwrap_or(""),
                "device connected"
            );
            conn.run().await
        }
    };

    // Teardown: complete what the device acknowledged, give back every other lock, then the
    // session, then the registration.
    conn.apply_completions();
    let released = conn.release_inflight();
    if !req.clean_session {
        *slot = Some(conn.session.into_persisted(generation));
    }
    drop(slot);
    drop(guard);
    log_end(Some(device_id), released, &close);
}

/// State 1: the first packet must be a CONNECT, within the connect timeout.
async fn await_connect<IO>(
    t: &mut Transport<IO>,
    ctx: &Context,
    limits: &Limits,
) -> Result<Connect, Close>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let first = tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => return Err(Close::Shutdown),
        r = tokio::time::timeout(limits.connect_timeout, t.next()) => r,
    };
    match first {
        Err(_) => Err(Close::ConnectTimeout),
        Ok(None) => Err(Close::PeerClosed),
        Ok(Some(Err(CodecError::InvalidProtocolLevel(level)))) => Err(Close::ProtocolLevel(level)),
        Ok(Some(Err(e))) => Err(codec_close(e)),
        Ok(Some(Ok(Packet::Connect(c)))) => Ok(c),
        Ok(Some(Ok(other))) => Err(Close::Violation(format!(
            "the first packet was {}, not CONNECT",
            kind(&other)
        ))),
    }
}

/// An authenticated CONNECT.
struct Admitted {
    req: ConnectRequest,
    /// The device's generation, to tell a re-created device from the one a session was for.
    generation: Option<String>,
    /// When the token expires, Unix seconds on the hub's clock: the hub closes the connection
    /// then (a virtual clock moved forward expires it too).
    token_expiry: u64,
    /// How the device authenticated, stamped on its telemetry.
    auth: AuthMethod,
}

/// State 2: the CONNECT's shape, then the token, checked against the hub.
fn admit(ctx: &Context, connect: &Connect) -> Result<Admitted, Refusal> {
    let req = connect::validate(connect)?;
    let now = ctx.now_unix();
    let (generation, auth) = ctx.hub.read(|hub| -> Result<_, HubError> {
        let (need, generation) = match &req.module_id {
            Some(m) => (
                Need::Module(&req.device_id, m),
                hub.get_module(&req.device_id, m)
                    .ok()
                    .and_then(|m| m.generation_id),
            ),
            None => (
                Need::Device(&req.device_id),
                hub.get_device(&req.device_id)
                    .ok()
                    .and_then(|d| d.generation_id),
            ),
        };
        let grant = ctx.auth.authorize(hub, &req.token, need, now)?;
        Ok((generation, grant.auth_method()))
    })?;
    let token_expiry = SasToken::parse(&req.token).map_or(now, |t| t.expiry());
    Ok(Admitted {
        req,
        generation,
        token_expiry,
        auth,
    })
}

/// Writes one packet within the write timeout (before the connection is registered).
async fn write<IO>(
    t: &mut Transport<IO>,
    ctx: &Context,
    limits: &Limits,
    packet: Packet,
) -> Result<(), Close>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => Err(Close::Shutdown),
        r = tokio::time::timeout(limits.write_timeout, t.send(packet)) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(codec_close(e)),
            Err(_) => Err(Close::WriteTimeout),
        },
    }
}

/// The next method request for a listening connection; never ready otherwise.
async fn next_method(listener: &mut Option<MethodListener>) -> Option<crate::hub::MethodRequest> {
    match listener {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// State 4: an authenticated device.
struct Connected<'a, IO> {
    t: &'a mut Transport<IO>,
    ctx: &'a Context,
    limits: &'a Limits,
    device_id: &'a str,
    guard: &'a ConnectionGuard,
    session: Session,
    idle: Option<Duration>,
    /// The token's `se`, compared with the hub's clock (never an `Instant`: `se` may be
    /// anything up to `u64::MAX`).
    token_expiry: u64,
    flood: FloodGuard,
    /// Who sends this connection's telemetry, and how it authenticated.
    origin: Origin,
    /// Desired-property notifications, while the session holds the desired filter.
    desired: Option<DesiredSubscription>,
    /// Set while subscribed to method requests.
    methods: Option<MethodListener>,
    /// PUBACKs and twin answers waiting for the disk.
    after_disk: AfterDisk,
    /// Telemetry read but not yet handed to the hub ([`Connected::apply_telemetry`]).
    telemetry: Vec<iothub_protocol::Message>,
    /// C2D deliveries the device acknowledged, not yet completed in the hub
    /// ([`Connected::apply_completions`]).
    completions: Vec<InFlight>,
}

impl<IO> Connected<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(&mut self) -> Close {
        // A restored session may already listen for methods.
        if let Err(close) = self.sync_method_listener() {
            return close;
        }
        let notify = self.ctx.hub.c2d_notify(self.device_id);
        let mut last_packet = Instant::now();
        loop {
            // Enable the wake-up before looking at the queue, so an enqueue in between is
            // never missed (driver.rs).
            let wake = notify.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Err(close) = self.pump_c2d().await {
                return close;
            }
            let wants_c2d = self.session.wants_c2d();
            let deadline = self.idle.map(|d| last_packet + d);
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Close::Shutdown,
                _ = self.guard.cancelled().cancelled() => return Close::Kicked,
                _ = sleep_until(deadline) => {
                    return Close::KeepAlive(self.idle.unwrap_or_default());
                }
                _ = tokio::time::sleep(self.until_token_check()) => {
                    if self.ctx.now_unix() >= self.token_expiry {
                        return Close::TokenExpired;
                    }
                }
                // Before reading more, so a device that keeps sending still gets its PUBACKs.
                synced = self.after_disk.wait(), if self.after_disk.syncing() => {
                    if let Err(e) = synced {
                        return sync_failed(&e);
                    }
                    if let Err(close) = self.feed_synced().await {
                        return close;
                    }
                    if let Err(close) = self.flush().await {
                        return close;
                    }
                }
                // Past the bound, reading waits for the disk to catch up.
                frame = self.t.next(), if self.after_disk.len() < after_disk::MAX_WAITING => {
                    last_packet = Instant::now();
                    let mut frame = Some(frame);
                    // Handle every packet that is already buffered (up to a bound) before
                    // writing the answers back in one flush: one TLS record and one syscall
                    // for a burst of PUBACKs instead of one each.
                    let mut handled = 0;
                    while let Some(f) = frame.take() {
                        let packet = match f {
                            None => return Close::PeerClosed,
                            Some(Err(e)) => return codec_close(e),
                            Some(Ok(p)) => p,
                        };
                        if counts_for_flood(&packet) && !self.flood.allow(last_packet) {
                            return Close::Flood;
                        }
                        if let Err(close) = self.handle(packet).await {
                            return close;
                        }
                        handled += 1;
                        if handled < READ_BATCH && self.after_disk.len() < after_disk::MAX_WAITING {
                            frame = self.t.next().now_or_never();
                        }
                    }
                    if let Err(close) = self.apply_telemetry() {
                        return close;
                    }
                    self.apply_completions();
                    if let Err(close) = self.feed_synced().await {
                        return close;
                    }
                    if let Err(close) = self.flush().await {
                        return close;
                    }
                }
                _ = &mut wake, if wants_c2d => {}
                n = next_desired(&mut self.desired) => {
                    let Some(n) = n else {
                        return Close::Violation(
                            "desired-property notifications were not read in time".to_owned(),
                        );
                    };
                    let notification = Packet::Publish(twin::desired_notification(&n));
                    // Never ahead of a twin answer still waiting for the disk.
                    let sent = if self.after_disk.is_empty() {
                        self.send(notification).await
                    } else {
                        self.after_disk.push(notification);
                        match self.feed_synced().await {
                            Ok(()) => self.flush().await,
                            Err(close) => Err(close),
                        }
                    };
                    if let Err(close) = sent {
                        return close;
                    }
                }
                Some(request) = next_method(&mut self.methods) => {
                    if let Err(close) = self.send_methods(request).await {
                        return close;
                    }
                }
            }
        }
    }

    /// How long until the token's expiry should be looked at again: when it is due on a real
    /// clock, at least every second on a virtual one (the control API may move it forward).
    fn until_token_check(&self) -> Duration {
        let left = Duration::from_secs(self.token_expiry.saturating_sub(self.ctx.now_unix()));
        let cap = if self.ctx.hub.clock().is_virtual() {
            TOKEN_CHECK_VIRTUAL
        } else {
            TOKEN_CHECK_MAX
        };
        left.min(cap)
    }

    /// Feeds every answer whose data is on disk, and starts a sync for those still waiting
    /// (pipelined: see [`after_disk`]).
    async fn feed_synced(&mut self) -> Result<(), Close> {
        loop {
            while let Some(answer) = self.after_disk.pop_ready() {
                self.feed(answer).await?;
            }
            let hub = &self.ctx.hub;
            match self.after_disk.begin(|| {
                let hub = hub.clone();
                async move { hub.synced().await }
            }) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(sync_failed(&e)),
            }
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Close> {
        self.feed(packet).await?;
        self.flush().await
    }

    /// Queues a packet in the write buffer; [`Connected::flush`] writes it out. Only waits
    /// when the buffer is past its backpressure boundary.
    async fn feed(&mut self, packet: Packet) -> Result<(), Close> {
        debug!(device = %self.device_id, packet = kind(&packet), "send");
        // Usually the buffer has room and feeding only encodes into it: then the cancellation
        // and timeout arms below (wakers registered and dropped per packet, a few % of the CPU
        // at 10,000 events/s) are not needed. Polled once without a waker; the slow path
        // polls again with one.
        if let Poll::Ready(ready) = poll_once(|cx| Pin::new(&mut *self.t).poll_ready(cx)) {
            ready.map_err(codec_close)?;
            return Pin::new(&mut *self.t)
                .start_send(packet)
                .map_err(codec_close);
        }
        tokio::select! {
            biased;
            _ = self.ctx.shutdown.cancelled() => Err(Close::Shutdown),
            _ = self.guard.cancelled().cancelled() => Err(Close::Kicked),
            r = tokio::time::timeout(self.limits.write_timeout, self.t.feed(packet)) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(codec_close(e)),
                Err(_) => Err(Close::WriteTimeout),
            },
        }
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> Result<(), Close> {
        // Usually the socket takes it all at once (see `feed`).
        if let Poll::Ready(r) =
            poll_once(|cx| Sink::<Packet>::poll_flush(Pin::new(&mut *self.t), cx))
        {
            return r.map_err(codec_close);
        }
        tokio::select! {
            biased;
            _ = self.ctx.shutdown.cancelled() => Err(Close::Shutdown),
            _ = self.guard.cancelled().cancelled() => Err(Close::Kicked),
            r = tokio::time::timeout(self.limits.write_timeout, self.t.flush()) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(codec_close(e)),
                Err(_) => Err(Close::WriteTimeout),
            },
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        debug!(device = %self.device_id, packet = kind(&packet), "received");
        if !matches!(packet, Packet::Publish(_)) {
            self.apply_telemetry()?;
        }
        if !matches!(packet, Packet::PubAck(_)) {
            self.apply_completions();
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p).await,
            Packet::PubAck(a) => {
                self.on_puback(a.pkid);
                Ok(())
            }
            Packet::Subscribe(s) => {
                let ack = self.session.subscribe(&s);
                for (f, code) in s.filters.iter().zip(&ack.return_codes) {
                    debug!(device = %self.device_id, filter = %f.path, ?code, "subscribe");
                }
                self.sync_desired();
                // The SUBACK is queued before any request the subscription releases.
                self.feed(Packet::SubAck(ack)).await?;
                self.sync_method_listener()
            }
            Packet::Unsubscribe(u) => {
                let ack = self.session.unsubscribe(&u);
                self.sync_desired();
                self.sync_method_listener()?;
                self.feed(Packet::UnsubAck(ack)).await
            }
            Packet::PingReq => self.feed(Packet::PingResp).await,
            Packet::Disconnect => Err(Close::ClientDisconnect),
            Packet::Connect(_) => Err(Close::Violation("a second CONNECT".to_owned())),
            other => Err(Close::Violation(format!(
                "{} is not a packet a device sends to IoT Hub",
                kind(&other)
            ))),
        }
    }

    /// A device PUBLISH: telemetry is recorded before the PUBACK; twin requests and method
    /// responses are acknowledged and dropped; everything else closes the connection.
    async fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        if p.qos == QoS::ExactlyOnce {
            return Err(Close::Violation(
                "QoS 2 PUBLISH (IoT Hub supports QoS 0 and 1)".to_owned(),
            ));
        }
        // MQTT-3.3.2-2: a PUBLISH topic must not contain wildcards. The device's own id is
        // exempt: the hub allows `#` and `+` in device ids, and its topics embed the id.
        let own = format!("devices/{}/", self.device_id);
        let rest = p.topic.strip_prefix(own.as_str()).unwrap_or(&p.topic);
        if rest.contains(['#', '+']) {
            return Err(Close::Violation(format!(
                "wildcard in the PUBLISH topic '{}'",
                p.topic
            )));
        }
        let mut twin_response = None;
        let topic = super::module::device_form(&self.origin.identity, &p.topic)
            .map_err(Close::Violation)?;
        let route = topics::route_publish(self.device_id, &topic);
        if !matches!(route, Route::Telemetry) {
            self.apply_telemetry()?;
        }
        match route {
            Route::Refused(reason) => return Err(Close::Violation(reason)),
            Route::Twin(req) => {
                let identity = &self.origin.identity;
                twin_response = Some(twin::answer(&self.ctx.hub, identity, &req, &p.payload));
            }
            Route::Ignored => {
                debug!(device = %self.device_id, topic = %p.topic, "twin publish ignored")
            }
            Route::MethodResponse => self.on_method_response(&p)?,
            Route::Telemetry => {
                let message = topics::telemetry(&topic, &p.payload)
                    .map_err(|e| Close::Violation(e.to_string()))?;
                self.telemetry.push(message);
            }
        }
        // Acknowledged means durable: the PUBACK and the twin answer wait for the disk, and
        // the connection goes on reading meanwhile ([`Connected::feed_synced`]).
        if p.qos == QoS::AtLeastOnce {
            self.after_disk.push(Packet::PubAck(PubAck::new(p.pkid)));
        }
        if let Some(r) = twin_response {
            self.after_disk.push(Packet::Publish(r));
        }
        Ok(())
    }

    /// Hands the telemetry read so far to the hub in one operation: one lock, one wake-up per
    /// partition and one state write for a burst of PUBLISHes, instead of one each. Called
    /// before anything else the device sent is handled, so the hub sees its packets in order,
    /// and before a sync starts, so acknowledgements cover it.
    fn apply_telemetry(&mut self) -> Result<(), Close> {
        if self.telemetry.is_empty() {
            return Ok(());
        }
        let (origin, batch, device) = (&self.origin, &mut self.telemetry, self.device_id);
        self.ctx
            .hub
            .run(|hub, now| -> Result<(), HubError> {
                for message in batch.drain(..) {
                    let placed = hub.send_telemetry(origin, message, now)?;
                    debug!(
                        device = %device,
                        partition = placed.partition,
                        seq = placed.sequence_number,
                        "telemetry accepted"
                    );
                }
                Ok(())
            })
            .map_err(Close::Hub)
    }

    /// Holds a desired-property subscription exactly while the session holds the filter.
    fn sync_desired(&mut self) {
        let wanted = self.session.has_sdk_filter(twin::DESIRED_FILTER);
        if wanted && self.desired.is_none() {
            self.desired = Some(self.ctx.hub.subscribe_desired(&self.origin.identity));
        } else if !wanted {
            self.desired = None;
        }
    }

    /// Listens for method requests exactly while the session holds the method filter.
    fn sync_method_listener(&mut self) -> Result<(), Close> {
        let wanted = self
            .session
            .has_sdk_filter(iothub_protocol::method::REQUEST_TOPIC_FILTER);
        match (wanted, self.methods.is_some()) {
            (true, false) => {
                let listener = self
                    .ctx
                    .hub
                    .listen_methods(&self.origin.identity)
                    .map_err(Close::Hub)?;
                self.methods = Some(listener);
            }
            (false, true) => self.methods = None,
            _ => {}
        }
        Ok(())
    }

    /// Sends a method request, and any others already waiting, in one flush.
    async fn send_methods(&mut self, first: crate::hub::MethodRequest) -> Result<(), Close> {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            debug!(device = %self.device_id, method = %request.name, rid = %request.rid, "method request");
            self.feed(Packet::Publish(methods::request_publish(&request)))
                .await?;
            next = self.methods.as_mut().and_then(MethodListener::try_recv);
        }
        self.flush().await
    }

    /// A device's answer to a method request goes to the hub, which drops late or foreign
    /// answers.
    fn on_method_response(&mut self, p: &Publish) -> Result<(), Close> {
        let answer = methods::response(&p.topic).map_err(Close::Violation)?;
        let Some(listener) = &self.methods else {
            debug!(device = %self.device_id, rid = %answer.rid, "method answer without a method subscription dropped");
            return Ok(());
        };
        let disposition = listener.respond(&answer.rid, answer.status, &p.payload);
        debug!(device = %self.device_id, rid = %answer.rid, status = answer.status, ?disposition, "method answer");
        Ok(())
    }

    /// A device PUBACK completes the C2D delivery it acknowledges. A lost lock (it expired,
    /// or the message was purged) is not an error: the hub redelivers or has settled it.
    fn on_puback(&mut self, pkid: u16) {
        let Some(f) = self.session.puback(pkid) else {
            debug!(device = %self.device_id, pkid, "PUBACK for no delivery in flight");
            return;
        };
        self.completions.push(f);
    }

    /// Completes the deliveries the device acknowledged so far in one hub operation: one lock,
    /// one state write for a burst of PUBACKs, instead of one each. Called before any other
    /// packet is handled (so the hub sees the device's packets in order), after each burst and
    /// at teardown. A PUBACK asks for no answer, so nothing waits for the disk here.
    fn apply_completions(&mut self) {
        if self.completions.is_empty() {
            return;
        }
        let (batch, device) = (&mut self.completions, self.device_id);
        let outcomes = self.ctx.hub.run(|hub, now| {
            batch
                .drain(..)
                .map(|f| {
                    (
                        f.sequence_number,
                        hub.complete_c2d(device, &f.lock_token, now),
                    )
                })
                .collect::<Vec<_>>()
        });
        for (seq, outcome) in outcomes {
            match outcome {
                Ok(()) => debug!(device = %device, seq, "c2d completed"),
                Err(HubError::DeviceMessageLockLost { .. }) => {
                    debug!(device = %device, seq, "c2d lock lost before PUBACK")
                }
                Err(e) => debug!(device = %device, seq, error = %e, "c2d complete failed"),
            }
        }
    }

    /// Sends queued C2D messages while subscribed and the window has room: every PUBLISH the
    /// window allows goes into the write buffer, then one flush writes them all.
    async fn pump_c2d(&mut self) -> Result<(), Close> {
        if self.origin.identity.is_module() {
            // IoT Hub has no C2D for modules: a module never receives its device's messages.
            return Ok(());
        }
        let mut fed = false;
        let mut qos0 = Vec::new();
        let r = self.fill_c2d(&mut fed, &mut qos0).await;
        let r = match r {
            Ok(()) if fed => self.flush().await,
            other => other,
        };
        let device = self.device_id;
        for token in qos0 {
            match &r {
                Ok(()) => {
                    if let Err(e) = self
                        .ctx
                        .hub
                        .run(|hub, now| hub.complete_c2d(device, &token, now))
                    {
                        debug!(device = %device, error = %e, "c2d QoS 0 complete failed");
                    }
                }
                Err(_) => self.release(&token),
            }
        }
        r
    }

    async fn fill_c2d(&mut self, fed: &mut bool, qos0: &mut Vec<String>) -> Result<(), Close> {
        while self.session.wants_c2d() {
            let device = self.device_id;
            // A look first: a receive is a whole hub operation (deadlines, a state write
            // check, wake-ups), and this runs after every burst of packets. A message that
            // becomes available later wakes this connection (`c2d_notify`).
            if !self.ctx.hub.read(|hub| hub.has_c2d_available(device)) {
                break;
            }
            let received = self
                .ctx
                .hub
                .run(|hub, now| hub.receive_c2d(device, now))
                .map_err(Close::Hub)?;
            let Some(message) = received else {
                break;
            };
            let delivery = match self.session.deliver(&message) {
                Ok(d) => d,
                Err(e) => {
                    if let Some(token) = &message.system.lock_token {
                        self.release(token);
                    }
                    return Err(Close::Hub(HubError::ServerError {
                        detail: e.to_string(),
                    }));
                }
            };
            let Delivery::Send {
                publish,
                complete_on_send,
            } = delivery
            else {
                debug!(device = %device, seq = ?message.system.sequence_number, "c2d relocked while in flight");
                continue;
            };
            debug!(
                device = %device,
                seq = ?message.system.sequence_number,
                pkid = publish.pkid,
                dup = publish.dup,
                qos = ?publish.qos,
                "c2d publish"
            );
            let sent = self.feed(Packet::Publish(publish)).await;
            *fed = true;
            match (sent, complete_on_send) {
                (Ok(()), Some(token)) => qos0.push(token),
                (Ok(()), None) => {}
                (Err(close), Some(token)) => {
                    self.release(&token);
                    return Err(close);
                }
                // In flight: released at teardown.
                (Err(close), None) => return Err(close),
            }
        }
        Ok(())
    }

    fn release(&self, token: &str) {
        let device = self.device_id;
        if let Err(e) = self
            .ctx
            .hub
            .run(|hub, now| hub.release_c2d_lock(device, token, now))
        {
            debug!(device = %device, error = %e, "c2d release failed");
        }
    }

    /// Returns every delivery still waiting for PUBACK to the queue; how many.
    fn release_inflight(&mut self) -> usize {
        let all = self.session.take_inflight();
        for f in &all {
            self.release(&f.lock_token);
        }
        all.len()
    }
}
