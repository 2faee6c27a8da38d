//! The AMQP 1.0 endpoint: TLS on 5671 and WebSockets on 443 (the HTTP adapter hands the
//! upgraded stream to [`serve_connection`], which the server registers for the AMQP
//! subprotocols).
//!
//! Reference: iothub-protocol.md 5 and official-sdks.md 2.2–2.4. The layers, outside in:
//!
//! * [`listener`]: TLS termination with a handshake deadline.
//! * [`connection`]: the protocol header (plain AMQP for Node and C#, SASL for uamqp and C),
//!   fe2o3's acceptor, sessions, and routing each link by its [`address`].
//! * [`stream`]: the bytes under fe2o3: 16-byte GUID delivery tags (which fe2o3 cannot set),
//!   room in each frame for them, and a bounded wait for the peer's `close`;
//!   [`iothub_protocol::outbox`]: a writer task per connection, so frames flushed one by one go out in
//!   batches.
//! * [`sasl`] and [`cbs`]: how a connection gets its tokens; [`tokens`]: which link they cover.
//! * [`twin`]: a device's twin requests, responses and desired notifications.
//! * [`methods`]: a device's direct-method links (requests out, answers in).
//! * [`modules`]: the same telemetry, twin and method links for a module identity.
//! * [`service`] and [`device`]: the links themselves, over the generic [`inbound`] and
//!   [`outbound`] loops; [`convert`] maps messages and [`errors`] maps hub errors to conditions.
//!
//! The adapters hold no hub rules: every outcome comes from the hub.
//!
//! Decisions worth knowing:
//! * A link attached before a token covers it is refused with `amqp:unauthorized-access` right
//!   away. Every SDK waits for the put-token reply before attaching, so no grace period is needed.
//! * When the token that authorized a link expires and no renewed token covers it, the link is
//!   detached with `amqp:unauthorized-access`; the connection stays open for a new put-token.

mod address;
mod cbs;
mod connection;
mod convert;
mod device;
mod duplicates;
/// The AMQP value-length check, also used by the bench's lean Event Hubs reader.
#[doc(hidden)]
pub mod encoding;
mod errors;
mod eventhubs;
mod frame_guard;
mod full_lists;
#[doc(hidden)]
pub mod fuzzing;
mod handles;
mod inbound;
mod limits;
mod listener;
mod methods;
mod modules;
mod outbound;
mod peer_links;
mod replies;
mod sasl;
mod service;
mod stream;
#[cfg(test)]
mod test_frames;
mod tokens;
mod twin;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::context::Context;

/// The `Sec-WebSocket-Protocol` tokens that select AMQP over a WebSocket: `AMQPWSB10`, as Azure
/// names it, and `amqp`, the OASIS WebSocket binding's name that generic AMQP clients such as
/// fe2o3-amqp-ws offer.
pub const WEBSOCKET_SUBPROTOCOLS: &[&str] = &["AMQPWSB10", "amqp"];

/// Accepts AMQP over TLS until shutdown.
pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    listener::run(listener, tls, ctx).await;
}

/// Accepts plain AMQP (no TLS) until shutdown: the Event Hubs clients' `UseDevelopmentEmulator`
/// port.
pub async fn serve_plain(listener: TcpListener, ctx: Context) {
    eventhubs::listener::run(listener, ctx).await;
}

/// Serves one AMQP connection over any byte stream (TLS or a WebSocket): from the protocol
/// header to the close, ending early on shutdown.
pub async fn serve_connection<IO>(io: IO, peer: String, ctx: Context)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connection::serve(io, peer, ctx).await;
}
