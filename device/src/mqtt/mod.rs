//! The MQTT transport (iothub-protocol.md 3): one driver task per client that owns the
//! connection, reconnects, renews the token, and settles C2D messages.
//!
//! The driver does each connection's I/O itself (packets are encoded and decoded with
//! rumqttc's `mqttbytes` codec, the same one the emulator serves): no task or channel sits
//! between the application's commands and the socket, and everything queued while handling a
//! burst leaves in one write. A new [`Connection`](connection::Connection) per connection keeps
//! packet ids, PUBACKs and unacknowledged telemetry from one connection away from the next: the
//! driver itself keeps the telemetry waiting for a PUBACK and publishes it again after a
//! reconnect, and a C2D message can only be acknowledged on the connection it arrived on (the
//! hub redelivers the others). CONNECT uses clean session 0, as every official SDK does, so the
//! hub keeps the subscription and the undelivered messages while the device is away.
//!
//! | file | what it holds |
//! |---|---|
//! | `params.rs` | the fixed facts of a connection: endpoint, user name, packet size limit |
//! | `socket.rs` | dialling: TCP, TLS, the WebSocket upgrade |
//! | `topics.rs` | topic names and what an incoming topic is (C2D today; request/response topics such as twins and methods belong here) |
//! | `connection.rs` | one open connection: CONNECT, reads and batched writes, keep-alive, per-connection bookkeeping |
//! | `driver.rs` | the driver task: connect, serve, reconnect with backoff, renew, stop |
//! | `telemetry.rs` | D2C sends waiting for their PUBACK, republished after a reconnect |
//! | `subscriptions.rs` | every topic filter (C2D, methods, twins): SUBACKs by packet id, waiters, re-subscribe after a lost session |
//! | `c2d.rs` | incoming C2D messages and their settlement |
//! | `twin.rs` | twin GET and reported PATCH by `$rid`, desired patches |
//! | `methods.rs` | direct-method requests in, answers out |
//! | `acks.rs` | PUBACKs in arrival order |
//! | `errors.rs` | CONNACK refusals and lost connections as [`Error`]s |
//! | `fuzzing.rs` | the fuzz target's entry: the hub's bytes through the codec and topic routing |
//!
//! A new feature that talks over MQTT adds its topics to `topics.rs`, its state and handlers
//! in a file of its own (as `telemetry.rs` and `c2d.rs` do), and a [`Command`] for the client.

mod acks;
mod c2d;
mod connection;
mod driver;
mod errors;
#[doc(hidden)]
pub mod fuzzing;
mod methods;
mod params;
mod socket;
mod subscriptions;
mod telemetry;
mod topics;
mod twin;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::message::ReceivedMessage;
use crate::runtime::Runtime;
use crate::token::Auth;

pub(crate) use params::Params;
pub(crate) use topics::{check_device_id, d2c_topic};
pub use twin::DesiredUpdate;
pub(crate) use twin::{TwinAnswer, TwinCommand};

use driver::Driver;

/// What the client asks of the driver.
pub(crate) enum Command {
    /// Publish telemetry at QoS 1; `reply` gets the outcome once the hub PUBACKed it.
    Send {
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// The application wants C2D messages: subscribe (now and after a lost session).
    EnableC2d,
    /// A twin request, or a new receiver of desired patches (`twin.rs`).
    Twin(TwinCommand),
    /// The application registered a method handler: subscribe to method requests; `reply`
    /// learns whether the hub granted it.
    EnableMethods {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Publish a method answer (QoS 0).
    MethodResponse { topic: String, payload: Bytes },
    /// Settle a C2D message: PUBACK it (`ack`) or let it go without one.
    Settle {
        generation: u64,
        pkid: u16,
        ack: bool,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
}

/// The client's end of the driver's command queue.
///
/// Unbounded on purpose. Settlements are sent from `Drop` and from synchronous code, which
/// cannot wait for room, and none may be lost: a lost release would hold back every later
/// PUBACK of the connection. Every queued command belongs to a caller awaiting its reply or to
/// a message the application holds, so the queue never outgrows what the application itself
/// keeps, and the driver drains it without waiting on anything, connected or not.
pub(crate) type Commands = mpsc::UnboundedSender<Command>;

/// Where the driver hands received C2D messages to the client.
///
/// Unbounded on purpose: the driver must never wait for the application (it also carries the
/// PUBACKs the application's completions release, so waiting could deadlock), and the hub
/// bounds what arrives: it sends at most its in-flight window of unacknowledged messages per
/// connection, and a message is acknowledged only once the application took it.
pub(crate) type C2dSender = mpsc::UnboundedSender<ReceivedMessage>;

/// What the driver needs from the client.
pub(crate) struct Setup {
    /// The fixed facts of the connection.
    pub params: Params,
    /// Where tokens come from.
    pub auth: Auth,
    /// Where received C2D messages go.
    pub c2d: C2dSender,
    /// Where method requests go.
    pub methods: crate::methods::IncomingSender,
    /// The connection messages may still be settled on; the driver bumps it when one ends.
    pub generation: Arc<AtomicU64>,
    /// The client's state reporter, shutdown token and task tracker.
    pub runtime: Runtime,
}

/// Starts the driver and waits for the first connection. Returns the command queue once the
/// hub accepted the CONNECT, or the reason it did not (a first connection is not retried).
pub(crate) async fn start(setup: Setup) -> Result<Commands, Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tasks = setup.runtime.tasks.clone();
    let driver = Driver::new(setup, rx, tx.clone());
    let (first_tx, first_rx) = oneshot::channel();
    tasks.spawn(driver.run(first_tx));
    match first_rx.await {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Closed),
    }
}
