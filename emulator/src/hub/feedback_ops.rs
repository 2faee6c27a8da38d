//! Feedback operations: the service receives, completes, rejects and abandons feedback batches.
//!
//! Reference: iothub-protocol.md 2. Which records exist is decided where C2D messages end
//! (`c2d_ops.rs`); this is only the service's side of the feedback queue.

use iothub_protocol::HubError;
use time::OffsetDateTime;

use super::feedback::FeedbackDelivery;
use super::store::Store;
use super::{Hub, HubEvent, lock_lost};

impl<S: Store> Hub<S> {
    /// Locks the oldest released feedback batch for a receiver.
    pub fn receive_feedback(&mut self, now: OffsetDateTime) -> Option<FeedbackDelivery> {
        self.handle_timeout(now);
        // Should the OS refuse random bytes, nothing is received: the batch stays available.
        let token = self.entropy.lock_token().ok()?;
        let d = self
            .store
            .feedback_mut()
            .receive(token, now, &self.settings, &mut self.timers);
        if d.is_some() {
            self.store.commit(&[]);
        }
        d
    }

    /// Completes the feedback batch locked with `lock_token`.
    pub fn complete_feedback(
        &mut self,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        if self
            .store
            .feedback_mut()
            .settle(lock_token, &mut self.timers)
        {
            self.store.commit(&[]);
            Ok(())
        } else {
            Err(lock_lost(lock_token))
        }
    }

    /// Rejects the feedback batch locked with `lock_token`: it is dropped.
    pub fn reject_feedback(
        &mut self,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.complete_feedback(lock_token, now)
    }

    /// Abandons the feedback batch locked with `lock_token`: it is offered again, unless it
    /// reached the feedback max delivery count.
    pub fn abandon_feedback(
        &mut self,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        let max = self.settings.feedback_max_delivery_count;
        if self
            .store
            .feedback_mut()
            .abandon(lock_token, max, &mut self.timers)
        {
            if self.store.feedback().has_available() {
                self.events.push_back(HubEvent::FeedbackAvailable);
            }
            self.store.commit(&[]);
            Ok(())
        } else {
            Err(lock_lost(lock_token))
        }
    }

    /// Returns the feedback batch locked with `lock_token` to the queue because its receiver
    /// went away (a closed link); unlike an abandon, this does not count as a delivery.
    pub fn release_feedback_lock(
        &mut self,
        lock_token: &str,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        if !self
            .store
            .feedback_mut()
            .release(lock_token, &mut self.timers)
        {
            return Err(lock_lost(lock_token));
        }
        self.events.push_back(HubEvent::FeedbackAvailable);
        self.store.commit(&[]);
        Ok(())
    }

    /// Releases the records waiting for the batch window now (control API "flush").
    pub fn flush_feedback(&mut self, now: OffsetDateTime) {
        self.handle_timeout(now);
        if self
            .store
            .feedback_mut()
            .release_pending(now, &self.settings, &mut self.timers)
        {
            self.events.push_back(HubEvent::FeedbackAvailable);
            self.store.commit(&[]);
        }
    }

    /// True when a feedback batch is waiting for a receiver.
    pub fn has_feedback_available(&self) -> bool {
        self.store.feedback().has_available()
    }
}
