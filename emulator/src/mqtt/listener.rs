//! The MQTT listeners: TLS (8883) and plain TCP (debugging), on the shared accept loop of
//! [`crate::accept`] (connection cap, probation until CONNECT, shutdown).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::context::Context;

use super::{MqttState, serve_connection};

/// A TLS handshake that takes longer is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Context,
    state: MqttState,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(listener, ctx, "mqtts", move |stream, peer, ctx| {
        let acceptor = acceptor.clone();
        let state = state.clone();
        async move {
            let handshake = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
            };
            match handshake {
                Ok(Ok(tls)) => serve_connection(tls, peer, ctx, state).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "mqtt TLS handshake failed"),
                Err(_) => debug!(%peer, "mqtt TLS handshake timed out"),
            }
        }
    })
    .await;
}

pub(super) async fn serve_tcp(listener: TcpListener, ctx: Context, state: MqttState) {
    accept_loop(listener, ctx, "mqtt-tcp", move |stream, peer, ctx| {
        serve_connection(stream, peer, ctx, state.clone())
    })
    .await;
}

async fn accept_loop<F, Fut>(listener: TcpListener, ctx: Context, what: &'static str, handle: F)
where
    F: Fn(TcpStream, String, Context) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::accept::serve(listener, what, ctx, move |stream, peer, ctx| {
        handle(stream, peer.to_string(), ctx)
    })
    .await;
}
