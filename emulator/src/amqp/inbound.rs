//! Links on which the peer sends: C2D from a service, telemetry from a device, CBS requests.
//!
//! Each delivery goes to a handler; `Ok` becomes an `accepted` disposition, an error a `rejected`
//! one carrying [`error_for`]'s condition. With [`run_batches`] the deliveries a sender
//! pipelined go to the handler together, so they can share one hub operation. Credit is
//! granted by fe2o3 as deliveries are processed, so a flood waits for the handler.
//!
//! Acknowledged means durable: `accepted` goes out only once the delivery's change is on disk.
//! The link does not wait for the disk before it takes the next delivery, though: verdicts
//! queue in arrival order behind the disk, so the deliveries a sender has in flight share one
//! group commit instead of paying one fsync each (at most [`MAX_UNSETTLED`] wait). The link ends on shutdown, when the peer detaches, or when
//! its token expires (detached with `amqp:unauthorized-access`).

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::link::delivery::{Delivery, DeliveryInfo};
use fe2o3_amqp_types::definitions::Error as AmqpError;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;
use iothub_protocol::HubError;
use tokio_util::sync::CancellationToken;

use super::connection::Conn;
use super::convert::Incoming;
use super::errors::{decode_error, error_for};
use super::tokens::LinkAuth;

/// How long a detach may wait for the peer's answer.
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliveries handled but not yet settled because their change is not on disk yet: more than
/// an SDK keeps in flight, few enough to bound what a link holds.
pub const MAX_UNSETTLED: usize = 256;

enum Event {
    Shutdown,
    Revoked,
    Tick,
    Delivery(Box<Result<Delivery<Body<Value>>, RecvError>>),
    /// A handled delivery whose verdict may now be sent.
    Settle(DeliveryInfo, Result<(), HubError>),
}

/// A handled delivery waiting for the disk.
type Unsettled = Pin<Box<dyn Future<Output = (DeliveryInfo, Result<(), HubError>)> + Send>>;

/// How a link ends.
enum Ending {
    /// Detach it, with this error if any.
    Close(Option<AmqpError>),
    /// The peer detached it, or the session is gone.
    Gone,
}

async fn tick(auth: &Option<LinkAuth>) {
    match auth {
        Some(a) => a.tick().await,
        None => std::future::pending().await,
    }
}

/// What a handler returns: the hub's verdict on one delivery, possibly after some waiting.
pub type Handled = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send>>;

/// A verdict that needs no waiting.
pub fn done(result: Result<(), HubError>) -> Handled {
    Box::pin(std::future::ready(result))
}

/// Verdicts that need no waiting, one per delivery of a batch.
pub fn all_done(results: Vec<Result<(), HubError>>) -> Vec<Handled> {
    results.into_iter().map(done).collect()
}

/// Receives deliveries until the link ends, passing each to `handle`.
pub async fn run(
    conn: &Conn,
    receiver: Receiver,
    auth: Option<LinkAuth>,
    revoked: CancellationToken,
    mut handle: impl FnMut(Incoming) -> Handled,
) {
    run_batches(conn, receiver, auth, revoked, |batch| {
        batch.into_iter().map(&mut handle).collect()
    })
    .await
}

/// Most deliveries handed to a batch handler at once.
pub const BATCH: usize = 64;

/// As [`run`], but the deliveries already received when one arrives go to `handle` together
/// (up to [`BATCH`], in arrival order), so that a handler can make them one hub operation: one
/// lock and one state write for a burst a sender pipelined, instead of one each. `handle`
/// returns one verdict per delivery, in the same order.
pub async fn run_batches(
    conn: &Conn,
    mut receiver: Receiver,
    mut auth: Option<LinkAuth>,
    revoked: CancellationToken,
    mut handle: impl FnMut(Vec<Incoming>) -> Vec<Handled>,
) {
    let mut unsettled: FuturesOrdered<Unsettled> = FuturesOrdered::new();
    // A receive that failed while a batch was gathered: handled before anything else.
    let mut stashed: Option<Result<Delivery<Body<Value>>, RecvError>> = None;
    let ending = 'link: loop {
        let room = unsettled.len() < MAX_UNSETTLED;
        let event = match stashed.take() {
            Some(r) => Event::Delivery(Box::new(r)),
            None => tokio::select! {
                _ = conn.cancel.cancelled() => Event::Shutdown,
                _ = revoked.cancelled() => Event::Revoked,
                _ = tick(&auth) => Event::Tick,
                Some((info, verdict)) = unsettled.next(), if !unsettled.is_empty() => {
                    Event::Settle(info, verdict)
                }
                d = receiver.recv::<Body<Value>>(), if room => Event::Delivery(Box::new(d)),
            },
        };
        let received = match event {
            Event::Shutdown => break Ending::Close(None),
            Event::Revoked => break Ending::Close(Some(error_for(&revoked_error()))),
            Event::Tick => {
                if let Some(Err(e)) = auth.as_mut().map(LinkAuth::check) {
                    break Ending::Close(Some(error_for(&e)));
                }
                continue;
            }
            Event::Settle(info, verdict) => {
                // The verdicts behind the same commit are ready together: settled in one go.
                let mut ready = vec![(info, verdict)];
                while let Some(Some(next)) = unsettled.next().now_or_never() {
                    ready.push(next);
                }
                if settle_all(&receiver, ready).await.is_err() {
                    break Ending::Gone;
                }
                continue;
            }
            Event::Delivery(received) => *received,
        };
        let delivery = match received {
            Ok(d) => d,
            Err(RecvError::MessageDecode(e)) => {
                break Ending::Close(Some(decode_error(format!(
                    "the message could not be decoded: {e}"
                ))));
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "receiving link ended");
                break Ending::Gone;
            }
        };
        // Whatever else fe2o3 already has for this link joins the batch (a poll that would
        // wait ends the gathering; fe2o3's receive gives nothing up when it is dropped then).
        let mut batch = vec![delivery];
        while batch.len() < BATCH && unsettled.len() + batch.len() < MAX_UNSETTLED {
            match receiver.recv::<Body<Value>>().now_or_never() {
                Some(Ok(d)) => batch.push(d),
                Some(Err(e)) => {
                    stashed = Some(Err(e));
                    break;
                }
                None => break,
            }
        }
        let (infos, messages): (Vec<DeliveryInfo>, Vec<Incoming>) =
            batch.into_iter().map(Delivery::into_parts).unzip();
        if let Some(Err(e)) = auth.as_mut().map(LinkAuth::check) {
            let error = error_for(&e);
            for info in infos {
                let _ = receiver.reject(info, error.clone()).await;
            }
            break Ending::Close(Some(error));
        }
        let mut handled = handle(messages).into_iter();
        for info in infos {
            let verdict = match handled.next() {
                Some(h) => tokio::select! {
                    _ = conn.cancel.cancelled() => break 'link Ending::Close(None),
                    v = h => v,
                },
                None => Err(HubError::ServerError {
                    detail: "the link's handler gave no verdict for this message".to_owned(),
                }),
            };
            // Acknowledged means durable: `accepted` waits until the change is on disk.
            // `synced` covers everything submitted before its first poll, which is after this
            // delivery's change, and the queue settles in arrival order.
            let hub = conn.ctx.hub.clone();
            unsettled.push_back(Box::pin(async move {
                let verdict = match verdict {
                    Ok(()) => hub.synced().await.map_err(|e| HubError::ServerError {
                        detail: e.to_string(),
                    }),
                    Err(e) => Err(e),
                };
                (info, verdict)
            }));
        }
    };
    if let Ending::Close(error) = ending {
        let close = async {
            match error {
                Some(e) => receiver.close_with_error(e).await,
                None => receiver.close().await,
            }
        };
        let _ = tokio::time::timeout(DETACH_TIMEOUT, close).await;
    }
}

/// Sends the verdicts, in order: each run of accepted deliveries as one `accepted` disposition
/// per range of consecutive delivery ids (fe2o3's `accept_all`), instead of a frame each,
/// which the peer also decodes one by one; a rejection alone, between them.
async fn settle_all(
    receiver: &Receiver,
    ready: Vec<(DeliveryInfo, Result<(), HubError>)>,
) -> Result<(), fe2o3_amqp::link::DispositionError> {
    let mut accepted = Vec::new();
    for (info, verdict) in ready {
        match verdict {
            Ok(()) => accepted.push(info),
            Err(e) => {
                if !accepted.is_empty() {
                    receiver.accept_all(std::mem::take(&mut accepted)).await?;
                }
                receiver.reject(info, error_for(&e)).await?;
            }
        }
    }
    if !accepted.is_empty() {
        receiver.accept_all(accepted).await?;
    }
    Ok(())
}

/// Why a device link ends when its device goes away.
pub fn revoked_error() -> HubError {
    HubError::unauthorized("the device was deleted, disabled or connected elsewhere")
}

/// Refuses a link the peer attached: detaches it with the error.
pub async fn refuse(receiver: Receiver, error: AmqpError) {
    let _ = tokio::time::timeout(DETACH_TIMEOUT, receiver.close_with_error(error)).await;
}
