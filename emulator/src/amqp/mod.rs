//! The AMQP 1.0 endpoint on 5671 (and WebSockets on 443). Arrives with issue 5.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::context::Context;

/// Accepts AMQP over TLS until shutdown.
pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    let _ = (listener, tls);
    ctx.shutdown.cancelled().await;
}

/// Serves one AMQP connection over any byte stream (TLS or a WebSocket).
pub async fn serve_connection<IO>(io: IO, peer: String, ctx: Context)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, peer, ctx);
}
