//! Accept loops and connections: TLS, HTTP/1.1 and h2, timeouts, shutdown.
//!
//! One loop per listening port accepts TCP connections until `ctx.shutdown`; each connection
//! runs in a task on `ctx.tasks`. A connection does the TLS handshake (HTTPS port) and is then
//! served by hyper-util's auto builder (HTTP/1.1, or h2 by ALPN or preface) through the axum
//! app, with upgrades enabled for WebSockets.
//!
//! Nothing a client does can hold a task forever ([`Limits`]): the TLS handshake is bounded;
//! HTTP/1.1 request headers must arrive within `header_read` (which also closes idle keep-alive
//! connections); a request must complete within `request`; h2 connections are pinged and closed
//! when the pings go unanswered; and a connection that moves no byte for `idle` while no request
//! is being answered is closed (this also covers a client that never sends its first byte; a
//! direct-method call legitimately stays silent for minutes, bounded by its request timeout). On shutdown each connection is asked
//! to finish gracefully and is dropped after `shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneService;

use crate::context::Context;

/// The whole HTTP application of one port, as a cloneable service.
pub type App = BoxCloneService<Request<Body>, Response, Infallible>;

/// Time limits that keep a slow or stalled client from holding a connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshake.
    pub tls_handshake: Duration,
    /// HTTP/1.1 request line and headers (also the keep-alive idle limit).
    pub header_read: Duration,
    /// One request, body included, until its response starts.
    pub request: Duration,
    /// A connection that moves no byte in either direction for this long is closed.
    pub idle: Duration,
    /// Interval of h2 keep-alive pings (and how long the answer may take).
    pub h2_keep_alive: Duration,
    /// How long connections may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(20),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            h2_keep_alive: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Accepts connections on `listener` until shutdown; TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: App,
    ctx: Context,
    limits: Limits,
) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                ctx.tasks.spawn(connection(
                    tcp,
                    peer,
                    tls.clone(),
                    app.clone(),
                    ctx.clone(),
                    limits,
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: App,
    ctx: Context,
    limits: Limits,
) {
    let activity = Activity::new();
    let io = Watched {
        inner: tcp,
        activity: activity.clone(),
    };
    let Some(acceptor) = tls else {
        return serve_http(io, peer, app, ctx, limits, activity).await;
    };
    let handshake = tokio::select! {
        () = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(limits.tls_handshake, acceptor.accept(io)) => r,
    };
    match handshake {
        Ok(Ok(stream)) => serve_http(stream, peer, app, ctx, limits, activity).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    app: App,
    ctx: Context,
    limits: Limits,
    activity: Activity,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = CountingApp {
        app,
        peer,
        activity: activity.clone(),
    };
    let mut builder = auto::Builder::new(TrackedExecutor(ctx.tasks.clone()));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keep_alive)
        .keep_alive_timeout(limits.h2_keep_alive);
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut grace_ends: Option<Instant> = None;
    loop {
        let idle_ends = activity.last() + limits.idle;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = ctx.shutdown.cancelled(), if grace_ends.is_none() => {
                conn.as_mut().graceful_shutdown();
                grace_ends = Some(Instant::now() + limits.shutdown_grace);
            }
            () = tokio::time::sleep_until(grace_ends.unwrap_or(idle_ends)), if grace_ends.is_some() => {
                return;
            }
            () = tokio::time::sleep_until(idle_ends) => {
                if !activity.is_answering() && activity.last() + limits.idle <= Instant::now() {
                    tracing::debug!(%peer, "closing an HTTP connection that moved no data");
                    return;
                }
            }
        }
    }
}

/// Runs hyper's h2 stream tasks on the emulator's task tracker, so shutdown waits for them.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    answering: Arc<AtomicU64>,
}

/// The app of one connection: records the peer on each request and counts the requests being
/// answered (a connection with one is not idle).
#[derive(Clone)]
struct CountingApp {
    app: App,
    peer: SocketAddr,
    activity: Activity,
}

impl tower::Service<Request<Incoming>> for CountingApp {
    type Response = Response;
    type Error = Infallible;
    type Future = Counted;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Counted {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Counted {
            _answering: self.activity.answering(),
            answer: self.app.call(req),
        }
    }
}

/// What [`App`] returns for a request.
type AppFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>;

/// An answer being computed, counted as such until it is ready or dropped.
struct Counted {
    answer: AppFuture,
    _answering: Answering,
}

impl Future for Counted {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.answer.as_mut().poll(cx)
    }
}

/// Counts one request as being answered until dropped.
struct Answering(Arc<AtomicU64>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            answering: Arc::new(AtomicU64::new(0)),
        }
    }

    fn answering(&self) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.answering.clone())
    }

    fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed) > 0
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when bytes last moved.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
