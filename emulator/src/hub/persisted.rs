//! What a durable store keeps of the hub, as plain records, and how the hub is rebuilt from
//! them. Pure data and conversions: the files, transactions and fsyncs are in
//! `crate::persist`.
//!
//! One [`DeviceRecord`] per device holds everything that lives in its [`DeviceEntry`] and
//! must survive a restart: the registry identity (keys, generation id, etag, status), the
//! twin, the modules with their twins, the last C2D sequence number and the telemetry
//! counter. Its queued C2D messages are [`QueuedRecord`]s of their own, and the feedback queue
//! is a [`FeedbackBatchRecord`] per released batch and a record per pending entry, so that an
//! operation's [`Changes`] name only what it touched. Deliberately left out:
//! - locks: they belong to connections, which die with the process; a locked message comes
//!   back available, and its delivery count is what the last release left;
//! - timer ids: deadlines are re-armed from the stored times by [`Hub::restore`];
//! - the recent-telemetry inspection view (`DeviceEntry::d2c`): it is a debugging aid, and
//!   rewriting up to `d2c_retention` messages per telemetry message would cost more than the
//!   message itself.
//!
//! Records are MessagePack with field names (`rmp-serde`'s named encoding): compact, fast,
//! able to carry twins' arbitrary JSON, and tolerant of added optional fields, which is
//! what lets the format evolve without a migration for additive changes.

use std::collections::{BTreeMap, BTreeSet};

use iothub_protocol::registry::{ConnectionState, Device};
use iothub_protocol::{AckMode, FeedbackBatch, FeedbackRecord, FeedbackStatus, Message, MessageId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::c2d::StoredMessage;
use super::event_log::{EventChanges, RestoredLog};
use super::feedback::{FeedbackChanges, StoredFeedback};
use super::store::{DeviceEntry, MemoryStore, Store};
use super::twin::TwinState;
use super::{C2dQueue, FeedbackQueue, Hub, IdGen, ModuleEntry};

/// A record that could not be read back: the file is damaged or from another program.
#[derive(Debug, thiserror::Error)]
#[error("undecodable record: {0}")]
pub struct DecodeError(#[from] rmp_serde::decode::Error);

/// Everything kept about one device.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The registry identity, keys included.
    pub device: Device,
    /// Its twin.
    pub twin: TwinState,
    /// Its modules with their twins.
    pub modules: Vec<ModuleEntry>,
    /// The last C2D sequence number given out.
    pub last_sequence_number: u64,
    /// Pending C2D messages in sequence order. Stored separately, one record per message (see
    /// `crate::persist`), so written records leave it empty; the loader fills it in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<MessageRecord>,
    /// Telemetry received so far.
    pub d2c_count: u64,
}

/// A pending C2D message. Written with [`encode_compact`]: a field added later goes last,
/// with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
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
    sequence_number: Option<u64>,
    enqueued_time: Option<OffsetDateTime>,
    properties: Vec<(String, String)>,
    delivery_count: u32,
    expires_at: OffsetDateTime,
}

impl MessageRecord {
    /// The sequence number the hub gave it.
    pub fn sequence_number(&self) -> u64 {
        self.sequence_number.unwrap_or_default()
    }
}

/// A pending C2D message as stored under its own key (device id, sequence number), written
/// with [`encode_compact`] (a field added later goes last, with `#[serde(default)]`). Leaves
/// out what the key and the hub's rules give back: the sequence number, `to` (always the
/// device's devicebound address) and the absolute expiry (always the expiry time), which
/// were a third of a [`MessageRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecord {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    message_id: Option<IdRecord>,
    correlation_id: Option<IdRecord>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    ack: String,
    enqueued_time: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
    delivery_count: u32,
    properties: Vec<(String, String)>,
}

impl From<MessageRecord> for QueuedRecord {
    fn from(r: MessageRecord) -> Self {
        QueuedRecord {
            body: r.body,
            message_id: r.message_id,
            correlation_id: r.correlation_id,
            user_id: r.user_id,
            content_type: r.content_type,
            content_encoding: r.content_encoding,
            ack: r.ack,
            enqueued_time: r.enqueued_time,
            expires_at: r.expires_at,
            delivery_count: r.delivery_count,
            properties: r.properties,
        }
    }
}

impl QueuedRecord {
    /// The full record of the message at `seq` in `device_id`'s queue.
    pub fn into_message_record(self, device_id: &str, seq: u64) -> MessageRecord {
        MessageRecord {
            body: self.body,
            message_id: self.message_id,
            correlation_id: self.correlation_id,
            user_id: self.user_id,
            to: Some(super::c2d_ops::devicebound_address(device_id)),
            absolute_expiry: Some(self.expires_at),
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            ack: self.ack,
            sequence_number: Some(seq),
            enqueued_time: self.enqueued_time,
            properties: self.properties,
            delivery_count: self.delivery_count,
            expires_at: self.expires_at,
        }
    }
}

/// A message id or correlation id with its AMQP type (also in event records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum IdRecord {
    String(String),
    Uuid(u128),
    Ulong(u64),
    Binary(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl From<&MessageId> for IdRecord {
    fn from(id: &MessageId) -> Self {
        match id {
            MessageId::String(s) => IdRecord::String(s.clone()),
            MessageId::Uuid(u) => IdRecord::Uuid(u.as_u128()),
            MessageId::Ulong(n) => IdRecord::Ulong(*n),
            MessageId::Binary(b) => IdRecord::Binary(b.clone()),
        }
    }
}

impl From<IdRecord> for MessageId {
    fn from(id: IdRecord) -> Self {
        match id {
            IdRecord::String(s) => MessageId::String(s),
            IdRecord::Uuid(u) => MessageId::Uuid(Uuid::from_u128(u)),
            IdRecord::Ulong(n) => MessageId::Ulong(n),
            IdRecord::Binary(b) => MessageId::Binary(b),
        }
    }
}

impl From<StoredMessage> for MessageRecord {
    fn from(m: StoredMessage) -> Self {
        let s = m.message.system;
        MessageRecord {
            body: m.message.body,
            message_id: s.message_id.as_ref().map(IdRecord::from),
            correlation_id: s.correlation_id.as_ref().map(IdRecord::from),
            user_id: s.user_id,
            to: s.to,
            absolute_expiry: s.absolute_expiry,
            content_type: s.content_type,
            content_encoding: s.content_encoding,
            ack: s.ack.as_str().to_owned(),
            sequence_number: s.sequence_number,
            enqueued_time: s.enqueued_time,
            properties: m
                .message
                .properties
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            delivery_count: m.delivery_count,
            expires_at: m.expires_at,
        }
    }
}

impl From<MessageRecord> for StoredMessage {
    fn from(r: MessageRecord) -> Self {
        let mut message = Message::new(r.body);
        let s = &mut message.system;
        s.message_id = r.message_id.map(MessageId::from);
        s.correlation_id = r.correlation_id.map(MessageId::from);
        s.user_id = r.user_id;
        s.to = r.to;
        s.absolute_expiry = r.absolute_expiry;
        s.content_type = r.content_type;
        s.content_encoding = r.content_encoding;
        s.ack = AckMode::parse(&r.ack).unwrap_or_default();
        s.sequence_number = r.sequence_number;
        s.enqueued_time = r.enqueued_time;
        message.properties = r.properties.into_iter().collect();
        StoredMessage {
            message,
            delivery_count: r.delivery_count,
            expires_at: r.expires_at,
        }
    }
}

/// The whole feedback queue as one record: how format 3 stored it (read only to migrate),
/// and a comparable snapshot for tests.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FeedbackState {
    pending: Vec<FeedbackRecord>,
    batches: Vec<BatchRecord>,
    last_batch: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct BatchRecord {
    id: u64,
    enqueued_time: OffsetDateTime,
    user_id: String,
    records: Vec<FeedbackRecord>,
    delivery_count: u32,
}

impl From<StoredFeedback> for FeedbackState {
    fn from(f: StoredFeedback) -> Self {
        FeedbackState {
            pending: f.pending,
            batches: f
                .batches
                .into_iter()
                .map(|(id, b, delivery_count)| BatchRecord {
                    id,
                    enqueued_time: b.enqueued_time,
                    user_id: b.user_id,
                    records: b.records,
                    delivery_count,
                })
                .collect(),
            last_batch: f.last_batch,
        }
    }
}

impl From<FeedbackState> for StoredFeedback {
    fn from(f: FeedbackState) -> Self {
        StoredFeedback {
            pending: f.pending,
            first_pending: 0,
            batches: f
                .batches
                .into_iter()
                .map(|b| {
                    let batch = FeedbackBatch {
                        enqueued_time: b.enqueued_time,
                        user_id: b.user_id,
                        records: b.records,
                    };
                    (b.id, batch, b.delivery_count)
                })
                .collect(),
            last_batch: f.last_batch,
        }
    }
}

/// A feedback record as stored (with [`encode_compact`]): the wire form's formatted time is
/// seconds and nanoseconds, and its description (always the status) is left out. Encoding the
/// wire form's date string was most of a C2D completion's encoding cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackEntryRecord {
    original_message_id: String,
    at_seconds: i64,
    at_nanos: u32,
    status: FeedbackStatus,
    device_id: String,
    device_generation_id: String,
}

impl From<&FeedbackRecord> for FeedbackEntryRecord {
    fn from(r: &FeedbackRecord) -> Self {
        FeedbackEntryRecord {
            original_message_id: r.original_message_id.clone(),
            at_seconds: r.enqueued_time_utc.unix_timestamp(),
            at_nanos: r.enqueued_time_utc.nanosecond(),
            status: r.status_code,
            device_id: r.device_id.clone(),
            device_generation_id: r.device_generation_id.clone(),
        }
    }
}

impl FeedbackEntryRecord {
    /// The record; `None` if its time is not a valid date.
    pub fn into_record(self) -> Option<FeedbackRecord> {
        let at = OffsetDateTime::from_unix_timestamp(self.at_seconds)
            .ok()?
            .replace_nanosecond(self.at_nanos)
            .ok()?;
        Some(FeedbackRecord::new(
            self.original_message_id,
            self.status,
            at,
            self.device_id,
            self.device_generation_id,
        ))
    }
}

/// A released feedback batch as stored under its id (with [`encode_compact`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackBatchRecord {
    enqueued_time: OffsetDateTime,
    user_id: String,
    records: Vec<FeedbackEntryRecord>,
    delivery_count: u32,
}

impl FeedbackBatchRecord {
    fn new(batch: &FeedbackBatch, delivery_count: u32) -> Self {
        FeedbackBatchRecord {
            enqueued_time: batch.enqueued_time,
            user_id: batch.user_id.clone(),
            records: batch.records.iter().map(Into::into).collect(),
            delivery_count,
        }
    }

    /// The batch and its delivery count; `None` if a record's time is not a valid date.
    pub fn into_batch(self) -> Option<(FeedbackBatch, u32)> {
        let records = self
            .records
            .into_iter()
            .map(FeedbackEntryRecord::into_record)
            .collect::<Option<_>>()?;
        let batch = FeedbackBatch {
            enqueued_time: self.enqueued_time,
            user_id: self.user_id,
            records,
        };
        Some((batch, self.delivery_count))
    }
}

/// The feedback queue as stored key by key.
#[derive(Debug, Default)]
pub struct FeedbackRecords {
    /// Pending records by key, ascending and consecutive.
    pub pending: Vec<(u64, FeedbackEntryRecord)>,
    /// Released batches by id.
    pub batches: Vec<(u64, FeedbackBatchRecord)>,
    /// The last batch id given out (at least the highest in `batches`).
    pub last_batch: u64,
}

impl StoredFeedback {
    /// Splits a whole-queue record into what is stored key by key.
    pub fn into_records(self) -> FeedbackRecords {
        let first = self.first_pending;
        let pending = (first..)
            .zip(self.pending.iter().map(FeedbackEntryRecord::from))
            .collect();
        let batches = self
            .batches
            .iter()
            .map(|(id, b, delivery_count)| (*id, FeedbackBatchRecord::new(b, *delivery_count)))
            .collect();
        FeedbackRecords {
            pending,
            batches,
            last_batch: self.last_batch,
        }
    }

    /// The queue from its stored records: pending records by key (consecutive, as the queue
    /// writes them), batches by id.
    /// `None` if a record's time is not a valid date.
    pub fn from_records(records: FeedbackRecords) -> Option<StoredFeedback> {
        let FeedbackRecords {
            pending,
            batches,
            last_batch,
        } = records;
        let first_pending = pending.first().map_or(0, |(k, _)| *k);
        let highest = batches.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let last_batch = last_batch.max(highest);
        Some(StoredFeedback {
            pending: pending
                .into_iter()
                .map(|(_, r)| r.into_record())
                .collect::<Option<_>>()?,
            first_pending,
            batches: batches
                .into_iter()
                .map(|(id, r)| {
                    let (batch, count) = r.into_batch()?;
                    Some((id, batch, count))
                })
                .collect::<Option<_>>()?,
            last_batch,
        })
    }
}

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Plain data into a Vec: the encoder fails only on maps with non-string keys, which these
    // records do not have; an empty record would be caught on load as undecodable.
    rmp_serde::to_vec_named(record).unwrap_or_default()
}

/// Encodes a record as a MessagePack array, without field names: for C2D messages, which are
/// many and small, so names would be a third of each record and of the time to decode it.
/// [`decode`] reads both forms; a field added later must go last, with `#[serde(default)]`.
pub fn encode_compact<T: Serialize>(record: &T) -> Vec<u8> {
    rmp_serde::to_vec(record).unwrap_or_default()
}

/// Decodes a record.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// What an operation changed since the last [`Hub::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Everything was removed first (a reset).
    pub cleared: bool,
    /// Devices written or removed (their records, not their queues).
    pub devices: BTreeSet<String>,
    /// Devices not in `devices` whose [`RuntimeEntry`](super::store::RuntimeEntry) parts
    /// changed: their queues' messages are listed in `messages`; their counters and activity
    /// times may be written later (`crate::persist` says when).
    pub runtime: BTreeSet<String>,
    /// Devices of `runtime` whose telemetry counter or last activity times (their own or a
    /// module's) changed: nothing acknowledged depends on these, so a durable store may write
    /// them late.
    pub activity: BTreeSet<String>,
    /// Devices created, replaced or removed: every stored message of theirs goes first, then
    /// their current messages (listed in `messages`) are written.
    pub replaced: BTreeSet<String>,
    /// Per device, the C2D messages added, removed or redelivered, by sequence number: each is
    /// written if still queued, deleted otherwise.
    pub messages: BTreeMap<String, Vec<u64>>,
    /// Feedback records and batches added, removed or redelivered.
    pub feedback: FeedbackChanges,
    /// Events appended and partitions trimmed or renumbered.
    pub events: EventChanges,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.cleared
            && self.feedback.is_empty()
            && self.devices.is_empty()
            && self.runtime.is_empty()
            && self.events.is_empty()
    }
}

/// A whole hub as loaded from a durable store.
#[derive(Debug, Default)]
pub struct Restored {
    /// Every device.
    pub devices: Vec<DeviceRecord>,
    /// The feedback queue.
    pub feedback: Option<StoredFeedback>,
    /// The id generator, so etags continue instead of repeating.
    pub ids: Option<IdGen>,
    /// The event log's retained events and numbering.
    pub event_log: RestoredLog,
}

impl<S: Store> Hub<S> {
    /// The device's durable record with its whole queue, `None` if it does not exist.
    pub fn device_record(&self, device_id: &str) -> Option<DeviceRecord> {
        let mut r = self.device_record_without_queue(device_id)?;
        r.queue = self
            .store
            .get(device_id)?
            .queue
            .stored()
            .into_iter()
            .map(Into::into)
            .collect();
        Some(r)
    }

    /// The device's durable record without its queue (stored message by message, see
    /// [`Hub::message_record`]); `None` if it does not exist (its record is deleted).
    pub fn device_record_without_queue(&self, device_id: &str) -> Option<DeviceRecord> {
        let e = self.store.get(device_id)?;
        Some(DeviceRecord {
            device: e.device.clone(),
            twin: e.twin.clone(),
            modules: e
                .modules
                .values()
                .map(|m| ModuleEntry {
                    module: m.module.clone(),
                    twin: m.twin.clone(),
                })
                .collect(),
            last_sequence_number: e.queue.last_sequence_number(),
            queue: Vec::new(),
            d2c_count: e.d2c_count,
        })
    }

    /// The last C2D sequence number given out to the device; `None` if it does not exist.
    pub fn last_sequence_number(&self, device_id: &str) -> Option<u64> {
        Some(self.store.get(device_id)?.queue.last_sequence_number())
    }

    /// A queued C2D message's durable record; `None` once it left the queue (its record is
    /// deleted).
    pub fn message_record(&self, device_id: &str, seq: u64) -> Option<QueuedRecord> {
        let m = self.store.get(device_id)?.queue.stored_message(seq)?;
        Some(MessageRecord::from(m).into())
    }

    /// The whole feedback queue as one comparable record.
    pub fn feedback_record(&self) -> FeedbackState {
        self.store.feedback().stored().into()
    }

    /// The pending feedback record stored under `key`; `None` if its key is to be deleted.
    pub fn feedback_pending_record(&self, key: u64) -> Option<FeedbackEntryRecord> {
        self.store.feedback().pending_record(key).map(Into::into)
    }

    /// The last feedback batch id given out.
    pub fn feedback_last_batch(&self) -> u64 {
        self.store.feedback().last_batch()
    }

    /// The released feedback batch `id`'s record; `None` once it is gone.
    pub fn feedback_batch_record(&self, id: u64) -> Option<FeedbackBatchRecord> {
        let (b, delivery_count) = self.store.feedback().batch_record(id)?;
        Some(FeedbackBatchRecord::new(b, delivery_count))
    }

    /// The id generator's state.
    pub fn id_state(&self) -> IdGen {
        self.ids.clone()
    }

    /// Rebuilds the hub from a durable store's records, at `now`: every device disconnected,
    /// every lock gone (messages and feedback batches available again), every deadline
    /// re-armed from the stored times, so what expired while the emulator was down expires at
    /// the first deadline check.
    pub fn restore(&mut self, state: Restored, now: OffsetDateTime) {
        for r in state.devices {
            let mut device = r.device;
            device.connection_state = ConnectionState::Disconnected;
            let id = device.device_id.clone();
            let messages = r.queue.into_iter().map(Into::into).collect();
            let queue = C2dQueue::restored(&id, r.last_sequence_number, messages, &mut self.timers);
            let modules: BTreeMap<String, ModuleEntry> = r
                .modules
                .into_iter()
                .map(|mut m| {
                    m.module.connection_state = ConnectionState::Disconnected;
                    (m.module.module_id.clone(), m)
                })
                .collect();
            let mut entry = DeviceEntry::created(device, now);
            entry.queue = queue;
            entry.twin = r.twin;
            entry.modules = modules;
            entry.d2c_count = r.d2c_count;
            self.store.insert(entry);
        }
        if let Some(f) = state.feedback {
            *self.store.feedback_mut() =
                FeedbackQueue::restored(f, now, &self.settings, &mut self.timers);
        }
        if let Some(ids) = state.ids {
            self.ids = ids;
        }
        self.event_log
            .restore(state.event_log, &self.settings.event_log, &mut self.timers);
    }
}

impl Hub<MemoryStore> {
    /// From now on, record which devices and whether the feedback queue each operation
    /// changes, for [`Hub::take_changes`].
    pub fn track_changes(&mut self) {
        self.store.track_changes();
        self.event_log.track_changes();
    }

    /// What changed since the last call; `None` when not tracking or nothing changed.
    pub fn take_changes(&mut self) -> Option<Changes> {
        let events = self.event_log.take_changes();
        let mut changes = self.store.take_changes();
        if let Some(events) = events {
            changes.get_or_insert_with(Changes::default).events = events;
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use iothub_protocol::Message;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn a_message_round_trips_through_its_record() {
        let mut m = Message::new(vec![0u8, 255, 7]);
        m.system.message_id = Some(MessageId::Uuid(Uuid::from_u128(42)));
        m.system.correlation_id = Some(MessageId::Binary(vec![1, 2]));
        m.system.ack = AckMode::Full;
        m.system.sequence_number = Some(9);
        m.system.enqueued_time = Some(t(1));
        m.properties.insert("k", "v");
        let stored = StoredMessage {
            message: m,
            delivery_count: 3,
            expires_at: t(100),
        };
        let record = MessageRecord::from(stored.clone());
        // Compact as written now, named as format 1 wrote it inside device records.
        let compact = encode_compact(&record);
        let named = encode(&record);
        assert!(compact.len() < named.len());
        for bytes in [compact, named] {
            let back: MessageRecord = decode(&bytes).unwrap();
            assert_eq!(StoredMessage::from(back), stored);
        }
    }

    /// What a queued record leaves out comes back from the key and the hub's rules.
    #[test]
    fn a_queued_message_round_trips_through_its_compact_record() {
        let mut hub = Hub::new(HubSettings::default(), 1);
        hub.create_device(Device::new("d1"), t(0)).unwrap();
        let mut m = Message::new(vec![1u8, 2]);
        m.system.message_id = Some(MessageId::String("m".into()));
        m.system.ack = AckMode::Positive;
        m.properties.insert("k", "v");
        hub.enqueue_c2d("d1", m, t(1)).unwrap();
        let full = hub.device_record("d1").unwrap().queue.remove(0);
        let queued = hub.message_record("d1", 1).unwrap();
        let bytes = encode_compact(&queued);
        assert!(
            bytes.len() + 40 < encode_compact(&full).len(),
            "{}",
            bytes.len()
        );
        let back: QueuedRecord = decode(&bytes).unwrap();
        assert_eq!(back.into_message_record("d1", 1), full);
    }

    /// A stored feedback entry gives back the record exactly, to the nanosecond, and is smaller
    /// than the wire form.
    #[test]
    fn a_feedback_record_round_trips_through_its_entry() {
        let at = t(5).replace_nanosecond(123_456_789).unwrap();
        for status in [
            FeedbackStatus::Success,
            FeedbackStatus::Expired,
            FeedbackStatus::Purged,
        ] {
            let r = FeedbackRecord::new("m-1", status, at, "d1", "6372");
            let bytes = encode_compact(&FeedbackEntryRecord::from(&r));
            assert!(bytes.len() < encode(&r).len());
            let back: FeedbackEntryRecord = decode(&bytes).unwrap();
            assert_eq!(back.into_record(), Some(r));
        }
    }

    #[test]
    fn garbage_is_reported_not_decoded() {
        assert!(decode::<DeviceRecord>(b"\xc1garbage").is_err());
    }

    #[test]
    fn changes_name_the_devices_an_operation_touched() {
        let mut hub = Hub::new(HubSettings::default(), 1);
        hub.track_changes();
        hub.create_device(Device::new("a"), t(0)).unwrap();
        hub.create_device(Device::new("b"), t(0)).unwrap();
        let c = hub.take_changes().unwrap();
        assert_eq!(c.devices.len(), 2);
        assert!(hub.take_changes().is_none());
        hub.enqueue_c2d("a", Message::new("x"), t(1)).unwrap();
        let c = hub.take_changes().unwrap();
        assert!(
            c.devices.is_empty(),
            "a message does not rewrite the device"
        );
        assert_eq!(c.runtime.iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(c.messages["a"], [1]);
        assert!(c.activity.is_empty());
        hub.send_telemetry(&crate::hub::Origin::device("b"), Message::new("t"), t(2))
            .unwrap();
        let c = hub.take_changes().unwrap();
        assert!(c.devices.is_empty());
        assert_eq!(c.activity.iter().collect::<Vec<_>>(), ["b"]);
        hub.update_twin(
            &crate::hub::Identity::device("b"),
            &iothub_protocol::twin::TwinWrite::from_json(&serde_json::json!({"tags": {"x": 1}}))
                .unwrap(),
            None,
            t(3),
        )
        .unwrap();
        let c = hub.take_changes().unwrap();
        assert_eq!(c.devices.iter().collect::<Vec<_>>(), ["b"]);
    }

    /// A feedback record or batch is noted by its key, and a lock is not stored.
    #[test]
    fn changes_name_the_feedback_records_an_operation_touched() {
        let settings = HubSettings {
            feedback_batch_size: 2,
            ..HubSettings::default()
        };
        let mut hub = Hub::new(settings, 1);
        hub.track_changes();
        hub.create_device(Device::new("a"), t(0)).unwrap();
        for _ in 0..3 {
            let mut m = Message::new("x");
            m.system.ack = AckMode::Full;
            hub.enqueue_c2d("a", m, t(0)).unwrap();
        }
        hub.take_changes();
        let m = hub.receive_c2d("a", t(1)).unwrap().unwrap();
        hub.complete_c2d("a", &m.system.lock_token.unwrap(), t(1))
            .unwrap();
        let c = hub.take_changes().unwrap();
        assert_eq!(c.feedback.pending, [0]);
        assert!(c.feedback.batches.is_empty());
        assert!(hub.feedback_pending_record(0).is_some());
        let m = hub.receive_c2d("a", t(2)).unwrap().unwrap();
        hub.complete_c2d("a", &m.system.lock_token.unwrap(), t(2))
            .unwrap();
        let c = hub.take_changes().unwrap();
        // The second record fills a batch: both pending keys go, batch 1 comes.
        assert_eq!(c.feedback.pending, [0, 1]);
        assert_eq!(c.feedback.batches, [1]);
        assert!(hub.feedback_pending_record(0).is_none());
        assert_eq!(
            hub.feedback_batch_record(1)
                .unwrap()
                .into_batch()
                .unwrap()
                .0
                .records
                .len(),
            2
        );
        let d = hub.receive_feedback(t(3)).unwrap();
        assert!(hub.take_changes().is_none_or(|c| c.feedback.is_empty()));
        hub.complete_feedback(&d.lock_token, t(3)).unwrap();
        let c = hub.take_changes().unwrap();
        assert_eq!(c.feedback.batches, [1]);
        assert!(hub.feedback_batch_record(1).is_none());
    }

    /// Changes name the C2D messages an operation touched, so a durable store writes those
    /// and not the whole queue.
    #[test]
    fn changes_name_the_messages_an_operation_touched() {
        let mut hub = Hub::new(HubSettings::default(), 1);
        hub.track_changes();
        hub.create_device(Device::new("a"), t(0)).unwrap();
        for _ in 0..3 {
            hub.enqueue_c2d("a", Message::new("x"), t(0)).unwrap();
        }
        let c = hub.take_changes().unwrap();
        assert!(
            c.replaced.contains("a"),
            "a new device replaces whatever was stored"
        );
        assert_eq!(c.messages["a"], [1, 2, 3]);
        let m = hub.receive_c2d("a", t(1)).unwrap().unwrap();
        let token = m.system.lock_token.unwrap();
        let c = hub.take_changes();
        assert!(
            c.is_none_or(|c| c.messages.is_empty()),
            "a lock is not stored"
        );
        hub.abandon_c2d("a", &token, t(2)).unwrap();
        let c = hub.take_changes().unwrap();
        assert_eq!(c.messages["a"], [1], "the delivery count changed");
        assert!(c.replaced.is_empty());
        let m = hub.receive_c2d("a", t(3)).unwrap().unwrap();
        hub.complete_c2d("a", &m.system.lock_token.unwrap(), t(3))
            .unwrap();
        assert_eq!(hub.take_changes().unwrap().messages["a"], [1]);
        hub.purge_c2d("a", t(4)).unwrap();
        assert_eq!(hub.take_changes().unwrap().messages["a"], [2, 3]);
        hub.delete_device("a", None, t(5)).unwrap();
        let c = hub.take_changes().unwrap();
        assert!(c.replaced.contains("a") && c.devices.contains("a"));
    }
}
