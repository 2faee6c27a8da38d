//! The hub's deadlines, kept in one ordered index.
//!
//! Every lock, TTL and feedback window registers here, and finishing early removes it, so the
//! index holds only live deadlines. Finding what is due is a walk from the front of the map:
//! the cost depends on what expires, never on how many devices or messages exist.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::methods::InvocationId;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// A C2D message's expiry time.
    MessageExpiry {
        /// Device whose queue holds it.
        device_id: String,
        /// Its sequence number.
        seq: u64,
    },
    /// A C2D message's lock.
    MessageLock {
        /// Device whose queue holds it.
        device_id: String,
        /// Its sequence number.
        seq: u64,
    },
    /// The feedback batch window.
    FeedbackWindow,
    /// A received feedback batch's lock.
    FeedbackLock {
        /// The batch.
        batch: u64,
    },
    /// An undelivered feedback batch's time to live.
    FeedbackExpiry {
        /// The batch.
        batch: u64,
    },
    /// A direct method's connect timeout (while it waits for a subscriber) or response timeout
    /// (once sent).
    MethodDeadline {
        /// The invocation.
        invocation: InvocationId,
    },
    /// The oldest retained event of an event log partition reaches the retention time.
    EventRetention {
        /// The partition.
        partition: u32,
    },
}

/// A registered deadline, used to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId {
    at: OffsetDateTime,
    id: u64,
}

impl TimerId {
    /// When it fires.
    pub fn at(&self) -> OffsetDateTime {
        self.at
    }
}

/// All deadlines, ordered by time then registration.
#[derive(Debug, Default)]
pub struct Timers {
    map: BTreeMap<TimerId, Timer>,
    next: u64,
}

impl Timers {
    /// Registers `timer` to fire at `at`.
    pub fn insert(&mut self, at: OffsetDateTime, timer: Timer) -> TimerId {
        self.next += 1;
        let id = TimerId { at, id: self.next };
        self.map.insert(id, timer);
        id
    }

    /// Cancels a deadline; cancelling one that already fired does nothing.
    pub fn remove(&mut self, id: TimerId) {
        self.map.remove(&id);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<OffsetDateTime> {
        self.map.keys().next().map(|k| k.at)
    }

    /// Removes and returns the earliest deadline if it is at or before `now`.
    pub fn pop_due(&mut self, now: OffsetDateTime) -> Option<(TimerId, Timer)> {
        let (&first, _) = self.map.first_key_value()?;
        if first.at > now {
            return None;
        }
        self.map.remove(&first).map(|t| (first, t))
    }

    /// Number of live deadlines.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every deadline.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn pops_in_time_order_and_cancel_works() {
        let mut t = Timers::default();
        let t0 = datetime!(2020-01-01 0:00 UTC);
        let late = t.insert(t0 + time::Duration::seconds(10), Timer::FeedbackWindow);
        let early = t.insert(
            t0 + time::Duration::seconds(5),
            Timer::FeedbackLock { batch: 1 },
        );
        let cancelled = t.insert(
            t0 + time::Duration::seconds(1),
            Timer::FeedbackExpiry { batch: 2 },
        );
        t.remove(cancelled);
        assert_eq!(t.next_deadline(), Some(early.at()));
        assert!(t.pop_due(t0).is_none());
        let (id, timer) = t.pop_due(t0 + time::Duration::seconds(20)).unwrap();
        assert_eq!((id, timer), (early, Timer::FeedbackLock { batch: 1 }));
        assert_eq!(t.pop_due(t0 + time::Duration::seconds(20)).unwrap().0, late);
        assert!(t.is_empty());
    }
}
