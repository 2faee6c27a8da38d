//! The device endpoint over MQTT 3.1.1: TLS on 8883, WebSockets on 443 (the HTTP adapter hands
//! the upgraded stream to [`serve_connection`], which the server registers for the `mqtt`
//! subprotocol), and optional plain TCP.
//!
//! The adapter's own state, [`MqttState`] (its settings and the persisted sessions), is built by
//! the server and passed to every entry point; nothing of it lives in the shared context.
//!
//! Reference: iothub-protocol.md 3; official-sdks.md 2.1, 2.3. IoT Hub is not a broker: every
//! route is between one device and the hub, so this is a translator on the
//! `rumqttc::mqttbytes::v4` codec, not a pub/sub engine.
//!
//! | file | what |
//! |---|---|
//! | `connect.rs` | CONNECT validation, user-name parsing, the CONNACK code of every refusal |
//! | `topics.rs` | subscription ACL and publish routes |
//! | `twin.rs` | twin request topics, responses and desired notifications |
//! | `methods.rs` | direct methods: the listening subscription, requests, answers |
//! | `session.rs` | subscriptions, packet ids, the C2D in-flight window, DUP (no I/O) |
//! | `store.rs` | persisted sessions (clean session 0), one slot per device |
//! | `limits.rs` | sizes, timeouts, keep-alive, packet rate |
//! | `connection.rs` | the socket loop of one connection |
//! | `after_disk.rs` | PUBACKs and twin answers held until the disk has their data, pipelined |
//! | `listener.rs` | accept loops (TLS handshake, connection cap, shutdown) |
//!
//! Decisions on the reference's open questions (section 10):
//! - CONNACK codes: bad, expired or foreign SAS and unknown device 0x05; disabled device 0x03;
//!   client id / user name mismatch, malformed user name or a module client id 0x02; no
//!   password 0x04.
//! - In flight: at most [`MqttSettings::max_inflight`] unacknowledged C2D PUBLISHes per connection,
//!   in queue order. If a lock runs out while its PUBLISH is unacknowledged, the hub locks the
//!   message again for this connection and the PUBACK completes the new lock; nothing is resent
//!   on a live connection. A PUBACK whose lock is lost is ignored.
//! - QoS 0 C2D subscriptions complete each message once it is written.
//! - Clean session 1 withholds delivery until SUBSCRIBE; it does not purge the queue.
//! - Twin GET and reported PATCH are answered on `$iothub/twin/res/...` and desired changes
//!   pushed while the device subscribes to the desired filter (`twin.rs`); method responses go
//!   to the hub (`methods.rs`); other twin topics are acknowledged and dropped; any other topic
//!   outside the device's events topic closes the connection.
//! - The retain flag of a device PUBLISH is ignored; wills are not sent.

mod after_disk;
mod codec;
mod connect;
mod connection;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod listener;
mod methods;
mod module;
mod session;
mod store;
mod topics;
mod twin;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::context::Context;

pub use limits::Limits;
pub use session::PersistedSession;
pub use store::SessionStore;

/// The `Sec-WebSocket-Protocol` tokens that select MQTT over a WebSocket.
pub const WEBSOCKET_SUBPROTOCOLS: &[&str] = &["mqtt"];

/// Settings of the MQTT endpoint that are not hub rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// Most C2D messages a connection may hold unacknowledged (in flight) at once.
    pub max_inflight: usize,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings { max_inflight: 16 }
    }
}

/// What the MQTT adapter keeps across its connections, owned by one emulator: its settings and
/// the persisted sessions. Cheap to clone (the sessions are shared).
#[derive(Debug, Clone, Default)]
pub struct MqttState {
    /// Endpoint settings.
    pub settings: MqttSettings,
    /// Persisted sessions (clean session 0), per device.
    pub sessions: Arc<SessionStore>,
}

impl MqttState {
    /// Fresh state (no stored session) with these settings.
    pub fn new(settings: MqttSettings) -> Self {
        MqttState {
            settings,
            sessions: Arc::default(),
        }
    }
}

/// Accepts MQTT over TLS until shutdown.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Context,
    state: MqttState,
) {
    listener::serve_tls(listener, tls, ctx, state).await;
}

/// Accepts plain-TCP MQTT (debugging only) until shutdown.
pub async fn serve_tcp(listener: TcpListener, ctx: Context, state: MqttState) {
    listener::serve_tcp(listener, ctx, state).await;
}

/// Serves one MQTT connection over any byte stream (TLS, TCP, or a WebSocket), until the
/// client leaves, the device is disconnected, or the emulator stops.
pub fn serve_connection<IO>(
    io: IO,
    peer: String,
    ctx: Context,
    state: MqttState,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_with(io, peer, ctx, state, Limits::default())
}

/// [`serve_connection`] with other limits (shorter timeouts in tests).
pub fn serve_connection_with<IO>(
    io: IO,
    peer: String,
    ctx: Context,
    state: MqttState,
    limits: Limits,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Not an `async fn`: one would keep its own copy of `io` beside the one inside
    // `connection::run`'s future, for every connection.
    let span = tracing::info_span!("mqtt", %peer);
    connection::run(io, ctx, state, limits).instrument(span)
}
