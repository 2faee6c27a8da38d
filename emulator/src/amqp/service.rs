//! Service links: C2D send on `/messages/devicebound` and feedback on
//! `/messages/serviceBound/feedback` (iothub-protocol.md 5.4, 5.5). Both need a token with
//! ServiceConnect. The hub decides every outcome; these links only translate.

use std::sync::Arc;

use fe2o3_amqp::{Receiver, Sender};
use iothub_protocol::HubError;
use tokio_util::sync::CancellationToken;

use super::address::c2d_target;
use super::connection::Conn;
use super::convert::{self, Incoming, Outgoing};
use super::errors::error_for;
use super::outbound::{Outbox, Settle, Wake};
use super::tokens::Access;
use super::{inbound, outbound};
use crate::driver::HubHandle;

/// Serves a service's sender to `/messages/devicebound`: each message's `to` picks the device,
/// and the disposition is the hub's verdict (`accepted` once enqueued, otherwise `rejected` with
/// the error's condition).
pub async fn serve_c2d(conn: Arc<Conn>, receiver: Receiver) {
    let auth = match conn.tokens.authorize_link(&conn.ctx, Access::Service) {
        Ok(auth) => auth,
        Err(e) => return inbound::refuse(receiver, error_for(&e)).await,
    };
    let hub = conn.ctx.hub.clone();
    let never = CancellationToken::new();
    inbound::run_batches(
        &conn,
        receiver,
        Some(auth),
        never,
        |batch: Vec<Incoming>| inbound::all_done(enqueue(&hub, batch)),
    )
    .await;
}

/// Enqueues a burst of sends in one hub operation, in order; a verdict each.
pub(super) fn enqueue(hub: &HubHandle, batch: Vec<Incoming>) -> Vec<Result<(), HubError>> {
    let prepared: Vec<_> = batch
        .into_iter()
        .map(|m| {
            let message = convert::to_hub(m)?;
            let device_id = c2d_target(message.system.to.as_deref())?;
            Ok((device_id, message))
        })
        .collect();
    hub.run(|hub, now| {
        prepared
            .into_iter()
            .map(|p: Result<_, HubError>| {
                let (device_id, message) = p?;
                hub.enqueue_c2d(&device_id, message, now).map(|_| ())
            })
            .collect()
    })
}

/// Serves a service's receiver from `/messages/serviceBound/feedback`.
pub async fn serve_feedback(conn: Arc<Conn>, sender: Sender) {
    let auth = match conn.tokens.authorize_link(&conn.ctx, Access::Service) {
        Ok(auth) => auth,
        Err(e) => return outbound::refuse(sender, error_for(&e)).await,
    };
    let outbox = FeedbackOutbox {
        hub: conn.ctx.hub.clone(),
        hub_name: conn.ctx.hub_name.clone(),
    };
    outbound::run(&conn, sender, outbox, auth, CancellationToken::new()).await;
}

/// The hub's feedback queue as seen by one receiver link.
struct FeedbackOutbox {
    hub: HubHandle,
    hub_name: String,
}

impl Outbox for FeedbackOutbox {
    fn take(&mut self) -> Result<Option<(String, Outgoing)>, HubError> {
        let delivery = self.hub.run(|hub, now| hub.receive_feedback(now));
        Ok(delivery.map(|d| {
            let message = convert::feedback_delivery(&d, &self.hub_name);
            (d.lock_token, message)
        }))
    }

    fn wake(&self) -> Wake {
        Wake::Feedback(self.hub.clone())
    }

    fn settle(&mut self, lock_token: &str, how: Settle) -> Result<(), HubError> {
        self.hub.run(|hub, now| match how {
            Settle::Complete => hub.complete_feedback(lock_token, now),
            Settle::Reject => hub.reject_feedback(lock_token, now),
            Settle::Abandon => hub.abandon_feedback(lock_token, now),
        })
    }

    fn unsettled(&mut self, lock_token: &str) {
        let _ = self
            .hub
            .run(|hub, now| hub.release_feedback_lock(lock_token, now));
    }

    fn durable_first(&self) -> Option<HubHandle> {
        Some(self.hub.clone())
    }
}
