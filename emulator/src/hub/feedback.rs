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
    /// The durable store's key of `pending[0]`; `pending[i]` is stored under
    /// `first_pending + i`, so a new record is written alone, not with all the others.
    first_pending: u64,
    window: Option<TimerId>,
    batches: BTreeMap<u64, StoredBatch>,
    next_batch: u64,
    /// What changed in stored form while a durable store tracks changes (`None` otherwise).
    touched: Option<FeedbackChanges>,
}

/// The pending records (by key) and batches (by id) whose stored form changed: each is
/// written if it still exists, deleted otherwise. Locks are not stored, so a receive changes
/// nothing here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FeedbackChanges {
    /// Keys of pending records added or removed.
    pub pending: Vec<u64>,
    /// Ids of batches released, removed or redelivered.
    pub batches: Vec<u64>,
}

impl FeedbackChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.batches.is_empty()
    }
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
        let key = self.first_pending + self.pending.len() as u64;
        self.touch_pending(key..key + 1);
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
        let len = records.len() as u64;
        self.touch_pending(self.first_pending..self.first_pending + len);
        self.first_pending += len;
        for chunk in records.chunks(settings.feedback_batch_size.max(1)) {
            self.next_batch += 1;
            let id = self.next_batch;
            self.touch_batch(id);
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
        self.touch_batch(id);
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
        let dropped = b.delivery_count >= max_delivery_count;
        self.touch_batch(id);
        if dropped {
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
        let before = self.pending.len() as u64;
        self.pending.retain(|r| r.device_id != device_id);
        if self.pending.len() as u64 != before {
            // The survivors move to fresh keys: the stored ones are all deleted.
            self.touch_pending(self.first_pending..self.first_pending + before);
            self.first_pending += before;
            let now = self.pending.len() as u64;
            self.touch_pending(self.first_pending..self.first_pending + now);
        }
        let mut changed = Vec::new();
        let mut emptied = Vec::new();
        for (&id, b) in self.batches.iter_mut() {
            if b.lock.is_none() {
                let len = b.batch.records.len();
                b.batch.records.retain(|r| r.device_id != device_id);
                if b.batch.records.len() != len {
                    changed.push(id);
                }
                if b.batch.records.is_empty() {
                    emptied.push(id);
                }
            }
        }
        for id in changed {
            self.touch_batch(id);
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

    /// Forgets everything. The store clears its copy as a whole, so nothing is noted as
    /// touched; numbering continues.
    pub fn clear(&mut self) {
        *self = FeedbackQueue {
            first_pending: self.first_pending + self.pending.len() as u64,
            next_batch: self.next_batch,
            touched: self.touched.as_ref().map(|_| FeedbackChanges::default()),
            ..FeedbackQueue::default()
        };
    }

    /// From now on, note which pending records and batches change, for
    /// [`FeedbackQueue::take_touched`].
    pub fn track_changes(&mut self) {
        self.touched.get_or_insert_with(FeedbackChanges::default);
    }

    /// What changed since the last call, each key ascending and once; empty when not
    /// tracking.
    pub fn take_touched(&mut self) -> FeedbackChanges {
        let Some(t) = &mut self.touched else {
            return FeedbackChanges::default();
        };
        let mut c = std::mem::take(t);
        for keys in [&mut c.pending, &mut c.batches] {
            keys.sort_unstable();
            keys.dedup();
        }
        c
    }

    fn touch_pending(&mut self, keys: std::ops::Range<u64>) {
        if let Some(t) = &mut self.touched {
            t.pending.extend(keys);
        }
    }

    fn touch_batch(&mut self, id: u64) {
        if let Some(t) = &mut self.touched {
            t.batches.push(id);
        }
    }

    /// The pending record stored under `key`; `None` if there is none (its key is deleted).
    pub fn pending_record(&self, key: u64) -> Option<&FeedbackRecord> {
        let i = usize::try_from(key.checked_sub(self.first_pending)?).ok()?;
        self.pending.get(i)
    }

    /// The last batch id given out.
    pub fn last_batch(&self) -> u64 {
        self.next_batch
    }

    /// The released batch `id` with its delivery count; `None` once it is gone.
    pub fn batch_record(&self, id: u64) -> Option<(&FeedbackBatch, u32)> {
        self.batches.get(&id).map(|b| (&b.batch, b.delivery_count))
    }
}

/// The feedback queue as the durable store keeps it: no locks, no timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFeedback {
    /// Records waiting for the batch window.
    pub pending: Vec<FeedbackRecord>,
    /// The key of the first pending record (the others follow it).
    pub first_pending: u64,
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
            first_pending: self.first_pending,
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
            first_pending: stored.first_pending,
            window: None,
            batches: BTreeMap::new(),
            next_batch: stored.last_batch,
            touched: None,
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
