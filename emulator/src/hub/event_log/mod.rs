//! The event log behind the built-in Event Hubs-compatible endpoint: device telemetry (and,
//! later, twin change, lifecycle and connection state events) as back ends read it.
//!
//! Reference: iothub-beyond-c2d.md 3.3–3.6. The rules, all decided here:
//!
//! - **Partitions.** `partition_count` of them (1–32, default 4), fixed for the hub's lifetime.
//!   An event goes to [`partition_for_device`] of its device id; a module's events follow their
//!   device, as the real hub partitions by device id only.
//! - **Sequence numbers** start at 0 in each partition and grow by 1 per event, with no gaps.
//! - **Offsets** are byte positions: an event's offset is the sum of the accounted sizes of the
//!   events before it in the partition (message size + sender ids + [`EVENT_OVERHEAD`]). Readers
//!   see a decimal string. Byte positions rather than sequence numbers because they look and
//!   behave like the real hub's (`x-opt-offset` 550576 next to sequence number 1379): a client
//!   that confuses the two fails against the emulator as it would against Azure. They also
//!   make the byte bound free to check (bytes retained = next offset − first retained offset).
//! - **Enqueued time** is the hub clock to the millisecond, never earlier than the partition's
//!   previous event, even if the clock handed in goes backwards.
//! - **Retention.** An event is dropped once it is older than `retention` (default 1 day), and
//!   the oldest events are dropped first while a partition holds more than
//!   `max_events_per_partition` events or `max_bytes_per_partition` accounted bytes. Both trim
//!   the front only: age through one timer per partition in the hub's timer index, the bounds
//!   on append. Dropped events do not renumber anything; a partition's begin sequence number
//!   moves up. [`super::Hub::reset`] drops every event but keeps the numbering, so readers
//!   that stay attached never see a sequence number twice.
//! - **Consumer groups.** `$Default` and the configured ones, matched case-insensitively. They
//!   only gate access: readers keep their own checkpoints, as with Event Hubs.
//! - **Positions** resolve by index arithmetic (sequence numbers) or binary search (offsets,
//!   enqueued times): never a scan from the front. Positions before the first retained event
//!   start at it; sequence numbers and offsets past the end are refused, as Event Hubs refuses
//!   them.
//! - **Readers** may claim a partition with an owner level ([`readers`]).
//!
//! What the AMQP adapter maps each [`EventLogError`] to is written on its variants.

mod durable;
mod event;
mod partition;
pub mod readers;
mod reads;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use iothub_protocol::event_position::SelectorError;
use time::OffsetDateTime;

pub use durable::{EventChanges, EventRecord, PartitionRecord, RestoredLog, RestoredPartition};
pub use event::{
    AnnotationValue, AuthMethod, AuthScope, ConnectionStamp, CredentialType, Event, EventSource,
    Origin, annotation, unix_ms,
};
pub use partition::{EVENT_OVERHEAD, NewEvent};
pub use readers::{MAX_SHARED_READERS, ReaderId};
pub use reads::{Cursor, Reader, ReaderRequest};

use partition::Partition;
use readers::Readers;

use super::settings::{DEFAULT_CONSUMER_GROUP, EventLogSettings};
use super::timers::Timers;

/// The partition a device's events go to: FNV-1a (64-bit) of the device id's UTF-8 bytes, mixed
/// with MurmurHash3's 64-bit finalizer so that ids differing only in their last character spread
/// over the partitions, modulo `partition_count`. No process randomness: the same id lands in
/// the same partition in every run and every build.
///
/// ```
/// use iothub_emulator::hub::event_log::partition_for_device;
///
/// assert_eq!(partition_for_device("thermostat-1", 4), partition_for_device("thermostat-1", 4));
/// assert!(partition_for_device("thermostat-1", 4) < 4);
/// ```
pub fn partition_for_device(device_id: &str, partition_count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // The remainder is below partition_count, so it fits.
    (h % u64::from(partition_count.max(1))) as u32
}

fn owner_conflict_text(held: i64, requested: Option<i64>) -> String {
    match requested {
        None => format!(
            "At least one receiver for the endpoint is created with epoch of '{held}', and so non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all epoch receivers are closed or disconnected."
        ),
        Some(r) => format!(
            "Receiver with epoch '{r}' cannot be created because a receiver with a higher epoch '{held}' already exists. Create receivers with increasing epochs, or close the ones with higher epochs."
        ),
    }
}

/// Why an event log query or a reader was refused. Each variant says which AMQP error
/// condition the Event Hubs clients expect for it; the texts of the not-found and out-of-range
/// cases follow the real service's, because the JS client matches on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// The consumer group does not exist. AMQP: `amqp:not-found`; `@azure/event-hubs` makes it
    /// a non-retryable `MessagingEntityNotFoundError` only when the text matches
    /// `The messaging entity .* could not be found` (else a retryable communication error).
    #[error(
        "The messaging entity '{entity}' could not be found. This hub's consumer groups are {known}; add others with the consumer_groups setting."
    )]
    ConsumerGroupNotFound {
        /// The name asked for.
        name: String,
        /// `{hub}/ConsumerGroups/{name}`.
        entity: String,
        /// The groups that exist, comma-separated.
        known: String,
    },
    /// No partition with this id. AMQP: `com.microsoft:argument-out-of-range` (the Go, JS and
    /// .NET clients treat it as fatal).
    #[error(
        "The specified partition '{partition}' is invalid for an EventHub partition sender or receiver. It should be between 0 and {last}."
    )]
    PartitionNotFound {
        /// The id asked for.
        partition: String,
        /// The highest partition id.
        last: u32,
    },
    /// A start sequence number after the next one to be assigned. AMQP:
    /// `com.microsoft:argument-error`.
    #[error(
        "The supplied sequence number '{supplied}' is invalid. The last sequence number in the system is '{last}'"
    )]
    SequenceNumberBeyondEnd {
        /// The sequence number in the filter.
        supplied: i64,
        /// The partition's last sequence number (-1 before the first event).
        last: i64,
    },
    /// A start offset after the end of the partition. AMQP: `com.microsoft:argument-error`.
    #[error(
        "The supplied offset '{supplied}' is invalid. The last offset in the system is '{last}'"
    )]
    OffsetBeyondEnd {
        /// The offset in the filter.
        supplied: String,
        /// The partition's last offset (-1 before the first event).
        last: String,
    },
    /// An offset that is not a decimal number, so not one this hub wrote. AMQP:
    /// `com.microsoft:argument-error`.
    #[error(
        "The supplied offset '{offset}' is invalid: offsets of this hub are decimal numbers read from x-opt-offset, or -1 and @latest"
    )]
    InvalidOffset {
        /// The offset in the filter.
        offset: String,
    },
    /// The selector filter could not be read. AMQP: `com.microsoft:argument-error`.
    #[error("the receiver's start position is not valid: {0}")]
    InvalidSelector(#[from] SelectorError),
    /// A receiver with a higher owner level holds the partition (or any owner level, for a
    /// receiver without one). AMQP: `amqp:link:stolen`.
    #[error("{}", owner_conflict_text(*held, *requested))]
    OwnerLevelConflict {
        /// The consumer group.
        consumer_group: String,
        /// The partition.
        partition: u32,
        /// The highest owner level attached.
        held: i64,
        /// The owner level asked for, if any.
        requested: Option<i64>,
    },
    /// This receiver was displaced by one with a higher or equal owner level (reported through
    /// [`super::HubEvent::ReaderDisplaced`]). AMQP: `amqp:link:stolen`.
    #[error(
        "A receiver with a higher or equal epoch took over this partition of the consumer group, so this receiver is disconnected."
    )]
    ReaderDisplaced,
    /// A sixth receiver without an owner level. AMQP: `amqp:resource-limit-exceeded`.
    #[error(
        "Exceeded the maximum number of allowed receivers per partition in a consumer group which is {max}: consumer group '{consumer_group}', partition {partition}."
    )]
    TooManyReaders {
        /// The consumer group.
        consumer_group: String,
        /// The partition.
        partition: u32,
        /// The limit.
        max: usize,
    },
}

/// What `com.microsoft:eventhub` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubInfo {
    /// The Event Hubs-compatible name: the hub name.
    pub name: String,
    /// When the hub began (its first operation; the emulator's start).
    pub created_at: OffsetDateTime,
    /// `"0"`, `"1"`, ... as the clients expect them: strings.
    pub partition_ids: Vec<String>,
}

/// What `com.microsoft:partition` reports about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition id.
    pub partition_id: String,
    /// The first retained event's sequence number; the next one's when nothing is retained
    /// (0 for a partition that never had an event).
    pub begin_sequence_number: i64,
    /// The last event's sequence number, retained or not; -1 before the first event.
    pub last_enqueued_sequence_number: i64,
    /// The last event's offset, retained or not; `"-1"` before the first event.
    pub last_enqueued_offset: String,
    /// The last event's enqueued time; the Unix epoch before the first event.
    pub last_enqueued_time: OffsetDateTime,
    /// True when no event is retained.
    pub is_empty: bool,
}

/// Where an accepted message was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its partition.
    pub partition: u32,
    /// Its sequence number there.
    pub sequence_number: i64,
    /// Its offset there.
    pub offset: u64,
    /// Its enqueued time.
    pub enqueued_time: OffsetDateTime,
}

impl From<&Event> for Appended {
    fn from(e: &Event) -> Self {
        Appended {
            partition: e.partition,
            sequence_number: e.sequence_number,
            offset: e.offset,
            enqueued_time: e.enqueued_time,
        }
    }
}

/// The hub's partitions, consumer-group readers and creation time.
#[derive(Debug)]
pub struct EventLog {
    partitions: Vec<Partition>,
    readers: Readers,
    created_at: Option<OffsetDateTime>,
    /// What changed, while a durable store tracks it (`durable`).
    changes: Option<EventChanges>,
}

impl EventLog {
    /// An empty log with `partition_count` partitions (clamped to 1–32; settings validation
    /// reports values outside).
    pub fn new(partition_count: u32) -> Self {
        EventLog {
            partitions: (0..partition_count.clamp(1, 32))
                .map(Partition::new)
                .collect(),
            readers: Readers::default(),
            created_at: None,
            changes: None,
        }
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Notes the hub's first moment, reported as the event hub's creation time.
    pub(super) fn start(&mut self, now: OffsetDateTime) {
        if self.created_at.is_none() {
            self.created_at = Some(now);
            self.note_created();
        }
    }

    /// The partition with this id (`"0"`, `"1"`, ... exactly as the hub writes them).
    fn partition_by_id(&self, id: &str) -> Result<&Partition, EventLogError> {
        let not_found = || EventLogError::PartitionNotFound {
            partition: id.chars().take(64).collect(),
            last: self.partition_count() - 1,
        };
        let n: u32 = id.parse().map_err(|_| not_found())?;
        if n.to_string() != id {
            return Err(not_found());
        }
        self.partitions.get(n as usize).ok_or_else(not_found)
    }

    /// Appends an event to its device's partition.
    pub(super) fn append(
        &mut self,
        new: NewEvent,
        now: OffsetDateTime,
        settings: &EventLogSettings,
        timers: &mut Timers,
    ) -> Arc<Event> {
        let index = partition_for_device(&new.origin.device_id, self.partition_count());
        // The index is below the partition count, so this never falls back.
        let partition = match self.partitions.get_mut(index as usize) {
            Some(p) => p,
            None => &mut self.partitions[0],
        };
        let first = partition.first_seq();
        let e = partition.append(new, now, settings, timers);
        let trimmed = partition.first_seq() != first;
        self.note_appended(&e);
        if trimmed {
            self.note_partition(e.partition);
        }
        e
    }

    /// A partition's retention deadline fired at `at`.
    pub(super) fn expire(
        &mut self,
        partition: u32,
        at: OffsetDateTime,
        settings: &EventLogSettings,
        timers: &mut Timers,
    ) {
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            let first = p.first_seq();
            p.expire(at, settings, timers);
            if p.first_seq() != first {
                self.note_partition(partition);
            }
        }
    }

    /// Drops every retained event, keeping the numbering; the hub has cleared the timers.
    pub(super) fn clear(&mut self) {
        self.partitions.iter_mut().for_each(Partition::clear);
        for p in 0..self.partition_count() {
            self.note_partition(p);
        }
    }
}

/// The canonical name of the consumer group `name` (case-insensitive match).
fn find_consumer_group<'a>(
    settings: &'a EventLogSettings,
    hub_name: &str,
    name: &str,
) -> Result<&'a str, EventLogError> {
    if name.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP) {
        return Ok(DEFAULT_CONSUMER_GROUP);
    }
    if let Some(g) = settings
        .consumer_groups
        .iter()
        .find(|g| g.eq_ignore_ascii_case(name))
    {
        return Ok(g);
    }
    let known: Vec<&str> = std::iter::once(DEFAULT_CONSUMER_GROUP)
        .chain(
            settings
                .consumer_groups
                .iter()
                .map(String::as_str)
                .filter(|g| !g.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP)),
        )
        .collect();
    let shown: String = name.chars().take(64).collect();
    Err(EventLogError::ConsumerGroupNotFound {
        entity: format!("{hub_name}/ConsumerGroups/{shown}"),
        name: shown,
        known: known.join(", "),
    })
}

impl<S: super::Store> super::Hub<S> {
    /// Appends an event to its device's partition and wakes that partition's readers. Every
    /// feature that produces events (telemetry, and later twin changes, lifecycle and connection
    /// state events) goes through here.
    pub(in crate::hub) fn append_event(
        &mut self,
        new: NewEvent,
        now: OffsetDateTime,
    ) -> Arc<Event> {
        let appended = self
            .event_log
            .append(new, now, &self.settings.event_log, &mut self.timers);
        let wake = super::HubEvent::EventsAvailable {
            partition: appended.partition,
        };
        // One wake-up per partition per operation is enough (a batch appends many).
        if self.events.back() != Some(&wake) {
            self.events.push_back(wake);
        }
        appended
    }
}
