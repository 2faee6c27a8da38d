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
/// Pause after an accept error (e.g. too many open files) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts TLS connections until shutdown; each one runs on its own task.
pub async fn run(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Context) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "AMQP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        ctx.tasks.clone().spawn(async move {
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
        });
    }
}
