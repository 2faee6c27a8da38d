//! Feedback: the hub's delivery acknowledgements for C2D messages sent with an ack mode.
//!
//! The hub sends feedback as batches (iothub-protocol.md 2): one AMQP message per batch on
//! `/messages/serviceBound/feedback`, whose body is a JSON array of [`FeedbackRecord`]s. A
//! batch is locked to this receiver until it is settled:
//!
//! * [`FeedbackBatch::complete`] (AMQP `accepted`) removes it from the hub's feedback queue;
//! * [`FeedbackBatch::abandon`] (AMQP `released`) returns it, to be delivered again;
//! * **dropping** a batch that was neither completed nor abandoned abandons it (a `released`
//!   disposition is sent from a spawned task), so the records come back rather than being lost
//!   silently. If no Tokio runtime is running at that point, or the link is already gone, the
//!   hub's lock (60 s by default) runs out and it redelivers the batch the same way.
//!
//! Completion is never implied: a batch is removed from the hub only by calling
//! [`FeedbackBatch::complete`].

use std::fmt;
use std::ops::Deref;

use fe2o3_amqp::link::delivery::{Delivery, DeliveryInfo};
use fe2o3_amqp::link::{Receiver, ReceiverDisposer, RecvError};
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::messaging::annotations::AnnotationKey;
use fe2o3_amqp::types::primitives::Value;
use futures_util::Stream;
use iothub_protocol::amqp::{ENQUEUED_TIME, body_bytes, lock_token_from_tag, timestamp_from_amqp};
use iothub_protocol::feedback::FEEDBACK_CONTENT_TYPE;
use iothub_protocol::{FeedbackRecord, feedback};
use time::OffsetDateTime;

use crate::Error;
use crate::amqp::AmqpHandle;
use crate::amqp::errors::link_state_error;

/// Receives feedback batches from the hub, from [`ServiceClient::feedback`](crate::ServiceClient::feedback).
///
/// It owns one receiver link on the client's AMQP connection. If the link or the connection
/// fails, the next [`recv`](Self::recv) attaches a new link (reconnecting if needed) once
/// before reporting an error. Batches received on a link that has since failed can no longer
/// be settled; the hub redelivers them when their lock expires.
pub struct FeedbackReceiver {
    amqp: AmqpHandle,
    link: Option<Receiver>,
}

impl fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackReceiver")
            .field("attached", &self.link.is_some())
            .finish()
    }
}

impl FeedbackReceiver {
    pub(crate) fn new(amqp: AmqpHandle, link: Receiver) -> Self {
        FeedbackReceiver {
            amqp,
            link: Some(link),
        }
    }

    /// Waits for the next feedback batch.
    ///
    /// Cancel-safe: dropping the future (for example on a timeout) loses no batch.
    ///
    /// Errors: [`Error::Closed`] after the client was closed; the hub's reason when it refused
    /// or detached the link (for example [`Error::Unauthorized`] for a policy without
    /// ServiceConnect); [`Error::Connection`] when the link failed and could not be attached
    /// again; [`Error::Protocol`] for a batch whose body is not a JSON array of records (that
    /// batch is rejected, so the hub does not send it again).
    pub async fn recv(&mut self) -> Result<FeedbackBatch, Error> {
        let mut reopened = false;
        loop {
            let link = match self.link.as_mut() {
                Some(link) => link,
                None => {
                    reopened = true;
                    self.link.insert(self.amqp.open_feedback().await?)
                }
            };
            match link.recv::<Body<Value>>().await {
                Ok(delivery) => return read_batch(link, delivery).await,
                Err(e) if e.recovery().link_is_usable() => {
                    return Err(Error::protocol(format!(
                        "a feedback message could not be decoded: {e}"
                    )));
                }
                Err(e) => {
                    self.link = None;
                    let error = match e {
                        RecvError::LinkStateError(l) => link_state_error(l, "the feedback link"),
                        other => Error::connection("the feedback link failed", other),
                    };
                    if reopened {
                        return Err(error);
                    }
                    tracing::debug!("feedback link failed ({error}); attaching a new one");
                }
            }
        }
    }

    /// The batches as a [`Stream`]. It ends after [`Error::Closed`]; other errors are yielded
    /// and the stream goes on (polling again attaches a new link), so a caller that cannot
    /// handle an error should stop there.
    pub fn into_stream(self) -> impl Stream<Item = Result<FeedbackBatch, Error>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut receiver = state?;
            match receiver.recv().await {
                Err(Error::Closed) => Some((Err(Error::Closed), None)),
                other => Some((other, Some(receiver))),
            }
        })
    }

    /// Detaches the link. Batches not yet settled are released by the hub when the link
    /// closes (or when their lock expires).
    pub async fn close(mut self) {
        if let Some(link) = self.link.take() {
            let _ = link.close().await;
        }
    }
}

/// Parses a delivery into a batch; a body that is not feedback is rejected.
async fn read_batch(
    link: &Receiver,
    delivery: Delivery<Body<Value>>,
) -> Result<FeedbackBatch, Error> {
    let message = delivery.message();
    let records = body_bytes(&delivery.message().body)
        .map_err(|e| e.to_string())
        .and_then(|bytes| feedback::FeedbackBatch::parse_body(&bytes).map_err(|e| e.to_string()));
    let records = match records {
        Ok(r) => r,
        Err(why) => {
            let _ = link
                .reject(
                    &delivery,
                    definitions::Error::new(
                        definitions::AmqpError::DecodeError,
                        Some(format!("not a feedback batch: {why}")),
                        None,
                    ),
                )
                .await;
            return Err(Error::protocol(format!(
                "a feedback message is not a JSON array of feedback records: {why}"
            )));
        }
    };
    let properties = message.properties.as_ref();
    if let Some(ct) = properties.and_then(|p| p.content_type.as_ref())
        && !ct.0.eq_ignore_ascii_case(FEEDBACK_CONTENT_TYPE)
    {
        tracing::debug!("feedback message with content type {}", ct.0);
    }
    let user_id = properties
        .and_then(|p| p.user_id.as_ref())
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    let enqueued_time = message
        .message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&ENQUEUED_TIME as &dyn AnnotationKey))
        .and_then(|v| match v {
            Value::Timestamp(t) => timestamp_from_amqp(t),
            _ => None,
        })
        .unwrap_or_else(OffsetDateTime::now_utc);
    // Shown as the C# SDK shows it: a GUID when the tag has 16 bytes, else hex.
    let lock_token = lock_token_from_tag(delivery.delivery_tag());
    let info = DeliveryInfo::from(delivery);
    Ok(FeedbackBatch {
        batch: feedback::FeedbackBatch {
            enqueued_time,
            user_id,
            records,
        },
        lock_token,
        settle: Some(Settle {
            disposer: link.disposer(),
            info,
        }),
    })
}

struct Settle {
    disposer: ReceiverDisposer,
    info: DeliveryInfo,
}

/// One feedback message: a batch of [`FeedbackRecord`]s, locked until settled.
///
/// Dereferences to [`iothub_protocol::FeedbackBatch`] for `records`, `enqueued_time` and
/// `user_id`. Settle it with [`complete`](Self::complete) or [`abandon`](Self::abandon);
/// dropping it unsettled abandons it (see the [module docs](crate::feedback)).
pub struct FeedbackBatch {
    batch: feedback::FeedbackBatch,
    lock_token: String,
    settle: Option<Settle>,
}

impl fmt::Debug for FeedbackBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackBatch")
            .field("batch", &self.batch)
            .field("lock_token", &self.lock_token)
            .field("settled", &self.settle.is_none())
            .finish()
    }
}

impl Deref for FeedbackBatch {
    type Target = feedback::FeedbackBatch;

    fn deref(&self) -> &Self::Target {
        &self.batch
    }
}

impl FeedbackBatch {
    /// The records, oldest outcome first.
    pub fn records(&self) -> &[FeedbackRecord] {
        &self.batch.records
    }

    /// The batch's lock token: its AMQP delivery tag, shown as a GUID as the C# SDK does.
    pub fn lock_token(&self) -> &str {
        &self.lock_token
    }

    /// Removes the batch from the hub's feedback queue (AMQP `accepted`).
    ///
    /// Fails with [`Error::Connection`] if the link it came on is gone; the hub then
    /// redelivers the batch after its lock expires.
    pub async fn complete(mut self) -> Result<(), Error> {
        match self.settle.take() {
            Some(s) => s
                .disposer
                .accept(s.info)
                .await
                .map_err(|e| Error::connection("cannot complete the feedback batch", e)),
            None => Ok(()),
        }
    }

    /// Returns the batch to the hub's feedback queue to be delivered again (AMQP `released`).
    pub async fn abandon(mut self) -> Result<(), Error> {
        match self.settle.take() {
            Some(s) => s
                .disposer
                .release(s.info)
                .await
                .map_err(|e| Error::connection("cannot abandon the feedback batch", e)),
            None => Ok(()),
        }
    }
}

/// Releases an unsettled batch from a spawned task, if a runtime is there to run it.
fn release_on_drop(settle: Option<Settle>) {
    let Some(s) = settle else {
        return;
    };
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = s.disposer.release(s.info).await;
        });
    }
}

impl Drop for FeedbackBatch {
    fn drop(&mut self) {
        release_on_drop(self.settle.take());
    }
}
