//! WebSocket upgrades on the HTTPS port, and the byte-stream adapter the protocols inside need.
//!
//! Reference: official-sdks.md 2.3 and 3. `GET /$iothub/websocket` carries MQTT or AMQP,
//! `/$servicebus/websocket` (uamqp) AMQP only, chosen by `Sec-WebSocket-Protocol`. This module
//! knows no protocol: the server registers each one in a [`WebSocketRoutes`] table (its
//! subprotocol tokens, the paths it is served on, and the function that serves an upgraded
//! stream), and an upgrade goes to the first registered protocol the client offers. The
//! subprotocol is matched without ASCII case and echoed back as the client spelled it. After the
//! upgrade, [`WsIo`] turns the WebSocket into a byte stream: binary (and, leniently, text)
//! messages are concatenated on read, and each write becomes one binary message.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use iothub_protocol::HubError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::AppState;
use super::error::ApiError;
use crate::context::Context;

/// Largest WebSocket message or frame accepted from a client. An MQTT packet or AMQP frame is
/// at most a little over 256 KB; this leaves room without letting a client exhaust memory.
pub const MAX_WS_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest binary message one write produces.
pub const MAX_WS_WRITE: usize = 64 * 1024;
/// How long a WebSocket connection may take to close after shutdown before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// An upgraded WebSocket as the byte stream a protocol reads and writes.
pub type WsStream = WsIo<WebSocket>;

/// The two WebSocket paths of the HTTPS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsPath {
    /// `/$iothub/websocket`: what the device and service SDKs use.
    IotHub,
    /// `/$servicebus/websocket`: uamqp's path for AMQP.
    ServiceBus,
}

/// Serves one session of a protocol over an upgraded stream: `(stream, peer label, context)`.
type Serve =
    dyn Fn(WsStream, String, Context) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

#[derive(Clone)]
struct WsRoute {
    tokens: &'static [&'static str],
    paths: Vec<WsPath>,
    serve: Arc<Serve>,
}

/// Which protocol serves which `Sec-WebSocket-Protocol`, built by the layer that wires the
/// emulator together. Registration order is preference order: when a client offers several
/// registered subprotocols on one path, the first registered wins.
#[derive(Clone, Default)]
pub struct WebSocketRoutes {
    routes: Arc<Vec<WsRoute>>,
}

impl WebSocketRoutes {
    /// No protocol: every upgrade is refused.
    pub fn new() -> Self {
        WebSocketRoutes::default()
    }

    /// Registers a protocol: the subprotocol `tokens` that select it (the first is the name
    /// shown in errors), the `paths` it is served on, and the function that serves one
    /// upgraded stream until the session ends.
    pub fn register<F, Fut>(
        mut self,
        tokens: &'static [&'static str],
        paths: &[WsPath],
        serve: F,
    ) -> Self
    where
        F: Fn(WsStream, String, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let serve: Arc<Serve> = Arc::new(move |io, peer, ctx| Box::pin(serve(io, peer, ctx)));
        // Built once at start, before any clone is shared: this does not copy.
        Arc::make_mut(&mut self.routes).push(WsRoute {
            tokens,
            paths: paths.to_vec(),
            serve,
        });
        self
    }

    /// The routes served on `path`, in preference order.
    fn on(&self, path: WsPath) -> impl Iterator<Item = &WsRoute> {
        self.routes.iter().filter(move |r| r.paths.contains(&path))
    }
}

/// The client's address, as the accept loop recorded it.
pub struct Peer(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Peer(peer))
    }
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `GET /$iothub/websocket`.
pub async fn iothub(
    State(st): State<AppState>,
    Peer(peer): Peer,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    upgrade(&st, peer, ws, WsPath::IotHub)
}

/// `GET /$servicebus/websocket`.
pub async fn servicebus(
    State(st): State<AppState>,
    Peer(peer): Peer,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    upgrade(&st, peer, ws, WsPath::ServiceBus)
}

fn upgrade(st: &AppState, peer: String, ws: Upgrade, path: WsPath) -> Result<Response, ApiError> {
    let mut ws = ws.map_err(|e| {
        HubError::argument(format!(
            "this path only accepts a WebSocket upgrade (GET over HTTP/1.1 with Upgrade: websocket): {e}"
        ))
    })?;
    let offered = |route: &WsRoute| {
        ws.requested_protocols()
            .find(|v| {
                v.to_str().is_ok_and(|s| {
                    route
                        .tokens
                        .iter()
                        .any(|t| s.trim().eq_ignore_ascii_case(t))
                })
            })
            .cloned()
    };
    let routes = &st.websockets;
    let (route, value) = routes
        .on(path)
        .find_map(|r| offered(r).map(|v| (r, v)))
        .ok_or_else(|| {
            let names: Vec<&str> = routes
                .on(path)
                .filter_map(|r| r.tokens.first().copied())
                .collect();
            HubError::argument(format!(
                "Sec-WebSocket-Protocol must offer one of: {}",
                names.join(", ")
            ))
        })?;
    ws.set_selected_protocol(value);
    let name = route.tokens.first().copied().unwrap_or_default();
    tracing::debug!(%peer, protocol = name, "websocket upgrade");
    let serve = route.serve.clone();
    let ctx = st.ctx.clone();
    // The connection's place under the connection cap moves with it into the session's task.
    let slot = crate::accept::carry();
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| {
            // axum runs this in a task of its own; tracking it lets shutdown wait for it.
            let tasks = ctx.tasks.clone();
            let session = serve_upgraded(socket, serve, peer, ctx);
            tasks.track_future(async move {
                match slot {
                    Some(slot) => slot.run(session).await,
                    None => session.await,
                }
            })
        }))
}

async fn serve_upgraded(socket: WebSocket, serve: Arc<Serve>, peer: String, ctx: Context) {
    let io = WsIo::new(socket);
    let label = format!("{peer} (websocket)");
    let shutdown = ctx.shutdown.clone();
    let session = serve(io, label, ctx);
    // The protocol ends its session on shutdown itself; this only bounds how long that takes.
    tokio::select! {
        () = session => {}
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
}

/// A WebSocket seen as a byte stream (`AsyncRead + AsyncWrite`).
///
/// Works over anything that is a stream and a sink of axum WebSocket messages (a
/// [`WebSocket`], or a test double). Reading concatenates the payloads of binary and text
/// messages, skips pings and pongs (the WebSocket layer answers pings itself), and ends at a
/// close message or the end of the stream. Each write sends one binary message of at most
/// [`MAX_WS_WRITE`] bytes; shutdown sends a close message.
pub struct WsIo<S> {
    inner: S,
    pending: Bytes,
    read_done: bool,
}

impl<S> WsIo<S> {
    /// Wraps a WebSocket.
    pub fn new(inner: S) -> Self {
        WsIo {
            inner,
            pending: Bytes::new(),
            read_done: false,
        }
    }
}

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl<S> AsyncRead for WsIo<S>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Text(t))) => self.pending = Bytes::from(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.read_done = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsIo<S>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.inner.poll_ready_unpin(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_WS_WRITE);
        self.inner
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(io_error)?;
        // Push the message out now if the socket takes it; otherwise the next flush does, and
        // an error surfaces there.
        let _ = self.inner.poll_flush_unpin(cx);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush_unpin(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_close_unpin(cx).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use axum::extract::ws::CloseFrame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A WebSocket double: scripted incoming messages, recorded outgoing ones.
    #[derive(Default)]
    struct FakeSocket {
        incoming: VecDeque<Result<Message, axum::Error>>,
        sent: Vec<Message>,
        flushed: usize,
        closed: bool,
    }

    impl Stream for FakeSocket {
        type Item = Result<Message, axum::Error>;

        fn poll_next(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.incoming.pop_front())
        }
    }

    impl Sink<Message> for FakeSocket {
        type Error = axum::Error;

        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.sent.push(item);
            Ok(())
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            self.flushed = self.sent.len();
            Poll::Ready(Ok(()))
        }

        fn poll_close(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            self.closed = true;
            Poll::Ready(Ok(()))
        }
    }

    fn script(msgs: Vec<Message>) -> WsIo<FakeSocket> {
        WsIo::new(FakeSocket {
            incoming: msgs.into_iter().map(Ok).collect(),
            ..FakeSocket::default()
        })
    }

    #[test]
    fn routes_keep_registration_order_per_path() {
        let routes = WebSocketRoutes::new()
            .register(&["mqtt"], &[WsPath::IotHub], |_, _, _| async {})
            .register(
                &["AMQPWSB10", "amqp"],
                &[WsPath::IotHub, WsPath::ServiceBus],
                |_, _, _| async {},
            );
        let names = |p| routes.on(p).map(|r| r.tokens[0]).collect::<Vec<_>>();
        assert_eq!(names(WsPath::IotHub), ["mqtt", "AMQPWSB10"]);
        assert_eq!(names(WsPath::ServiceBus), ["AMQPWSB10"]);
        assert_eq!(WebSocketRoutes::new().on(WsPath::IotHub).count(), 0);
    }

    #[tokio::test]
    async fn reads_concatenate_payloads_across_small_buffers() {
        let mut io = script(vec![
            Message::Binary(Bytes::from_static(b"\x10\x0c")),
            Message::Ping(Bytes::new()),
            Message::Binary(Bytes::new()),
            Message::Text("MQTT".into()),
            Message::Binary(Bytes::from_static(b"rest")),
            Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "bye".into(),
            })),
            Message::Binary(Bytes::from_static(b"after close")),
        ]);
        let mut small = [0u8; 3];
        let n = io.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"\x10\x0c");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"MQTTrest");
        assert_eq!(io.read(&mut small).await.unwrap(), 0, "stays at EOF");
    }

    #[tokio::test]
    async fn end_of_stream_is_eof_and_errors_are_io_errors() {
        let mut io = script(vec![Message::Binary(Bytes::from_static(b"x"))]);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"x");

        let mut io = WsIo::new(FakeSocket {
            incoming: VecDeque::from([Err(axum::Error::new(io::Error::other("reset")))]),
            ..FakeSocket::default()
        });
        let mut buf = [0u8; 4];
        assert!(io.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message_and_shutdown_closes() {
        let mut io = script(vec![]);
        io.write_all(b"\x20\x02\x00\x00").await.unwrap();
        let big = vec![7u8; MAX_WS_WRITE + 10];
        io.write_all(&big).await.unwrap();
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        let sock = io.inner;
        assert!(sock.closed);
        assert_eq!(sock.flushed, 3);
        let sizes: Vec<usize> = sock
            .sent
            .iter()
            .map(|m| match m {
                Message::Binary(b) => b.len(),
                other => panic!("not binary: {other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![4, MAX_WS_WRITE, 10]);
    }
}
