//! One partition: an append-only run of events, trimmed from the front.
//!
//! Events sit in a `VecDeque` in sequence order, so the event with sequence number `n` is at
//! index `n - first`; offsets and enqueued times only grow along it, so both are found by binary
//! search. No query walks from the front: the cost of finding a position is independent of how
//! many events precede it. Retention trims from the front too, one timer per partition.

use std::collections::VecDeque;
use std::sync::Arc;

use iothub_protocol::EventPosition;
use time::OffsetDateTime;

use super::event::{ConnectionStamp, Event, EventSource, unix_ms};
use super::{EventLogError, PartitionInfo};
use crate::hub::Identity;
use crate::hub::settings::EventLogSettings;
use crate::hub::timers::{Timer, TimerId, Timers};
use iothub_protocol::Message;

/// What every event counts for in memory and in offsets besides its message and sender ids: a
/// conservative estimate of the event's own allocations (struct, `Arc`, property vectors).
pub const EVENT_OVERHEAD: u64 = 512;

/// Bytes an event counts for against the partition's byte bound; also how far the offset moves.
pub(super) fn accounted_size(message: &Message, origin: &Identity) -> u64 {
    let ids = origin.device_id.len() + origin.module_id.as_ref().map_or(0, String::len);
    (message.size() + ids) as u64 + EVENT_OVERHEAD
}

/// `t` truncated to the millisecond: readers see milliseconds, so the log keeps no more.
fn to_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

/// The last event ever appended, kept after retention drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Last {
    pub(super) offset: u64,
    pub(super) enqueued_time: OffsetDateTime,
}

/// What a new event carries before the partition numbers it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What produced it.
    pub source: EventSource,
    /// The device or module it is about (decides the partition).
    pub origin: Identity,
    /// The sender's authentication, for device messages.
    pub connection: Option<ConnectionStamp>,
    /// The message.
    pub message: Message,
}

/// One partition of the log.
#[derive(Debug)]
pub(super) struct Partition {
    id: u32,
    pub(super) events: VecDeque<Arc<Event>>,
    /// The sequence number the next event gets; the first retained one is this minus the
    /// number retained.
    pub(super) next_seq: i64,
    /// The offset the next event gets.
    pub(super) next_offset: u64,
    pub(super) last: Option<Last>,
    /// The pending retention deadline, at most one per partition.
    pub(super) retention_timer: Option<TimerId>,
}

impl Partition {
    pub(super) fn new(id: u32) -> Self {
        Partition {
            id,
            events: VecDeque::new(),
            next_seq: 0,
            next_offset: 0,
            last: None,
            retention_timer: None,
        }
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }

    /// Sequence number of the first retained event (or of the next one, when empty).
    pub(super) fn first_seq(&self) -> i64 {
        self.next_seq - self.events.len() as i64
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes retained, as counted against the bound: offsets advance by each event's size.
    pub(super) fn bytes(&self) -> u64 {
        self.events
            .front()
            .map_or(0, |e| self.next_offset - e.offset)
    }

    /// Appends an event stamped `now` (but never before the previous event), then drops the
    /// oldest events past the count or byte bound and makes sure a retention deadline exists.
    pub(super) fn append(
        &mut self,
        new: NewEvent,
        now: OffsetDateTime,
        settings: &EventLogSettings,
        timers: &mut Timers,
    ) -> Arc<Event> {
        let floor = self.last.map(|l| l.enqueued_time);
        let enqueued_time = floor.map_or(to_millis(now), |f| f.max(to_millis(now)));
        let size = accounted_size(&new.message, &new.origin);
        let event = Arc::new(Event {
            partition: self.id,
            sequence_number: self.next_seq,
            offset: self.next_offset,
            enqueued_time,
            source: new.source,
            origin: new.origin,
            connection: new.connection,
            message: new.message,
        });
        self.last = Some(Last {
            offset: self.next_offset,
            enqueued_time,
        });
        self.next_seq += 1;
        self.next_offset = self.next_offset.saturating_add(size);
        self.events.push_back(event.clone());
        // The newest event always stays: the byte bound (at least 1 MiB) exceeds any message.
        while self.events.len() > 1
            && (self.events.len() > settings.max_events_per_partition
                || self.bytes() > settings.max_bytes_per_partition)
        {
            self.events.pop_front();
        }
        self.arm_retention(settings, timers);
        event
    }

    /// Registers the retention deadline of the oldest event, unless one is pending. A pending
    /// deadline may belong to an event the bounds already dropped; it then fires early, finds
    /// nothing due and re-arms for the current oldest, so one timer per partition suffices.
    pub(super) fn arm_retention(&mut self, settings: &EventLogSettings, timers: &mut Timers) {
        if self.retention_timer.is_some() {
            return;
        }
        let Some(front) = self.events.front() else {
            return;
        };
        let retention = time::Duration::try_from(settings.retention).ok();
        // A deadline beyond the calendar means the event is never dropped for age.
        if let Some(at) = retention.and_then(|r| front.enqueued_time.checked_add(r)) {
            self.retention_timer =
                Some(timers.insert(at, Timer::EventRetention { partition: self.id }));
        }
    }

    /// The retention deadline fired at `at`: drops every event enqueued at or before
    /// `at - retention` (all at the front) and arms the next deadline.
    pub(super) fn expire(
        &mut self,
        at: OffsetDateTime,
        settings: &EventLogSettings,
        timers: &mut Timers,
    ) {
        self.retention_timer = None;
        let retention = time::Duration::try_from(settings.retention).unwrap_or(time::Duration::MAX);
        while let Some(front) = self.events.front() {
            match front.enqueued_time.checked_add(retention) {
                Some(due) if due <= at => {
                    self.events.pop_front();
                }
                _ => break,
            }
        }
        self.arm_retention(settings, timers);
    }

    /// Drops every retained event; numbering continues. The caller has cleared the timers.
    pub(super) fn clear(&mut self) {
        self.events.clear();
        self.retention_timer = None;
    }

    /// Index of the first retained event for which `before` is false; events are ordered so
    /// that `before` holds for a prefix.
    fn first_not(&self, before: impl Fn(&Event) -> bool) -> i64 {
        self.first_seq() + self.events.partition_point(|e| before(e)) as i64
    }

    /// The sequence number a reader starting at `position` reads first. Positions before the
    /// first retained event start there; positions past the end are refused, as Event Hubs
    /// refuses them.
    pub(super) fn resolve(&self, position: &EventPosition) -> Result<i64, EventLogError> {
        match position {
            EventPosition::Earliest => Ok(self.first_seq()),
            EventPosition::Latest => Ok(self.next_seq),
            EventPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => {
                let n = *sequence_number;
                let start = if *inclusive { n } else { n.saturating_add(1) };
                if start > self.next_seq {
                    return Err(EventLogError::SequenceNumberBeyondEnd {
                        supplied: n,
                        last: self.next_seq - 1,
                    });
                }
                Ok(start.max(self.first_seq()))
            }
            EventPosition::Offset { offset, inclusive } => {
                let o: u64 = offset.parse().map_err(|_| EventLogError::InvalidOffset {
                    offset: offset.clone(),
                })?;
                let valid = if *inclusive {
                    o <= self.next_offset
                } else {
                    o < self.next_offset
                };
                if !valid {
                    return Err(EventLogError::OffsetBeyondEnd {
                        supplied: offset.clone(),
                        last: self.last_offset_string(),
                    });
                }
                Ok(if *inclusive {
                    self.first_not(|e| e.offset < o)
                } else {
                    self.first_not(|e| e.offset <= o)
                })
            }
            EventPosition::EnqueuedTime {
                unix_ms: t,
                inclusive,
            } => Ok(if *inclusive {
                self.first_not(|e| unix_ms(e.enqueued_time) < *t)
            } else {
                self.first_not(|e| unix_ms(e.enqueued_time) <= *t)
            }),
        }
    }

    fn last_offset_string(&self) -> String {
        self.last
            .map_or_else(|| "-1".to_owned(), |l| l.offset.to_string())
    }

    /// Up to `max` events from sequence number `from` on (from the first retained one if
    /// `from` was dropped), and the sequence number to read next.
    pub(super) fn read(&self, from: i64, max: usize) -> (Vec<Arc<Event>>, i64) {
        let start = from.max(self.first_seq());
        let Ok(index) = usize::try_from(start - self.first_seq()) else {
            return (Vec::new(), start);
        };
        let end = index.saturating_add(max).min(self.events.len());
        if index >= end {
            return (Vec::new(), start);
        }
        let events: Vec<_> = self.events.range(index..end).cloned().collect();
        (events, start + (end - index) as i64)
    }

    /// True when an event with sequence number `from` or later is retained.
    pub(super) fn has_from(&self, from: i64) -> bool {
        !self.events.is_empty() && from < self.next_seq
    }

    /// Runtime information, as `com.microsoft:partition` reports it.
    pub(super) fn info(&self) -> PartitionInfo {
        PartitionInfo {
            partition_id: self.id.to_string(),
            begin_sequence_number: self.first_seq(),
            last_enqueued_sequence_number: self.next_seq - 1,
            last_enqueued_offset: self.last_offset_string(),
            last_enqueued_time: self
                .last
                .map_or(OffsetDateTime::UNIX_EPOCH, |l| l.enqueued_time),
            is_empty: self.events.is_empty(),
        }
    }
}
