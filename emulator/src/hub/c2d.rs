//! One device's cloud-to-device queue.
//!
//! Reference: iothub-protocol.md 1. A message is Enqueued until a receive locks it (Invisible);
//! the lock ends in complete, reject, abandon, or expiry of the lock. Messages are kept in
//! sequence order, so a receive always takes the oldest available message.
//!
//! This file knows the queue's own rules (order, locks, delivery counts). Which feedback an
//! outcome produces is the hub's business ([`super::Hub`]); here an outcome is only reported.

use std::collections::BTreeMap;
use std::time::Duration;

use iothub_protocol::{FeedbackStatus, Message};
use time::OffsetDateTime;

use super::timers::{Timer, TimerId, Timers};

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting to be received.
    Enqueued,
    /// Received and locked until `until`.
    Locked {
        /// The token that settles this delivery.
        token: String,
        /// When the lock runs out.
        until: OffsetDateTime,
        /// The lock's deadline in the timer index.
        timer: TimerId,
    },
}

/// A message in a queue, with the hub's bookkeeping.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The message as the service sent it, plus `to`, sequence number and enqueued time.
    pub message: Message,
    /// Enqueued or locked.
    pub state: MessageState,
    /// How many releases counted as deliveries so far.
    pub delivery_count: u32,
    /// When the message expires.
    pub expires_at: OffsetDateTime,
    expiry_timer: TimerId,
}

impl QueuedMessage {
    fn stored(&self) -> StoredMessage {
        StoredMessage {
            message: self.message.clone(),
            delivery_count: self.delivery_count,
            expires_at: self.expires_at,
        }
    }

    /// The sequence number the hub gave it.
    pub fn sequence_number(&self) -> u64 {
        self.message.system.sequence_number.unwrap_or_default()
    }

    /// True while a receiver holds its lock.
    pub fn is_locked(&self) -> bool {
        matches!(self.state, MessageState::Locked { .. })
    }
}

/// How a message left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Completed by the device.
    Completed,
    /// Rejected by the device.
    Rejected,
    /// Its expiry time passed.
    Expired,
    /// Released too often.
    DeliveryCountExceeded,
    /// Removed by a purge.
    Purged,
    /// Removed because the device was deleted.
    DeviceDeleted,
}

impl Outcome {
    /// The feedback status this outcome is reported as; none for a deleted device, whose
    /// pending feedback is dropped with it.
    pub fn feedback_status(self) -> Option<FeedbackStatus> {
        match self {
            Outcome::Completed => Some(FeedbackStatus::Success),
            Outcome::Rejected => Some(FeedbackStatus::Rejected),
            Outcome::Expired => Some(FeedbackStatus::Expired),
            Outcome::DeliveryCountExceeded => Some(FeedbackStatus::DeliveryCountExceeded),
            Outcome::Purged => Some(FeedbackStatus::Purged),
            Outcome::DeviceDeleted => None,
        }
    }
}

/// What happened to a message whose lock ended without a settlement.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// Back in the queue.
    Requeued,
    /// Dead-lettered: it reached the max delivery count.
    DeadLettered(Box<QueuedMessage>),
}

/// A device's C2D queue.
#[derive(Debug, Default)]
pub struct C2dQueue {
    /// Boxed: a `QueuedMessage` is ~400 bytes, and a B-tree leaf holds 11 entries inline, so
    /// an unboxed map allocated ~4.5 KB for a device's first message.
    messages: BTreeMap<u64, Box<QueuedMessage>>,
    next_seq: u64,
    /// Sequence numbers whose stored form changed (added, removed, delivery count), while a
    /// durable store tracks changes (`None` otherwise): what it must write or delete.
    touched: Option<Vec<u64>>,
}

impl PartialEq for QueuedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
            && self.state == other.state
            && self.delivery_count == other.delivery_count
            && self.expires_at == other.expires_at
    }
}

impl Eq for QueuedMessage {}

impl C2dQueue {
    /// Pending messages (enqueued or locked).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The pending messages in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.messages.values().map(|m| &**m)
    }

    /// True when some message is waiting to be received.
    pub fn has_available(&self) -> bool {
        self.messages.values().any(|m| !m.is_locked())
    }

    /// Appends a message; the caller has checked depth and size. Returns its sequence number.
    pub fn push(
        &mut self,
        device_id: &str,
        mut message: Message,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        timers: &mut Timers,
    ) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        message.system.sequence_number = Some(seq);
        message.system.enqueued_time = Some(now);
        message.system.absolute_expiry = Some(expires_at);
        let expiry_timer = timers.insert(
            expires_at,
            Timer::MessageExpiry {
                device_id: device_id.to_owned(),
                seq,
            },
        );
        self.messages.insert(
            seq,
            Box::new(QueuedMessage {
                message,
                state: MessageState::Enqueued,
                delivery_count: 0,
                expires_at,
                expiry_timer,
            }),
        );
        self.touch(seq);
        seq
    }

    /// Locks the oldest available message and returns a copy for delivery, with its lock token
    /// and delivery count filled in.
    pub fn lock_next(
        &mut self,
        device_id: &str,
        token: String,
        now: OffsetDateTime,
        lock: Duration,
        timers: &mut Timers,
    ) -> Option<Message> {
        let (&seq, entry) = self.messages.iter_mut().find(|(_, m)| !m.is_locked())?;
        let until = now + lock;
        let timer = timers.insert(
            until,
            Timer::MessageLock {
                device_id: device_id.to_owned(),
                seq,
            },
        );
        let mut out = entry.message.clone();
        out.system.lock_token = Some(token.clone());
        out.system.delivery_count = Some(entry.delivery_count);
        entry.state = MessageState::Locked {
            token,
            until,
            timer,
        };
        Some(out)
    }

    /// The sequence number of the message locked with `token`, if its lock is still valid.
    pub fn find_locked(&self, token: &str) -> Option<u64> {
        self.messages.iter().find_map(|(&seq, m)| match &m.state {
            MessageState::Locked { token: t, .. } if t == token => Some(seq),
            _ => None,
        })
    }

    /// Removes a message for good and cancels its deadlines.
    pub fn remove(&mut self, seq: u64, timers: &mut Timers) -> Option<QueuedMessage> {
        let m = self.messages.remove(&seq)?;
        self.touch(seq);
        timers.remove(m.expiry_timer);
        if let MessageState::Locked { timer, .. } = &m.state {
            timers.remove(*timer);
        }
        Some(*m)
    }

    /// Ends the lock on `seq` without a settlement. If `counts` the delivery count goes up,
    /// and reaching `max_delivery_count` dead-letters the message.
    pub fn release(
        &mut self,
        seq: u64,
        counts: bool,
        max_delivery_count: u32,
        timers: &mut Timers,
    ) -> Option<Released> {
        let m = self.messages.get_mut(&seq)?;
        if let MessageState::Locked { timer, .. } = &m.state {
            timers.remove(*timer);
        }
        m.state = MessageState::Enqueued;
        if counts {
            m.delivery_count += 1;
            if let Some(t) = &mut self.touched {
                t.push(seq);
            }
            if m.delivery_count >= max_delivery_count {
                let m = self.remove(seq, timers)?;
                return Some(Released::DeadLettered(Box::new(m)));
            }
        }
        Some(Released::Requeued)
    }

    /// Removes every message (purge or device delete) and cancels their deadlines.
    pub fn drain(&mut self, timers: &mut Timers) -> Vec<QueuedMessage> {
        let seqs: Vec<u64> = self.messages.keys().copied().collect();
        seqs.into_iter()
            .filter_map(|s| self.remove(s, timers))
            .collect()
    }
}

/// A queued message as the durable store keeps it: no lock (locks die with connections) and
/// no timer (deadlines are re-armed from `expires_at` on load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message with its hub-stamped system properties.
    pub message: Message,
    /// Releases counted so far.
    pub delivery_count: u32,
    /// When it expires.
    pub expires_at: OffsetDateTime,
}

impl C2dQueue {
    /// The last sequence number given out (the next message gets one more).
    pub fn last_sequence_number(&self) -> u64 {
        self.next_seq
    }

    /// The queue as the durable store keeps it.
    pub fn stored(&self) -> Vec<StoredMessage> {
        self.iter().map(QueuedMessage::stored).collect()
    }

    /// One message as the durable store keeps it; `None` once it left the queue.
    pub fn stored_message(&self, seq: u64) -> Option<StoredMessage> {
        self.messages.get(&seq).map(|m| m.stored())
    }

    /// From now on, note which messages change, for [`C2dQueue::take_touched`].
    pub fn track_changes(&mut self) {
        self.touched.get_or_insert_with(Vec::new);
    }

    /// The sequence numbers of the messages added, removed or redelivered since the last call,
    /// ascending, each once; empty when not tracking.
    pub fn take_touched(&mut self) -> Vec<u64> {
        let Some(t) = &mut self.touched else {
            return Vec::new();
        };
        let mut seqs = std::mem::take(t);
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// Every pending message's sequence number, ascending.
    pub fn sequence_numbers(&self) -> Vec<u64> {
        self.messages.keys().copied().collect()
    }

    fn touch(&mut self, seq: u64) {
        if let Some(t) = &mut self.touched {
            t.push(seq);
        }
    }

    /// A queue rebuilt from the durable store: every message available again (its lock, if
    /// any, died with the process), its expiry re-armed at its own time, so a message that
    /// expired while the emulator was down expires at the first deadline check.
    pub fn restored(
        device_id: &str,
        last_sequence_number: u64,
        messages: Vec<StoredMessage>,
        timers: &mut Timers,
    ) -> C2dQueue {
        let mut queue = C2dQueue {
            messages: BTreeMap::new(),
            next_seq: last_sequence_number,
            touched: None,
        };
        for m in messages {
            let seq = m.message.system.sequence_number.unwrap_or_default();
            queue.next_seq = queue.next_seq.max(seq);
            let expiry_timer = timers.insert(
                m.expires_at,
                Timer::MessageExpiry {
                    device_id: device_id.to_owned(),
                    seq,
                },
            );
            queue.messages.insert(
                seq,
                Box::new(QueuedMessage {
                    message: m.message,
                    state: MessageState::Enqueued,
                    delivery_count: m.delivery_count,
                    expires_at: m.expires_at,
                    expiry_timer,
                }),
            );
        }
        queue
    }
}
