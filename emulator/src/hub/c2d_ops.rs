//! C2D operations: enqueue, receive, settlement (complete, reject, abandon, release), purge.
//!
//! Reference: iothub-protocol.md 1 (lifecycle), 2 (feedback). Which feedback an outcome
//! produces is decided in one place, [`Hub::finish_c2d`], from the message's `iothub-ack`.

use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::{FeedbackRecord, HubError, Message};
use time::OffsetDateTime;

use super::c2d::{Outcome, QueuedMessage, Released};
use super::store::Store;
use super::{DeliveryCountRule, Hub, HubEvent, lock_lost, not_found};

/// What the hub assigned to an accepted C2D message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// Its sequence number in the device's queue.
    pub sequence_number: u64,
    /// When it expires.
    pub expires_at: OffsetDateTime,
}

/// The `to` the hub writes on a C2D message.
pub fn devicebound_address(device_id: &str) -> String {
    format!("/devices/{device_id}/messages/devicebound")
}

impl<S: Store> Hub<S> {
    /// Accepts a C2D message into the device's queue.
    ///
    /// Errors: unknown device, disabled device, too large or malformed message, full queue.
    pub fn enqueue_c2d(
        &mut self,
        device_id: &str,
        mut message: Message,
        now: OffsetDateTime,
    ) -> Result<Enqueued, HubError> {
        self.handle_timeout(now);
        let depth = self.settings.queue_depth;
        let expires_at = message
            .system
            .absolute_expiry
            .unwrap_or(now + self.settings.default_ttl);
        let mut entry = self
            .store
            .get_runtime_mut(device_id)
            .ok_or_else(|| not_found(device_id))?;
        if entry.device().status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled {
                device_id: device_id.to_owned(),
            });
        }
        message.validate_c2d()?;
        if entry.queue().len() >= depth {
            return Err(HubError::DeviceMaximumQueueDepthExceeded {
                device_id: device_id.to_owned(),
                depth,
            });
        }
        message.system.to = Some(devicebound_address(device_id));
        let sequence_number =
            entry
                .queue()
                .push(device_id, message, now, expires_at, &mut self.timers);
        self.events.push_back(HubEvent::C2dAvailable {
            device_id: device_id.to_owned(),
        });
        // An expiry already in the past takes effect now, not at the next operation.
        self.handle_timeout(now);
        self.store.commit(&[device_id]);
        Ok(Enqueued {
            sequence_number,
            expires_at,
        })
    }

    /// Locks the device's oldest available message and returns it with its lock token,
    /// delivery count, sequence number and enqueued time; `None` if nothing is available.
    pub fn receive_c2d(
        &mut self,
        device_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Message>, HubError> {
        self.handle_timeout(now);
        // Devices ask after every burst of packets; most of the time there is nothing, and a
        // lock token costs a system call to the OS's random source.
        if !self.entry(device_id)?.queue.has_available() {
            return Ok(None);
        }
        let token = self.entropy.lock_token()?;
        let lock = self.settings.lock_duration;
        let mut entry = self
            .store
            .get_runtime_mut(device_id)
            .ok_or_else(|| not_found(device_id))?;
        let m = entry
            .queue()
            .lock_next(device_id, token, now, lock, &mut self.timers);
        if m.is_some() {
            self.store.commit(&[device_id]);
        }
        Ok(m)
    }

    /// Fires due deadlines, then finds the message locked with `token`: the first step of
    /// every settlement.
    fn locked_seq(
        &mut self,
        device_id: &str,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<u64, HubError> {
        self.handle_timeout(now);
        self.entry(device_id)?
            .queue
            .find_locked(token)
            .ok_or_else(|| lock_lost(token))
    }

    /// Completes the delivery locked with `lock_token` (positive feedback when asked).
    pub fn complete_c2d(
        &mut self,
        device_id: &str,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        let seq = self.locked_seq(device_id, lock_token, now)?;
        self.finish_c2d(device_id, seq, Outcome::Completed, now);
        Ok(())
    }

    /// Rejects the delivery locked with `lock_token`: the message is dead-lettered.
    pub fn reject_c2d(
        &mut self,
        device_id: &str,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        let seq = self.locked_seq(device_id, lock_token, now)?;
        self.finish_c2d(device_id, seq, Outcome::Rejected, now);
        Ok(())
    }

    /// Abandons the delivery locked with `lock_token`: the message goes back to the queue
    /// with its delivery count increased, or is dead-lettered at the max delivery count.
    pub fn abandon_c2d(
        &mut self,
        device_id: &str,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        let seq = self.locked_seq(device_id, lock_token, now)?;
        self.release_c2d(device_id, seq, true, now);
        Ok(())
    }

    /// Returns the delivery locked with `lock_token` to the queue because its receiver went
    /// away (a dropped connection). It counts as a delivery only under
    /// [`DeliveryCountRule::EveryRelease`], like a lock that runs out.
    pub fn release_c2d_lock(
        &mut self,
        device_id: &str,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        let seq = self.locked_seq(device_id, lock_token, now)?;
        let counts = self.settings.delivery_count_rule == DeliveryCountRule::EveryRelease;
        self.release_c2d(device_id, seq, counts, now);
        Ok(())
    }

    /// Removes every pending message of the device; returns how many were removed.
    pub fn purge_c2d(&mut self, device_id: &str, now: OffsetDateTime) -> Result<usize, HubError> {
        self.handle_timeout(now);
        let seqs: Vec<u64> = self
            .entry(device_id)?
            .queue
            .iter()
            .map(QueuedMessage::sequence_number)
            .collect();
        for &seq in &seqs {
            self.finish_c2d(device_id, seq, Outcome::Purged, now);
        }
        Ok(seqs.len())
    }

    /// The device's pending messages, in order, with their state (for the control API).
    pub fn peek_c2d(&self, device_id: &str) -> Result<Vec<QueuedMessage>, HubError> {
        Ok(self.entry(device_id)?.queue.iter().cloned().collect())
    }

    /// True when the device has a message waiting to be received.
    pub fn has_c2d_available(&self, device_id: &str) -> bool {
        self.store
            .get(device_id)
            .is_some_and(|e| e.queue.has_available())
    }

    /// Ends a lock without settlement; `counts` says whether it counts as a delivery.
    pub(super) fn release_c2d(
        &mut self,
        device_id: &str,
        seq: u64,
        counts: bool,
        now: OffsetDateTime,
    ) {
        let max = self.settings.max_delivery_count;
        let Some(mut entry) = self.store.get_runtime_mut(device_id) else {
            return;
        };
        match entry.queue().release(seq, counts, max, &mut self.timers) {
            Some(Released::Requeued) => {
                self.events.push_back(HubEvent::C2dAvailable {
                    device_id: device_id.to_owned(),
                });
            }
            Some(Released::DeadLettered(m)) => {
                self.settled(device_id, &m, Outcome::DeliveryCountExceeded, now);
            }
            None => {}
        }
        self.store.commit(&[device_id]);
    }

    /// Takes a message out of the queue with its final outcome.
    pub(super) fn finish_c2d(
        &mut self,
        device_id: &str,
        seq: u64,
        outcome: Outcome,
        now: OffsetDateTime,
    ) {
        let Some(mut entry) = self.store.get_runtime_mut(device_id) else {
            return;
        };
        if let Some(m) = entry.queue().remove(seq, &mut self.timers) {
            self.settled(device_id, &m, outcome, now);
        }
        self.store.commit(&[device_id]);
    }

    /// Reports an outcome: the event, and the feedback record the ack mode asks for.
    fn settled(
        &mut self,
        device_id: &str,
        m: &QueuedMessage,
        outcome: Outcome,
        now: OffsetDateTime,
    ) {
        self.events.push_back(HubEvent::C2dSettled {
            device_id: device_id.to_owned(),
            sequence_number: m.sequence_number(),
            outcome,
        });
        let Some(status) = outcome.feedback_status() else {
            return;
        };
        // A message enqueued already expired is reported at its enqueue time, not before it.
        let now = m.message.system.enqueued_time.map_or(now, |e| now.max(e));
        if !m.message.system.ack.wants(status) {
            return;
        }
        let generation = self
            .store
            .get(device_id)
            .and_then(|e| e.device.generation_id.clone())
            .unwrap_or_default();
        let original = m
            .message
            .system
            .message_id
            .as_ref()
            .map(|id| id.canonical())
            .unwrap_or_default();
        let record = FeedbackRecord::new(original, status, now, device_id, generation);
        self.feedback_for(Some(record), now);
    }
}
