//! The service-bound feedback queue.
//!
//! Reference: iothub-protocol.md 2.4, 2.5. Records wait in `pending` until the batch is full or
//! the batch window closes; a released batch is then a message of its own, with a lock, a
//! delivery count and a time to live, settled by complete, abandon or reject.

use std::collections::BTreeMap;

use iothub_protocol::{FeedbackBatch, FeedbackRecord};
use time::OffsetDateTime;

use super::timers::{Timer, TimerId, Timers};

/// A released batch waiting for, or held by, the service.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The batch as delivered.
    pub batch: FeedbackBatch,
    /// Lock token and lock deadline while a receiver holds it.
    pub lock: Option<(String, TimerId)>,
    /// How many times it was released without being completed.
    pub delivery_count: u32,
    expiry_timer: TimerId,
}

/// A feedback batch handed to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackDelivery {
    /// Settles the batch.
    pub lock_token: String,
    /// The records.
    pub batch: FeedbackBatch,
    /// How many earlier deliveries were released.
    pub delivery_count: u32,
}

/// Feedback records not yet batched, and released batches.
#[derive(Debug, Default)]
pub struct FeedbackQueue {
    pending: Vec<FeedbackRecord>,
    window: Option<TimerId>,
    batches: BTreeMap<u64, StoredBatch>,
    next_batch: u64,
}

impl FeedbackQueue {
    /// Records waiting for the batch window.
    pub fn pending(&self) -> &[FeedbackRecord] {
        &self.pending
    }

    /// Released batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &StoredBatch> {
        self.batches.values()
    }

    /// True when a released batch is waiting for a receiver.
    pub fn has_available(&self) -> bool {
        self.batches.values().any(|b| b.lock.is_none())
    }

    /// Adds a record. Returns true if at least one batch was released.
    pub fn push(
        &mut self,
        record: FeedbackRecord,
        now: OffsetDateTime,
        settings: &super::HubSettings,
        timers: &mut Timers,
    ) -> bool {
        self.pending.push(record);
        if self.pending.len() >= settings.feedback_batch_size || settings.feedback_window.is_zero()
        {
            return self.release_pending(now, settings, timers);
        }
        if self.window.is_none() {
            self.window =
                Some(timers.insert(now + settings.feedback_window, Timer::FeedbackWindow));
        }
        false
    }

    /// Turns pending records into batches of at most the batch size. Returns true if any.
    pub fn release_pending(
        &mut self,
        now: OffsetDateTime,
        settings: &super::HubSettings,
        timers: &mut Timers,
    ) -> bool {
        if let Some(w) = self.window.take() {
            timers.remove(w);
        }
        if self.pending.is_empty() {
            return false;
        }
        let records = std::mem::take(&mut self.pending);
        for chunk in records.chunks(settings.feedback_batch_size.max(1)) {
            self.next_batch += 1;
            let id = self.next_batch;
            let expiry_timer = timers.insert(
                now + settings.feedback_ttl,
                Timer::FeedbackExpiry { batch: id },
            );
            self.batches.insert(
                id,
                StoredBatch {
                    batch: FeedbackBatch {
                        enqueued_time: now,
                        user_id: settings.hub_name.clone(),
                        records: chunk.to_vec(),
                    },
                    lock: None,
                    delivery_count: 0,
                    expiry_timer,
                },
            );
        }
        true
    }

    /// The window timer fired (it is already out of the index).
    pub fn window_closed(
        &mut self,
        now: OffsetDateTime,
        settings: &super::HubSettings,
        timers: &mut Timers,
    ) -> bool {
        self.window = None;
        self.release_pending(now, settings, timers)
    }

    /// Locks the oldest available batch.
    pub fn receive(
        &mut self,
        token: String,
        now: OffsetDateTime,
        settings: &super::HubSettings,
        timers: &mut Timers,
    ) -> Option<FeedbackDelivery> {
        let (&id, b) = self.batches.iter_mut().find(|(_, b)| b.lock.is_none())?;
        let timer = timers.insert(
            now + settings.feedback_lock_duration,
            Timer::FeedbackLock { batch: id },
        );
        b.lock = Some((token.clone(), timer));
        Some(FeedbackDelivery {
            lock_token: token,
            batch: b.batch.clone(),
            delivery_count: b.delivery_count,
        })
    }

    fn find(&self, token: &str) -> Option<u64> {
        self.batches.iter().find_map(|(&id, b)| match &b.lock {
            Some((t, _)) if t == token => Some(id),
            _ => None,
        })
    }

    fn remove(&mut self, id: u64, timers: &mut Timers) -> Option<StoredBatch> {
        let b = self.batches.remove(&id)?;
        timers.remove(b.expiry_timer);
        if let Some((_, t)) = &b.lock {
            timers.remove(*t);
        }
        Some(b)
    }

    /// Removes the batch locked with `token`: a complete, or a reject (the feedback queue has
    /// no dead-letter queue to keep it in). False if the token is unknown or its lock expired.
    pub fn settle(&mut self, token: &str, timers: &mut Timers) -> bool {
        match self.find(token) {
            Some(id) => self.remove(id, timers).is_some(),
            None => false,
        }
    }

    /// Returns the batch locked with `token` to the queue, counting a delivery; a batch that
    /// reaches the max delivery count is dropped. False if the token is unknown.
    pub fn abandon(&mut self, token: &str, max_delivery_count: u32, timers: &mut Timers) -> bool {
        match self.find(token) {
            Some(id) => {
                self.unlock(id, max_delivery_count, timers);
                true
            }
            None => false,
        }
    }

    /// Returns the batch locked with `token` to the queue without counting a delivery: its
    /// receiver went away before settling it. False if the token is unknown.
    pub fn release(&mut self, token: &str, timers: &mut Timers) -> bool {
        let Some(id) = self.find(token) else {
            return false;
        };
        if let Some(b) = self.batches.get_mut(&id)
            && let Some((_, t)) = b.lock.take()
        {
            timers.remove(t);
        }
        true
    }

    /// Ends the lock on batch `id` (abandon or lock expiry). Returns true if it is available
    /// again.
    pub fn unlock(&mut self, id: u64, max_delivery_count: u32, timers: &mut Timers) -> bool {
        let Some(b) = self.batches.get_mut(&id) else {
            return false;
        };
        if let Some((_, t)) = b.lock.take() {
            timers.remove(t);
        }
        b.delivery_count += 1;
        if b.delivery_count >= max_delivery_count {
            self.remove(id, timers);
            return false;
        }
        true
    }

    /// Drops a batch whose time to live ran out.
    pub fn expire(&mut self, id: u64, timers: &mut Timers) {
        self.remove(id, timers);
    }

    /// Drops every record about `device_id` that the service has not received yet.
    pub fn drop_device(&mut self, device_id: &str, timers: &mut Timers) {
        self.pending.retain(|r| r.device_id != device_id);
        let mut emptied = Vec::new();
        for (&id, b) in self.batches.iter_mut() {
            if b.lock.is_none() {
                b.batch.records.retain(|r| r.device_id != device_id);
                if b.batch.records.is_empty() {
                    emptied.push(id);
                }
            }
        }
        for id in emptied {
            self.remove(id, timers);
        }
        if self.pending.is_empty()
            && let Some(w) = self.window.take()
        {
            timers.remove(w);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = FeedbackQueue {
            next_batch: self.next_batch,
            ..FeedbackQueue::default()
        };
    }
}

/// The feedback queue as the durable store keeps it: no locks, no timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFeedback {
    /// Records waiting for the batch window.
    pub pending: Vec<FeedbackRecord>,
    /// Released batches by id, with their delivery counts.
    pub batches: Vec<(u64, FeedbackBatch, u32)>,
    /// The last batch id given out.
    pub last_batch: u64,
}

impl FeedbackQueue {
    /// The queue as the durable store keeps it.
    pub fn stored(&self) -> StoredFeedback {
        StoredFeedback {
            pending: self.pending.clone(),
            batches: self
                .batches
                .iter()
                .map(|(&id, b)| (id, b.batch.clone(), b.delivery_count))
                .collect(),
            last_batch: self.next_batch,
        }
    }

    /// A queue rebuilt from the durable store: locked batches are available again, each
    /// batch expires at its enqueued time plus the TTL, and pending records get a new window
    /// from `now` (the old one died with the process).
    pub fn restored(
        stored: StoredFeedback,
        now: OffsetDateTime,
        settings: &super::HubSettings,
        timers: &mut Timers,
    ) -> FeedbackQueue {
        let mut queue = FeedbackQueue {
            pending: stored.pending,
            window: None,
            batches: BTreeMap::new(),
            next_batch: stored.last_batch,
        };
        for (id, batch, delivery_count) in stored.batches {
            queue.next_batch = queue.next_batch.max(id);
            let expiry_timer = timers.insert(
                batch.enqueued_time + settings.feedback_ttl,
                Timer::FeedbackExpiry { batch: id },
            );
            queue.batches.insert(
                id,
                StoredBatch {
                    batch,
                    lock: None,
                    delivery_count,
                    expiry_timer,
                },
            );
        }
        if !queue.pending.is_empty() {
            queue.window =
                Some(timers.insert(now + settings.feedback_window, Timer::FeedbackWindow));
        }
        queue
    }
}
