//! The stream of events one `receive` call opened: one task per partition forwards what its
//! receiver link delivers into one channel, in order per partition.
//!
//! A link that fails without an error from the hub (the connection dropped) is attached again,
//! on a new connection if needed, right after the last event it delivered (by sequence
//! number), so nothing is skipped or repeated; before the first event it starts again from the
//! original position. Errors the hub names (another reader with a higher owner level took the
//! partition: `amqp:link:stolen`; the token was refused) end that partition's part of the
//! stream after being yielded once. Dropping the stream detaches every link.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use futures_util::Stream;
use iothub_protocol::EventPosition;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::Inner;
use super::event::Event;
use super::link::recv_error;
use crate::Error;

/// Attempts to attach a failed link again before giving up.
const MAX_REATTACH: u32 = 3;
/// Pause before the first new attempt; it doubles.
const REATTACH_BACKOFF: Duration = Duration::from_millis(200);
/// How long detaching a link may take when the stream is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Events as they arrive, from one partition or all: an async [`Stream`] of
/// `Result<`[`Event`]`, `[`Error`]`>` (use `futures_util::StreamExt::next`), or
/// [`recv`](Self::recv).
///
/// Events of one partition come in order; partitions interleave. The stream ends only when
/// every partition's link has ended for good (see [`EventConsumer`](super::EventConsumer) for
/// which errors end it). Dropping it detaches the links.
#[derive(Debug)]
#[must_use = "events arrive only while the stream is read"]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event, Error>>,
    partitions: Vec<String>,
}

impl EventStream {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Event, Error>>, partitions: Vec<String>) -> Self {
        EventStream { rx, partitions }
    }

    /// The next event. [`Error::Closed`] once every partition's link has ended.
    pub async fn recv(&mut self) -> Result<Event, Error> {
        self.rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// The partitions this stream reads.
    pub fn partition_ids(&self) -> &[String] {
        &self.partitions
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Forwards one partition's events until the stream is dropped or the link ends for good.
pub(crate) async fn run_partition(
    inner: Arc<Inner>,
    partition_id: String,
    mut receiver: Receiver,
    start: EventPosition,
    tx: mpsc::Sender<Result<Event, Error>>,
) {
    let mut last: Option<i64> = None;
    loop {
        let received = tokio::select! {
            () = tx.closed() => {
                let _ = timeout(CLOSE_TIMEOUT, receiver.close()).await;
                return;
            }
            r = receiver.recv::<Body<Value>>() => r,
        };
        let error = match received {
            Ok(delivery) => {
                let item = Event::from_amqp(&partition_id, delivery.into_message());
                if let Ok(e) = &item
                    && e.sequence_number >= 0
                {
                    last = Some(e.sequence_number);
                }
                if tx.send(item).await.is_err() {
                    let _ = timeout(CLOSE_TIMEOUT, receiver.close()).await;
                    return;
                }
                continue;
            }
            Err(e) => recv_error(e, &partition_id),
        };
        if !recoverable(&error) {
            let _ = tx.send(Err(error)).await;
            return;
        }
        let position = match last {
            Some(n) => EventPosition::SequenceNumber {
                sequence_number: n,
                inclusive: false,
            },
            None => start.clone(),
        };
        tracing::debug!(partition = %partition_id, "receiver link failed ({error}); attaching again");
        match reattach(&inner, &partition_id, &position, &tx).await {
            Some(Ok(r)) => receiver = r,
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            None => return,
        }
    }
}

/// A new link from `position`, after up to [`MAX_REATTACH`] attempts; `None` when the stream
/// was dropped meanwhile.
async fn reattach(
    inner: &Arc<Inner>,
    partition_id: &str,
    position: &EventPosition,
    tx: &mpsc::Sender<Result<Event, Error>>,
) -> Option<Result<Receiver, Error>> {
    let mut pause = REATTACH_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        tokio::select! {
            () = tx.closed() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        match inner.attach(partition_id, position).await {
            Ok(r) => return Some(Ok(r)),
            Err(e) if recoverable(&e) && attempt < MAX_REATTACH => {
                tracing::debug!(partition = %partition_id, "attaching again failed ({e}); retrying");
                pause *= 2;
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Failures of the transport, not refusals by the hub.
fn recoverable(e: &Error) -> bool {
    matches!(e, Error::Connection { .. } | Error::Timeout { .. })
}
