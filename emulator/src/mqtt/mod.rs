//! The device endpoint over MQTT 3.1.1 (TLS on 8883, WebSockets on 443). Arrives with issue 4.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::context::Context;

/// Accepts MQTT over TLS until shutdown.
pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    let _ = (listener, tls);
    ctx.shutdown.cancelled().await;
}

/// Accepts plain-TCP MQTT (debugging only) until shutdown.
pub async fn serve_tcp(listener: TcpListener, ctx: Context) {
    let _ = listener;
    ctx.shutdown.cancelled().await;
}

/// Serves one MQTT connection over any byte stream (TLS, TCP, or a WebSocket).
pub async fn serve_connection<IO>(io: IO, peer: String, ctx: Context)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, peer, ctx);
}
