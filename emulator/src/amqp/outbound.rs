//! Links on which the hub sends: C2D to a device, feedback to a service, CBS replies.
//!
//! A hub queue is an [`Outbox`]: taking an item locks it in the hub, and the peer's disposition
//! settles it there (`accepted` completes, `rejected` rejects, `released`/`modified` abandon).
//! Up to [`MAX_IN_FLIGHT`] deliveries wait for their disposition at once; a new item is locked
//! only when there is room. A delivery the peer never settles (the link or connection went away)
//! is handed back with [`Outbox::unsettled`], so nothing taken from the hub is lost. A peer that
//! never grants credit holds at most one locked item, which the hub's lock timeout returns to the
//! queue.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fe2o3_amqp::Sender;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp_types::definitions::Error as AmqpError;
use fe2o3_amqp_types::messaging::Outcome;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use iothub_protocol::HubError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::connection::Conn;
use super::convert::Outgoing;
use super::errors::{cannot_send, error_for};
use super::inbound::{DETACH_TIMEOUT, revoked_error};
use super::tokens::LinkAuth;
use crate::driver::HubHandle;

/// Most deliveries of one link awaiting the peer's disposition.
pub const MAX_IN_FLIGHT: usize = 16;

/// What the peer decided for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `accepted`.
    Complete,
    /// `rejected`.
    Reject,
    /// `released` or `modified`.
    Abandon,
}

impl Settle {
    fn from_outcome(o: &Outcome) -> Settle {
        match o {
            Outcome::Accepted(_) => Settle::Complete,
            Outcome::Rejected(_) => Settle::Reject,
            _ => Settle::Abandon,
        }
    }
}

/// Where to wait for "an item may be available".
pub enum Wake {
    /// A per-device wake-up.
    Shared(Arc<Notify>),
    /// The hub's feedback wake-up.
    Feedback(HubHandle),
}

impl Wake {
    fn notify(&self) -> &Notify {
        match self {
            Wake::Shared(n) => n,
            Wake::Feedback(h) => h.feedback_notify(),
        }
    }
}

/// A hub queue a sending link delivers from. Implementations only call the hub.
pub trait Outbox: Send {
    /// Locks the next item; returns its lock token and message, or `None` if nothing is ready.
    fn take(&mut self) -> Result<Option<(String, Outgoing)>, HubError>;
    /// What to wait on when `take` found nothing.
    fn wake(&self) -> Wake;
    /// Applies the peer's disposition to the item locked with `lock_token`.
    fn settle(&mut self, lock_token: &str, how: Settle) -> Result<(), HubError>;
    /// Hands back an item the peer never settled.
    fn unsettled(&mut self, lock_token: &str);
    /// The hub whose changes must be on disk before an item goes out: an item that reports
    /// an outcome (a feedback record) must not reach the peer before that outcome is durable,
    /// or a crash could undo an outcome the peer was told about. `None` (the default) for
    /// items the peer may see early (a C2D message is delivered at least once anyway).
    fn durable_first(&self) -> Option<HubHandle> {
        None
    }
}

type OutcomeFut = Pin<Box<dyn Future<Output = (String, Result<Outcome, SendError>)> + Send>>;
type Delivered = DeliveryFut<Result<Outcome, SendError>>;

enum Event {
    Shutdown,
    Revoked(HubError),
    Tick,
    Woken,
    Outcome(String, Result<Outcome, SendError>),
    Sent(Result<Delivered, SendError>),
    /// The state could not be written: nothing more goes out on this link.
    Unsynced(HubError),
    Detached,
}

enum Ending {
    Close(Option<AmqpError>),
    Gone,
}

fn settle(outbox: &mut impl Outbox, token: String, outcome: Result<Outcome, SendError>) {
    let result = match outcome {
        Ok(o) => outbox.settle(&token, Settle::from_outcome(&o)),
        Err(_) => {
            outbox.unsettled(&token);
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(lock_token = %token, error = %e, "disposition could not be applied");
    }
}

/// Delivers from `outbox` until the link ends. `revoked` ends the link with
/// `amqp:unauthorized-access` (the device was deleted, disabled or taken over).
pub async fn run(
    conn: &Conn,
    mut sender: Sender,
    mut outbox: impl Outbox,
    mut auth: LinkAuth,
    revoked: CancellationToken,
) {
    let wake = outbox.wake();
    let durable_first = outbox.durable_first();
    let mut inflight: FuturesUnordered<OutcomeFut> = FuturesUnordered::new();
    let mut tokens: HashSet<String> = HashSet::new();
    let mut pending: Option<(String, Outgoing)> = None;
    let ending = loop {
        let woken = wake.notify().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let room = inflight.len() < MAX_IN_FLIGHT;
        if pending.is_none() && room {
            match outbox.take() {
                Ok(next) => pending = next,
                Err(e) => break Ending::Close(Some(error_for(&e))),
            }
        }
        if let Err(e) = auth.check() {
            break Ending::Close(Some(error_for(&e)));
        }
        let link_op = async {
            match &pending {
                Some((_, m)) => {
                    if let Some(hub) = &durable_first
                        && let Err(e) = hub.synced().await
                    {
                        return Event::Unsynced(HubError::ServerError {
                            detail: e.to_string(),
                        });
                    }
                    Event::Sent(sender.send_batchable(m.clone()).await)
                }
                None => {
                    sender.on_detach().await;
                    Event::Detached
                }
            }
        };
        let event = tokio::select! {
            _ = conn.cancel.cancelled() => Event::Shutdown,
            _ = revoked.cancelled() => Event::Revoked(revoked_error()),
            _ = auth.tick() => Event::Tick,
            Some((token, outcome)) = inflight.next(), if !inflight.is_empty() => {
                Event::Outcome(token, outcome)
            }
            _ = &mut woken, if pending.is_none() && room => Event::Woken,
            e = link_op => e,
        };
        match event {
            Event::Shutdown => break Ending::Close(None),
            Event::Revoked(e) | Event::Unsynced(e) => break Ending::Close(Some(error_for(&e))),
            Event::Detached => break Ending::Gone,
            Event::Tick | Event::Woken => {}
            Event::Outcome(token, outcome) => {
                tokens.remove(&token);
                settle(&mut outbox, token, outcome);
            }
            Event::Sent(Ok(fut)) => {
                if let Some((token, _)) = pending.take() {
                    tokens.insert(token.clone());
                    inflight.push(Box::pin(async move { (token, fut.await) }));
                }
            }
            Event::Sent(Err(SendError::LinkStateError(_) | SendError::Detached(_))) => {
                tracing::debug!(peer = %conn.peer, "sending link ended");
                break Ending::Gone;
            }
            Event::Sent(Err(e)) => {
                // The message cannot go out on this link (e.g. it exceeds the peer's
                // max-message-size): end the link rather than retry forever.
                break Ending::Close(Some(cannot_send(&e)));
            }
        }
    };
    // Outcomes that already arrived still count; everything else goes back to the hub.
    while let Some(Some((token, outcome))) = inflight.next().now_or_never() {
        tokens.remove(&token);
        settle(&mut outbox, token, outcome);
    }
    for token in tokens.iter().chain(pending.as_ref().map(|(t, _)| t)) {
        outbox.unsettled(token);
    }
    if let Ending::Close(error) = ending {
        close(sender, error).await;
    }
}

async fn close(sender: Sender, error: Option<AmqpError>) {
    let close = async move {
        match error {
            Some(e) => sender.close_with_error(e).await,
            None => sender.close().await,
        }
    };
    let _ = tokio::time::timeout(DETACH_TIMEOUT, close).await;
}

/// Refuses a link the peer attached: detaches it with the error.
pub async fn refuse(sender: Sender, error: AmqpError) {
    close(sender, Some(error)).await;
}

/// Sends whatever arrives on `rx` (CBS replies) until the link ends; returns `rx` so a later
/// link can take over.
pub async fn forward<T>(
    conn: &Conn,
    mut sender: Sender,
    mut rx: mpsc::Receiver<fe2o3_amqp_types::messaging::Message<T>>,
) -> mpsc::Receiver<fe2o3_amqp_types::messaging::Message<T>>
where
    T: fe2o3_amqp_types::messaging::SerializableBody + Send,
{
    loop {
        let next = tokio::select! {
            _ = conn.cancel.cancelled() => break,
            _ = sender.on_detach() => return rx,
            m = rx.recv() => m,
        };
        let Some(message) = next else { break };
        let sent = tokio::select! {
            _ = conn.cancel.cancelled() => break,
            r = sender.send_batchable(message) => r,
        };
        if sent.is_err() {
            return rx;
        }
    }
    close(sender, None).await;
    rx
}
