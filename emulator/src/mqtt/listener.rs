//! Accept loops: TLS (8883) and plain TCP (debugging). Each connection runs on the emulator's
//! task tracker, so shutdown waits for it; accepting stops when the shutdown token fires, and
//! every connection ends on the same token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::context::Context;

use super::{MqttState, serve_connection};

/// A TLS handshake that takes longer is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most open connections per listener; further clients wait in the OS backlog.
const MAX_CONNECTIONS: usize = 100_000;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let conn = handle(stream, addr.to_string(), ctx.clone());
                // `map`, not `async move { conn.await; drop(permit) }`: an async block stores
                // the captured future and the awaited one separately, doubling every
                // connection's task allocation.
                ctx.tasks.spawn(conn.map(move |()| drop(permit)));
            }
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    debug!(listener = what, "stopped accepting");
}
