//! The AMQP side of the client: one connection to the hub, owned by one task.
//!
//! ```text
//!  send_c2d ─┐  Command::Send(msg)              ┌──────────── connection task ────────────┐
//!  send_c2d ─┼──────────────────────────────▶   │ TLS ─ AMQP connection ─ session         │
//!  feedback ─┘  ◀── DeliveryFut / Receiver ──   │   ├─ $cbs sender + receiver (put-token) │
//!                                               │   ├─ C2D sender → /messages/devicebound │
//!  caller awaits its own DeliveryFut            │   └─ feedback receivers (handed out)    │
//!                                               └─────────────────────────────────────────┘
//! ```
//!
//! fe2o3's `Sender::send` needs `&mut`, so one task owns the connection, the session and the
//! one C2D sender link. It takes commands from a bounded channel and, for a send, only hands
//! the transfer to the session (`send_batchable`): that returns as soon as the transfer is
//! queued, and the [`DeliveryFut`] that resolves to the hub's outcome is given back to the
//! caller, which awaits it on its own task. So thousands of sends can be in flight on one link
//! while the task does a few microseconds of work per send; link credit and the channel bound
//! give backpressure.
//!
//! The connection is opened on the first command (TLS from byte 0, no SASL layer, then a CBS
//! put-token, as the Node service SDK does) and the SAS token is put again on the same
//! connection before it expires. When handing a transfer to the link fails because the link,
//! session or connection is gone, the task drops the connection, opens a new one and tries that
//! transfer once more: the transfer never left, so this cannot duplicate a message. A failure
//! after the transfer left (the connection dies while the outcome is pending) is reported to
//! that caller as [`Error::Connection`], and the next command reconnects.

pub(crate) mod cbs;
pub(crate) mod convert;
pub(crate) mod errors;
pub(crate) mod socket;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::{DeliveryFut, Sendable};
use fe2o3_amqp::link::{Receiver, SendError, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Data, Message as AmqpMessage, Outcome};
use fe2o3_amqp::{Connection, Session};
use iothub_protocol::outbox::BatchedStream;
use iothub_protocol::tls::{describe_handshake_failure, server_name};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::token::TokenSource;
use cbs::Cbs;

/// The service-facing C2D endpoint.
pub(crate) const DEVICEBOUND: &str = "/messages/devicebound";
/// The feedback endpoint, spelled as the Node and C# SDKs spell it.
pub(crate) const FEEDBACK: &str = "/messages/serviceBound/feedback";

/// How many commands may wait for the connection task before callers are held back.
const COMMAND_QUEUE: usize = 1024;
/// How long a graceful close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome future of one transfer.
pub(crate) type PendingOutcome = DeliveryFut<Result<Outcome, SendError>>;

/// What the connection task needs to open and keep a connection.
pub(crate) struct AmqpSettings {
    /// Host to connect to and to check the certificate against (no port).
    pub host: String,
    /// Port (5671 on a real hub, 443 over WebSockets).
    pub port: u16,
    /// TLS or a WebSocket over TLS.
    pub transport: socket::AmqpTransport,
    /// TLS client configuration (ring, trusted roots, no ALPN).
    pub tls: Arc<rustls::ClientConfig>,
    /// Makes the SAS tokens.
    pub tokens: Arc<TokenSource>,
    /// Limit for opening a connection (TCP, TLS, AMQP open, session, CBS and the first
    /// put-token) and for attaching a link.
    pub connect_timeout: Duration,
    /// Limit for a later put-token and for handing a transfer to the link.
    pub request_timeout: Duration,
}

enum Command {
    Send {
        message: Box<AmqpMessage<Data>>,
        reply: oneshot::Sender<Result<PendingOutcome, Error>>,
    },
    OpenFeedback {
        reply: oneshot::Sender<Result<Receiver, Error>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// The caller's end of the connection task. Cheap to clone; the task is spawned on first use
/// (so a client can be built outside a runtime) and ends when every handle is gone or
/// [`AmqpHandle::close`] is called.
#[derive(Clone)]
pub(crate) struct AmqpHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    settings: Arc<AmqpSettings>,
    tx: OnceLock<mpsc::Sender<Command>>,
}

impl AmqpHandle {
    pub fn new(settings: AmqpSettings) -> Self {
        AmqpHandle {
            inner: Arc::new(HandleInner {
                settings: Arc::new(settings),
                tx: OnceLock::new(),
            }),
        }
    }

    fn tx(&self) -> &mpsc::Sender<Command> {
        self.inner.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let task = Task {
                settings: self.inner.settings.clone(),
                rx,
                conn: None,
                connections: 0,
            };
            tokio::spawn(task.run());
            tx
        })
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.tx().send(command).await.map_err(|_| Error::Closed)
    }

    /// Hands a message to the C2D link and waits for the hub's outcome.
    pub async fn send(&self, message: AmqpMessage<Data>) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Send {
            message: Box::new(message),
            reply,
        })
        .await?;
        let outcome = rx.await.map_err(|_| Error::Closed)??;
        match outcome.await {
            Ok(outcome) => errors::outcome_result(outcome),
            Err(e) => Err(errors::send_error(e)),
        }
    }

    /// Attaches a new feedback receiver link on the connection (opening it if needed).
    pub async fn open_feedback(&self) -> Result<Receiver, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::OpenFeedback { reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Closes the connection; later commands fail with [`Error::Closed`].
    pub async fn close(&self) {
        let Some(tx) = self.inner.tx.get() else {
            // Never used: make sure it never starts.
            let (tx, _) = mpsc::channel(1);
            let _ = self.inner.tx.set(tx);
            return;
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Command::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// One open connection with its session, CBS links and (once used) the C2D sender.
struct Conn {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: Cbs,
    sender: Option<Sender>,
    renew_at: Instant,
    id: u64,
}

impl Conn {
    async fn close(mut self) {
        let _ = timeout(CLOSE_TIMEOUT, async {
            if let Some(sender) = self.sender.take() {
                let _ = sender.close().await;
            }
            self.cbs.close().await;
            let _ = self.session.end().await;
            let _ = self.connection.close().await;
        })
        .await;
    }
}

struct Task {
    settings: Arc<AmqpSettings>,
    rx: mpsc::Receiver<Command>,
    conn: Option<Conn>,
    connections: u64,
}

impl Task {
    async fn run(mut self) {
        loop {
            let renew_at = self.conn.as_ref().map(|c| c.renew_at);
            let command = tokio::select! {
                command = self.rx.recv() => command,
                () = sleep_until(renew_at.unwrap_or_else(Instant::now)), if renew_at.is_some() => {
                    self.renew().await;
                    continue;
                }
            };
            match command {
                None => break,
                Some(Command::Send { message, reply }) => {
                    if reply.is_closed() {
                        continue; // the caller gave up (timeout or cancel)
                    }
                    let result = self.send(*message).await;
                    let _ = reply.send(result);
                }
                Some(Command::OpenFeedback { reply }) => {
                    let result = self.open_feedback().await;
                    let _ = reply.send(result);
                }
                Some(Command::Close { reply }) => {
                    self.disconnect().await;
                    self.rx.close();
                    let _ = reply.send(());
                    break;
                }
            }
        }
        self.disconnect().await;
    }

    async fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(connection = conn.id, "closing the AMQP connection");
            conn.close().await;
        }
    }

    /// The open connection, opening one if there is none.
    async fn connected(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.as_ref().is_some_and(|c| c.connection.is_closed()) {
            self.disconnect().await;
        }
        if self.conn.is_none() {
            let limit = self.settings.connect_timeout;
            self.connections += 1;
            let id = self.connections;
            let conn = timeout(limit, open(&self.settings, id))
                .await
                .map_err(|_| Error::Timeout {
                    operation: "opening the AMQP connection",
                    after: limit,
                })??;
            tracing::debug!(connection = id, "AMQP connection open");
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::protocol("no connection after opening one"))
    }

    /// Puts a fresh token on the open connection; on failure the connection is dropped and
    /// the next command opens a new one with a new token.
    async fn renew(&mut self) {
        let settings = self.settings.clone();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let result = async {
            let token = settings.tokens.fresh()?;
            timeout(
                settings.request_timeout,
                conn.cbs.put_token(settings.tokens.audience(), &token.value),
            )
            .await
            .map_err(|_| Error::Timeout {
                operation: "renewing the SAS token",
                after: settings.request_timeout,
            })??;
            Ok::<_, Error>((token.renew_at, token.expiry_unix))
        }
        .await;
        match result {
            Ok((renew_at, expiry)) => {
                tracing::debug!(connection = conn.id, expiry, "SAS token renewed");
                conn.renew_at = Instant::from_std(renew_at);
            }
            Err(e) => {
                tracing::warn!("renewing the SAS token failed, reconnecting on next use: {e}");
                self.disconnect().await;
            }
        }
    }

    async fn send(&mut self, message: AmqpMessage<Data>) -> Result<PendingOutcome, Error> {
        let sendable = Sendable::builder().message(message).build();
        let attach_limit = self.settings.connect_timeout;
        let limit = self.settings.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.connected().await?;
            if conn.sender.is_none() {
                let attached = timeout(
                    attach_limit,
                    Sender::builder()
                        .name(format!("c2d-sender-{}", uuid::Uuid::new_v4()))
                        .target(DEVICEBOUND)
                        .attach(&mut conn.session),
                )
                .await;
                match attached {
                    Ok(Ok(s)) => conn.sender = Some(s),
                    Ok(Err(e)) => {
                        self.disconnect().await;
                        return Err(errors::sender_attach_error(e, "the C2D sender link"));
                    }
                    Err(_) => {
                        self.disconnect().await;
                        return Err(Error::Timeout {
                            operation: "attaching the C2D sender link",
                            after: attach_limit,
                        });
                    }
                }
            }
            let Some(sender) = conn.sender.as_mut() else {
                return Err(Error::protocol("no C2D sender after attaching one"));
            };
            let error = match timeout(limit, sender.send_batchable_ref(&sendable)).await {
                Ok(Ok(fut)) => return Ok(fut),
                Ok(Err(e)) if e.recovery().link_is_usable() => return Err(errors::send_error(e)),
                Ok(Err(e)) => errors::send_error(e),
                Err(_) => {
                    // No credit in time: the hub stopped reading. Start over next time.
                    self.disconnect().await;
                    return Err(Error::Timeout {
                        operation: "handing a C2D message to the AMQP link",
                        after: limit,
                    });
                }
            };
            // The link, session or connection is gone (or the hub detached the link, for
            // example because its token ran out); the transfer never left, so it is safe to
            // send it again on a new connection with a fresh token.
            self.disconnect().await;
            if attempt >= 2 {
                return Err(error);
            }
            tracing::debug!("C2D link failed ({error}); reconnecting and sending again");
        }
    }

    async fn open_feedback(&mut self) -> Result<Receiver, Error> {
        let limit = self.settings.connect_timeout;
        let conn = self.connected().await?;
        let attached = timeout(
            limit,
            Receiver::builder()
                .name(format!("feedback-receiver-{}", uuid::Uuid::new_v4()))
                .source(FEEDBACK)
                .target("feedback")
                .auto_accept(false)
                .attach(&mut conn.session),
        )
        .await;
        match attached {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.disconnect().await;
                Err(errors::receiver_attach_error(
                    e,
                    "the feedback receiver link",
                ))
            }
            Err(_) => {
                self.disconnect().await;
                Err(Error::Timeout {
                    operation: "attaching the feedback receiver link",
                    after: limit,
                })
            }
        }
    }
}

/// How long a connection's writer may take to get its last frames (a `close`) out once the
/// connection is dropped.
pub(crate) const WRITE_GRACE: Duration = Duration::from_secs(2);

/// TLS from byte 0 (as the SDKs speak on 5671), the AMQP connection without a SASL layer, a
/// session, the CBS links and the first put-token.
async fn open(settings: &AmqpSettings, id: u64) -> Result<Conn, Error> {
    let stream = socket::dial(
        &settings.host,
        settings.port,
        settings.tls.clone(),
        settings.transport,
        socket::IOTHUB_PATH,
    )
    .await?;
    // fe2o3 flushes every frame; batched, a burst of sends is one TLS record and one write.
    let stream = BatchedStream::new(stream, WRITE_GRACE);
    let container_id = format!("iothub-service-{}", uuid::Uuid::new_v4());
    let mut connection = Connection::builder()
        .container_id(container_id)
        .hostname(settings.host.as_str())
        .scheme("amqp")
        .open_with_stream(stream)
        .await
        .map_err(|e| {
            Error::connection(
                format!(
                    "cannot open an AMQP connection to {}:{}",
                    settings.host, settings.port
                ),
                e,
            )
        })?;
    let mut session = Session::begin(&mut connection)
        .await
        .map_err(|e| Error::connection("cannot begin an AMQP session", e))?;
    let mut cbs = Cbs::attach(&mut session, &id.to_string()).await?;
    let token = settings.tokens.fresh()?;
    cbs.put_token(settings.tokens.audience(), &token.value)
        .await?;
    Ok(Conn {
        connection,
        session,
        cbs,
        sender: None,
        renew_at: Instant::from_std(token.renew_at),
        id,
    })
}

/// A TCP connection with TLS on top, the certificate checked against `host`.
pub(crate) async fn tls_connect(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let name = server_name(host)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::connection(format!("cannot connect to {host}:{port}"), e))?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config).connect(name, tcp).await.map_err(
        |e| match describe_handshake_failure(&e, host) {
            Some(tls) => Error::from(tls),
            None => Error::connection(format!("TLS handshake with {host}:{port} failed"), e),
        },
    )
}
