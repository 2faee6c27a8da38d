//! The TLS listener on 5671: accept, handshake (with a deadline), then serve the connection.
//!
//! The SDKs start TLS at byte 0 (no AMQP TLS header), so TLS is terminated here with
//! tokio-rustls and the decrypted stream handed to [`super::serve_connection`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::context::Context;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections until shutdown; each one runs on its own task.
pub async fn run(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    let acceptor = TlsAcceptor::from(tls);
    crate::accept::serve(listener, "amqps", ctx, move |tcp, addr, ctx| {
        let acceptor = acceptor.clone();
        async move {
            let peer = addr.to_string();
            let handshake = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => h,
            };
            match handshake {
                Ok(Ok(tls)) => super::serve_connection(tls, peer, ctx).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "AMQP TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "AMQP TLS handshake timed out"),
            }
        }
    })
    .await;
}
