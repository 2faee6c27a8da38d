//! The HTTPS surface (registry, device and service REST, control API, WebSocket upgrades) and
//! the plain-HTTP port (health, CA download). Arrives with issue 3.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::context::Context;

/// Serves HTTPS until shutdown.
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    let _ = (listener, tls);
    ctx.shutdown.cancelled().await;
}

/// Serves the plain-HTTP port (health, readiness, CA download) until shutdown.
pub async fn serve_plain(listener: TcpListener, ctx: Context) {
    let _ = listener;
    ctx.shutdown.cancelled().await;
}
