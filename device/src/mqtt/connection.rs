//! One open MQTT connection: CONNECT, the task that pumps its rumqttc event loop, and the
//! bookkeeping that must not outlive it (packet ids, PUBACK order, the token deadline).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnAck, ConnectionError, Event, EventLoop, NetworkOptions, Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::acks::AckQueue;
use super::errors::connect_error;
use super::params::Params;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::token::Token;

/// Capacity of rumqttc's request channel.
const REQUEST_CAPACITY: usize = 64;

/// The pump's events, in order.
///
/// Unbounded on purpose: the driver sends its requests (PUBLISH, PUBACK, SUBSCRIBE) through
/// rumqttc's bounded request channel, which only the pump's polling drains, so a pump that
/// waited for the driver could deadlock with a driver that waits for room. What the hub sends
/// is bounded by its in-flight window, and the rest are the answers to and echoes of the
/// driver's own requests, which the request channel and the pending telemetry bound.
type Events = mpsc::UnboundedReceiver<Result<Event, ConnectionError>>;

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What happens to the token next.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    /// Reconnect with a new token at this time.
    Renew(Instant),
    /// The ready-made token expires then; the client stops.
    Expire(Instant, u64),
}

impl Deadline {
    pub fn at(self) -> Instant {
        match self {
            Deadline::Renew(t) | Deadline::Expire(t, _) => t,
        }
    }
}

/// One open connection.
pub(super) struct Connection {
    pub client: AsyncClient,
    pub events: Events,
    _pump: AbortOnDrop,
    /// Which connection this is: messages remember it, so they are settled only on it.
    pub generation: u64,
    /// C2D messages received on this connection and not yet acknowledged.
    pub acks: AckQueue,
    /// Telemetry published on this connection and not yet given a packet id, in order.
    pub unassigned: VecDeque<u64>,
    /// Packet id → telemetry waiting for its PUBACK.
    pub inflight: HashMap<u16, u64>,
    pub deadline: Deadline,
}

/// Opens a connection with `token`: CONNECT, and wait (at most the connect timeout) for the
/// CONNACK. Returns the connection and whether the hub still had the session.
pub(super) async fn open(
    params: &Params,
    token: &Token,
    runtime: &Runtime,
    generation: u64,
) -> Result<(Connection, ConnAck), Error> {
    let (client, mut eventloop) =
        AsyncClient::new(params.options(token.text.clone()), REQUEST_CAPACITY);
    let mut net = NetworkOptions::new();
    net.set_connection_timeout(params.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(net);
    let limit = params.connect_timeout;
    let first = tokio::select! {
        _ = runtime.shutdown.cancelled() => return Err(Error::Closed),
        r = tokio::time::timeout(limit, eventloop.poll()) => r,
    };
    let connack = match first {
        Err(_) => {
            return Err(Error::Timeout {
                operation: "opening the MQTT connection",
                after: limit,
            });
        }
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack,
        Ok(Ok(other)) => {
            return Err(Error::Protocol {
                message: format!(
                    "{} answered CONNECT with {other:?} instead of CONNACK",
                    params.endpoint()
                ),
            });
        }
        Ok(Err(e)) => return Err(connect_error(e, params)),
    };
    let now = Instant::now();
    let deadline = match token.renew_after {
        Some(after) => Deadline::Renew(now + after),
        None => Deadline::Expire(now + token.valid_for, token.expiry),
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let pump = runtime.tasks.spawn(pump(eventloop, events_tx));
    let conn = Connection {
        client,
        events,
        _pump: AbortOnDrop(pump),
        generation,
        acks: AckQueue::default(),
        unassigned: VecDeque::new(),
        inflight: HashMap::new(),
        deadline,
    };
    Ok((conn, connack))
}

/// Polls one connection's event loop and forwards everything until it fails.
async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, ConnectionError>>) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if tx.send(event).is_err() || failed {
            return;
        }
    }
}

/// How long a DISCONNECT may take before the connection is just dropped.
pub(super) const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
