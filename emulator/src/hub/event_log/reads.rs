//! The hub's event log queries: entity and partition information, consumer groups, receivers
//! and reading from a position.
//!
//! How a receiver link uses them (the AMQP adapter, with credit-based flow):
//!
//! 1. [`Hub::attach_reader`] with the group, the partition and the position parsed from the
//!    selector filter ([`iothub_protocol::EventPosition::parse_selector`]) and the link's owner
//!    level. It checks everything, pins `@latest` to "after the last event now", and returns a
//!    [`Reader`] whose [`Cursor`] says what to read next.
//! 2. While the link has credit `n`: [`Hub::read_events`]`(&mut cursor, n)`. When it returns
//!    nothing, wait for [`super::super::HubEvent::EventsAvailable`] on the cursor's partition
//!    (enable the wake-up before reading, so an append in between is not missed).
//! 3. [`super::super::HubEvent::ReaderDisplaced`] names a reader displaced by a higher owner
//!    level: detach its link with [`EventLogError::ReaderDisplaced`].
//! 4. When the link closes, [`Hub::detach_reader`].

use std::sync::Arc;

use iothub_protocol::EventPosition;
use time::OffsetDateTime;

use super::{Event, EventHubInfo, EventLogError, PartitionInfo, ReaderId, find_consumer_group};
use crate::hub::{Hub, HubEvent, Store};

/// Where a reader stands in one partition: the sequence number it reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    partition: u32,
    next: i64,
}

impl Cursor {
    /// The partition it reads.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The sequence number of the next event to read (events dropped meanwhile are skipped).
    pub fn next_sequence_number(&self) -> i64 {
        self.next
    }
}

/// What a receiver link asks for when it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderRequest {
    /// The consumer group from the link address (any letter case).
    pub consumer_group: String,
    /// The partition id from the link address.
    pub partition_id: String,
    /// The start position from the selector filter; [`EventPosition::Earliest`] when the link
    /// has none (Event Hubs starts such a receiver at the first retained event).
    pub position: EventPosition,
    /// `com.microsoft:epoch`, if the link set one.
    pub owner_level: Option<i64>,
}

/// An admitted receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// Its id, for [`Hub::detach_reader`] and [`HubEvent::ReaderDisplaced`].
    pub id: ReaderId,
    /// The consumer group's name as configured.
    pub consumer_group: String,
    /// Where it starts.
    pub cursor: Cursor,
}

impl<S: Store> Hub<S> {
    /// The Event Hubs entity: name, creation time and partition ids.
    pub fn event_hub_info(&self) -> EventHubInfo {
        EventHubInfo {
            name: self.settings.hub_name.clone(),
            created_at: self
                .event_log
                .created_at
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            partition_ids: (0..self.event_log.partition_count())
                .map(|p| p.to_string())
                .collect(),
        }
    }

    /// Runtime information of one partition.
    pub fn partition_info(&self, partition_id: &str) -> Result<PartitionInfo, EventLogError> {
        Ok(self.event_log.partition_by_id(partition_id)?.info())
    }

    /// The consumer group's name as configured, if `name` matches one ignoring case.
    pub fn consumer_group(&self, name: &str) -> Result<&str, EventLogError> {
        find_consumer_group(&self.settings.event_log, &self.settings.hub_name, name)
    }

    /// A cursor at `position` in a partition, for readers that need no registration (tools,
    /// tests). Receiver links use [`Hub::attach_reader`].
    pub fn cursor(
        &self,
        partition_id: &str,
        position: &EventPosition,
    ) -> Result<Cursor, EventLogError> {
        let p = self.event_log.partition_by_id(partition_id)?;
        Ok(Cursor {
            partition: p.id(),
            next: p.resolve(position)?,
        })
    }

    /// Admits a receiver: checks the consumer group, the partition, the position and the owner
    /// level, displaces the receivers its owner level overrides (one
    /// [`HubEvent::ReaderDisplaced`] each) and returns where it starts.
    pub fn attach_reader(
        &mut self,
        request: &ReaderRequest,
        now: OffsetDateTime,
    ) -> Result<Reader, EventLogError> {
        // Age-based retention takes effect first, so "earliest" is what it should be now.
        self.handle_timeout(now);
        let group = self.consumer_group(&request.consumer_group)?.to_owned();
        let cursor = self.cursor(&request.partition_id, &request.position)?;
        let (id, displaced) =
            self.event_log
                .readers
                .attach(&group, cursor.partition, request.owner_level)?;
        for reader in displaced {
            self.events.push_back(HubEvent::ReaderDisplaced { reader });
        }
        Ok(Reader {
            id,
            consumer_group: group,
            cursor,
        })
    }

    /// Forgets a receiver whose link closed. Unknown or displaced ids are ignored.
    pub fn detach_reader(&mut self, reader: ReaderId) {
        self.event_log.readers.detach(reader);
    }

    /// Number of attached receivers.
    pub fn reader_count(&self) -> usize {
        self.event_log.readers.len()
    }

    /// Up to `max` events from the cursor on, oldest first; the cursor moves past them. Events
    /// dropped by retention since the cursor was made are skipped (their sequence numbers are
    /// missing from what is returned, as with Event Hubs). Costs O(returned events).
    pub fn read_events(&self, cursor: &mut Cursor, max: usize) -> Vec<Arc<Event>> {
        let Some(p) = self.event_log.partitions.get(cursor.partition as usize) else {
            return Vec::new();
        };
        let (events, next) = p.read(cursor.next, max);
        cursor.next = next;
        events
    }

    /// True when [`Hub::read_events`] would return something for this cursor.
    pub fn has_events(&self, cursor: &Cursor) -> bool {
        self.event_log
            .partitions
            .get(cursor.partition as usize)
            .is_some_and(|p| p.has_from(cursor.next))
    }
}
