//! What a durable store keeps of the event log, and how it learns what changed.
//!
//! Kept: every retained event, one record per (partition, sequence number), and per partition
//! the numbering that must continue after a restart (next sequence number, next offset, the
//! last event's offset and time, which outlive the event itself). Not kept: readers (they
//! belong to connections) and the retention timers (re-armed from the events' times).
//!
//! While tracking, the log notes the events it appended and the partitions whose front or
//! numbering moved (append, retention, reset); [`EventLog::take_changes`] hands them over, so
//! an append writes its event and its partition's small record, and a trim deletes the keys
//! before the partition's new first sequence number.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use iothub_protocol::{AckMode, Message};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::event::{AuthMethod, AuthScope, ConnectionStamp, CredentialType, Event, EventSource};
use super::partition::{Last, accounted_size};
use super::{EventLog, Partition};
use crate::hub::Identity;
use crate::hub::persisted::IdRecord;
use crate::hub::settings::EventLogSettings;
use crate::hub::timers::Timers;

/// What the log changed since the last [`EventLog::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventChanges {
    /// Events appended, in order.
    pub appended: Vec<Arc<Event>>,
    /// Partitions whose numbering or first retained event moved.
    pub partitions: BTreeSet<u32>,
    /// The hub's creation time was set.
    pub created_at: bool,
}

impl EventChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.appended.is_empty() && self.partitions.is_empty() && !self.created_at
    }
}

/// A partition's numbering, which continues after a restart even when no event is retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The sequence number the next event gets.
    pub next_seq: i64,
    /// The offset the next event gets.
    pub next_offset: u64,
    /// The last event's offset and enqueued time (Unix ms), retained or not.
    pub last: Option<(u64, i64)>,
    /// The first retained sequence number when the record was written: stored events before
    /// it (a store may keep them until the rest of their chunk goes) are not loaded.
    #[serde(default)]
    pub first_seq: Option<i64>,
}

/// One retained event, without its partition and sequence number (they are its key). Written
/// as a MessagePack array: a field added later goes last, with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    offset: u64,
    enqueued_ms: i64,
    source: u8,
    device_id: String,
    module_id: Option<String>,
    /// Scope, credential type and generation id of the sender's connection.
    connection: Option<(u8, u8, Option<String>)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    message_id: Option<IdRecord>,
    correlation_id: Option<IdRecord>,
    user_id: Option<String>,
    to: Option<String>,
    absolute_expiry: Option<OffsetDateTime>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    ack: String,
    properties: Vec<(String, String)>,
}

/// A partition as loaded: its numbering and its retained events in sequence order.
#[derive(Debug, Clone, Default)]
pub struct RestoredPartition {
    /// The numbering; `None` for a partition that never had an event.
    pub record: Option<PartitionRecord>,
    /// (sequence number, record), ascending.
    pub events: Vec<(i64, EventRecord)>,
}

/// The event log as loaded from a durable store.
#[derive(Debug, Clone, Default)]
pub struct RestoredLog {
    /// When the hub began.
    pub created_at: Option<OffsetDateTime>,
    /// By partition id.
    pub partitions: Vec<(u32, RestoredPartition)>,
}

fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn source_code(s: EventSource) -> u8 {
    match s {
        EventSource::Telemetry => 0,
        EventSource::TwinChangeEvents => 1,
        EventSource::DeviceLifecycleEvents => 2,
        EventSource::DeviceConnectionStateEvents => 3,
    }
}

fn source_of(code: u8) -> EventSource {
    match code {
        1 => EventSource::TwinChangeEvents,
        2 => EventSource::DeviceLifecycleEvents,
        3 => EventSource::DeviceConnectionStateEvents,
        _ => EventSource::Telemetry,
    }
}

fn scope_of(code: u8) -> AuthScope {
    match code {
        1 => AuthScope::Module,
        2 => AuthScope::Hub,
        _ => AuthScope::Device,
    }
}

impl From<&Event> for EventRecord {
    fn from(e: &Event) -> Self {
        let s = &e.message.system;
        EventRecord {
            offset: e.offset,
            enqueued_ms: super::unix_ms(e.enqueued_time),
            source: source_code(e.source),
            device_id: e.origin.device_id.clone(),
            module_id: e.origin.module_id.clone(),
            connection: e.connection.as_ref().map(|c| {
                let scope = match c.auth.scope {
                    AuthScope::Device => 0,
                    AuthScope::Module => 1,
                    AuthScope::Hub => 2,
                };
                let credential = match c.auth.credential {
                    CredentialType::Sas => 0,
                };
                (scope, credential, c.generation_id.clone())
            }),
            body: e.message.body.clone(),
            message_id: s.message_id.as_ref().map(IdRecord::from),
            correlation_id: s.correlation_id.as_ref().map(IdRecord::from),
            user_id: s.user_id.clone(),
            to: s.to.clone(),
            absolute_expiry: s.absolute_expiry,
            content_type: s.content_type.clone(),
            content_encoding: s.content_encoding.clone(),
            ack: s.ack.as_str().to_owned(),
            properties: e
                .message
                .properties
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

impl EventRecord {
    /// The event this record holds, at `sequence_number` of `partition`.
    pub fn into_event(self, partition: u32, sequence_number: i64) -> Event {
        let mut message = Message::new(self.body);
        let s = &mut message.system;
        s.message_id = self.message_id.map(Into::into);
        s.correlation_id = self.correlation_id.map(Into::into);
        s.user_id = self.user_id;
        s.to = self.to;
        s.absolute_expiry = self.absolute_expiry;
        s.content_type = self.content_type;
        s.content_encoding = self.content_encoding;
        s.ack = AckMode::parse(&self.ack).unwrap_or_default();
        message.properties = self.properties.into_iter().collect();
        Event {
            partition,
            sequence_number,
            offset: self.offset,
            enqueued_time: ms_to_time(self.enqueued_ms),
            source: source_of(self.source),
            origin: Identity {
                device_id: self.device_id,
                module_id: self.module_id,
            },
            connection: self
                .connection
                .map(|(scope, _, generation_id)| ConnectionStamp {
                    auth: AuthMethod {
                        scope: scope_of(scope),
                        credential: CredentialType::Sas,
                    },
                    generation_id,
                }),
            message,
        }
    }
}

impl Partition {
    /// The numbering a durable store keeps.
    pub(super) fn record(&self) -> PartitionRecord {
        PartitionRecord {
            next_seq: self.next_seq,
            next_offset: self.next_offset,
            last: self
                .last
                .map(|l| (l.offset, super::unix_ms(l.enqueued_time))),
            first_seq: Some(self.first_seq()),
        }
    }

    /// Rebuilt from a durable store: numbering, events, and the retention deadline of the
    /// oldest event (already past for events that aged out while the emulator was down).
    fn restore(&mut self, r: RestoredPartition, settings: &EventLogSettings, timers: &mut Timers) {
        let id = self.id();
        // Events dropped by retention before the record was written stay gone (their store
        // may still hold them); events after it were all retained then.
        let first = r.record.as_ref().and_then(|rec| rec.first_seq).unwrap_or(0);
        let events: VecDeque<Arc<Event>> = r
            .events
            .into_iter()
            .filter(|(seq, _)| *seq >= first)
            .map(|(seq, e)| Arc::new(e.into_event(id, seq)))
            .collect();
        let last_event = events.back().map(|e| {
            let size = accounted_size(&e.message, &e.origin);
            (e.sequence_number, e.offset, size, e.enqueued_time)
        });
        match r.record {
            Some(rec) => {
                self.next_seq = rec.next_seq;
                self.next_offset = rec.next_offset;
                self.last = rec.last.map(|(offset, ms)| Last {
                    offset,
                    enqueued_time: ms_to_time(ms),
                });
            }
            None => {
                self.next_seq = 0;
                self.next_offset = 0;
                self.last = None;
            }
        }
        // The record is written only when events are dropped (appends write just their event),
        // so events after it carry the numbering on: never behind what is retained.
        if let Some((seq, offset, size, enqueued_time)) = last_event {
            self.next_seq = self.next_seq.max(seq + 1);
            self.next_offset = self.next_offset.max(offset.saturating_add(size));
            if self.last.is_none_or(|l| l.offset < offset) {
                self.last = Some(Last {
                    offset,
                    enqueued_time,
                });
            }
        }
        // Retained events must sit at `next_seq - len ..`: keep the run that ends at the last.
        let contiguous = events
            .iter()
            .rev()
            .zip((0..self.next_seq).rev())
            .take_while(|(e, seq)| e.sequence_number == *seq)
            .count();
        self.events = events;
        while self.events.len() > contiguous {
            self.events.pop_front();
        }
        self.retention_timer = None;
        self.arm_retention(settings, timers);
    }
}

impl EventLog {
    /// From now on, note appended events and moved partitions for [`EventLog::take_changes`].
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(EventChanges::default);
    }

    /// What changed since the last call; `None` when not tracking or nothing changed.
    pub fn take_changes(&mut self) -> Option<EventChanges> {
        let c = self.changes.as_mut()?;
        if c.is_empty() {
            return None;
        }
        Some(std::mem::take(c))
    }

    /// A partition's numbering and first retained sequence number (the keys before it are
    /// gone), for a durable store.
    pub fn partition_record(&self, partition: u32) -> Option<(PartitionRecord, i64)> {
        let p = self.partitions.get(partition as usize)?;
        Some((p.record(), p.first_seq()))
    }

    /// When the hub began, once known.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        self.created_at
    }

    /// An append: its event is written; the partition's numbering only when the append also
    /// dropped events ([`EventLog::note_partition`]), as a restart finds it from the last event.
    pub(super) fn note_appended(&mut self, event: &Arc<Event>) {
        if let Some(c) = &mut self.changes {
            c.appended.push(event.clone());
        }
    }

    pub(super) fn note_partition(&mut self, partition: u32) {
        if let Some(c) = &mut self.changes {
            c.partitions.insert(partition);
        }
    }

    pub(super) fn note_created(&mut self) {
        if let Some(c) = &mut self.changes {
            c.created_at = true;
        }
    }

    /// Rebuilds the log from a durable store. Partitions beyond the configured count (the
    /// count was lowered) are dropped with a warning: their devices now hash elsewhere.
    pub(crate) fn restore(
        &mut self,
        state: RestoredLog,
        settings: &EventLogSettings,
        timers: &mut Timers,
    ) {
        if let Some(t) = state.created_at {
            self.created_at = Some(t);
        }
        for (id, r) in state.partitions {
            match self.partitions.get_mut(id as usize) {
                Some(p) => p.restore(r, settings, timers),
                None => tracing::warn!(
                    partition = id,
                    events = r.events.len(),
                    "stored events of a partition this hub no longer has are not loaded"
                ),
            }
        }
    }
}
