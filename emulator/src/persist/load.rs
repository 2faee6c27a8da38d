//! Opening the state: the format stamp, migrations from older formats, and reading every
//! record back into a [`Restored`] hub.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::{
    DEVICES, EVENTS, FEEDBACK_BATCHES, FEEDBACK_PENDING, FILE_NAME, FORMAT_VERSION, MESSAGES, META,
    PARTITIONS, PersistError, SEQUENCE_NUMBERS, corrupt,
};
use crate::hub::IdGen;
use crate::hub::StoredFeedback;
use crate::hub::event_log::{EventRecord, PartitionRecord, RestoredPartition};
use crate::hub::persisted::{
    DeviceRecord, FeedbackBatchRecord, FeedbackEntryRecord, FeedbackRecords, FeedbackState,
    MessageRecord, QueuedRecord, Restored, decode, encode, encode_compact,
};

/// Reads the format stamp (writing it into a new file, migrating an older one) and every
/// record.
pub(super) fn load(db: &Database, dir: &Path) -> Result<Restored, PersistError> {
    let bad = |e: redb::Error| corrupt(dir, e);
    let txn = db.begin_write().map_err(|e| bad(e.into()))?;
    let mut restored = Restored::default();
    {
        let mut meta = txn.open_table(META).map_err(|e| bad(e.into()))?;
        let mut devices = txn.open_table(DEVICES).map_err(|e| bad(e.into()))?;
        let mut messages = txn.open_table(MESSAGES).map_err(|e| bad(e.into()))?;
        let mut pending = txn
            .open_table(FEEDBACK_PENDING)
            .map_err(|e| bad(e.into()))?;
        let mut batches = txn
            .open_table(FEEDBACK_BATCHES)
            .map_err(|e| bad(e.into()))?;
        let numbering = txn
            .open_table(SEQUENCE_NUMBERS)
            .map_err(|e| bad(e.into()))?;
        let stamp = meta
            .get("format")
            .map_err(|e| bad(e.into()))?
            .map(|v| v.value().to_vec());
        match stamp {
            None if devices.is_empty().map_err(|e| bad(e.into()))? => {
                meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| bad(e.into()))?;
            }
            None => return Err(corrupt(dir, "no format version")),
            Some(v) => {
                let found = <[u8; 8]>::try_from(v.as_slice())
                    .map(u64::from_le_bytes)
                    .map_err(|_| corrupt(dir, "unreadable format version"))?;
                if found > FORMAT_VERSION {
                    return Err(PersistError::NewerFormat {
                        path: dir.join(FILE_NAME),
                        dir: dir.to_owned(),
                        found,
                    });
                }
                if !(1..=FORMAT_VERSION).contains(&found) {
                    return Err(corrupt(dir, format!("unknown format version {found}")));
                }
                // Each step brings the file one format further, all in this transaction.
                if found == 1 {
                    migrate_from_1(&mut devices, &mut messages, dir)?;
                }
                if found == 2 {
                    migrate_from_2(&mut messages, dir)?;
                }
                if found <= 3 {
                    migrate_feedback_from_3(&mut meta, &mut pending, &mut batches, dir)?;
                    let mut events = txn.open_table(EVENTS).map_err(|e| bad(e.into()))?;
                    migrate_events_from_3(&mut events, dir)?;
                }
                if found < FORMAT_VERSION {
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| bad(e.into()))?;
                    tracing::info!(dir = %dir.display(), "state migrated from format {found} to {FORMAT_VERSION}");
                }
            }
        }
        restored.devices = read_devices(&devices, &messages, &numbering, dir)?;
        let last_batch = match meta.get("feedback_last_batch").map_err(|e| bad(e.into()))? {
            Some(v) => {
                decode(v.value()).map_err(|e| corrupt(dir, format!("feedback_last_batch: {e}")))?
            }
            None => 0,
        };
        restored.feedback = read_feedback(&pending, &batches, last_batch, dir)?;
        if let Some(v) = meta.get("ids").map_err(|e| bad(e.into()))? {
            let ids: IdGen = decode(v.value()).map_err(|e| corrupt(dir, format!("ids: {e}")))?;
            restored.ids = Some(ids);
        }
        if let Some(v) = meta.get("created_at").map_err(|e| bad(e.into()))? {
            let t = decode(v.value()).map_err(|e| corrupt(dir, format!("created_at: {e}")))?;
            restored.event_log.created_at = Some(t);
        }
        let events = txn.open_table(EVENTS).map_err(|e| bad(e.into()))?;
        let partitions = txn.open_table(PARTITIONS).map_err(|e| bad(e.into()))?;
        restored.event_log.partitions = read_event_log(&partitions, &events, dir)?;
    }
    txn.commit().map_err(|e| bad(e.into()))?;
    Ok(restored)
}

/// Every device record with its queue and C2D numbering. The tables are in device id order,
/// so each message finds its device by walking forward, never by a lookup.
fn read_devices(
    devices: &redb::Table<&str, &[u8]>,
    messages: &redb::Table<(&str, u64), &[u8]>,
    numbering: &redb::Table<&str, u64>,
    dir: &Path,
) -> Result<Vec<DeviceRecord>, PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut out: Vec<DeviceRecord> = Vec::with_capacity(devices.len().map_err(bad)? as usize);
    for item in devices.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let record: DeviceRecord =
            decode(v.value()).map_err(|e| corrupt(dir, format!("device {}: {e}", k.value())))?;
        out.push(record);
    }
    let mut at = 0;
    for item in messages.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let (id, seq) = k.value();
        while out
            .get(at)
            .is_some_and(|d| d.device.device_id.as_str() < id)
        {
            at += 1;
        }
        let Some(device) = out.get_mut(at).filter(|d| d.device.device_id == id) else {
            // A device's messages go in the same transaction as its record: never left over.
            return Err(corrupt(
                dir,
                format!("message {seq} of unknown device {id}"),
            ));
        };
        let m: QueuedRecord = decode(v.value())
            .map_err(|e| corrupt(dir, format!("message {seq} of device {id}: {e}")))?;
        device.queue.push(m.into_message_record(id, seq));
    }
    // The numbering moves on with every enqueue, the record only with registry writes: the
    // higher of the two is the last number given out.
    let mut at = 0;
    for item in numbering.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let id = k.value();
        while out
            .get(at)
            .is_some_and(|d| d.device.device_id.as_str() < id)
        {
            at += 1;
        }
        if let Some(device) = out.get_mut(at).filter(|d| d.device.device_id == id) {
            device.last_sequence_number = device.last_sequence_number.max(v.value());
        }
    }
    Ok(out)
}

/// The feedback queue: pending records by key, released batches by id.
fn read_feedback(
    pending: &redb::Table<u64, &[u8]>,
    batches: &redb::Table<u64, &[u8]>,
    last_batch: u64,
    dir: &Path,
) -> Result<Option<StoredFeedback>, PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut records = Vec::new();
    for item in pending.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let r: FeedbackEntryRecord = decode(v.value())
            .map_err(|e| corrupt(dir, format!("feedback record {}: {e}", k.value())))?;
        records.push((k.value(), r));
    }
    let mut released = Vec::new();
    for item in batches.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let b: FeedbackBatchRecord = decode(v.value())
            .map_err(|e| corrupt(dir, format!("feedback batch {}: {e}", k.value())))?;
        released.push((k.value(), b));
    }
    if records.is_empty() && released.is_empty() && last_batch == 0 {
        return Ok(None);
    }
    let stored = StoredFeedback::from_records(FeedbackRecords {
        pending: records,
        batches: released,
        last_batch,
    });
    stored
        .map(Some)
        .ok_or_else(|| corrupt(dir, "a feedback record's time is not a valid date"))
}

/// Every partition's numbering with its retained events, by partition id.
fn read_event_log(
    partitions: &redb::Table<u32, &[u8]>,
    events: &redb::Table<(u32, u64), &[u8]>,
    dir: &Path,
) -> Result<Vec<(u32, RestoredPartition)>, PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut out: BTreeMap<u32, RestoredPartition> = BTreeMap::new();
    for item in partitions.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let p = k.value();
        let record: PartitionRecord =
            decode(v.value()).map_err(|e| corrupt(dir, format!("partition {p}: {e}")))?;
        out.entry(p).or_default().record = Some(record);
    }
    for item in events.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let (p, last) = k.value();
        let what = || format!("events up to {last} of partition {p}");
        let chunk: Vec<EventRecord> =
            decode(v.value()).map_err(|e| corrupt(dir, format!("{}: {e}", what())))?;
        let last = i64::try_from(last).map_err(|_| corrupt(dir, what()))?;
        let first = i64::try_from(chunk.len())
            .ok()
            .and_then(|n| last.checked_sub(n - 1))
            .ok_or_else(|| corrupt(dir, what()))?;
        out.entry(p)
            .or_default()
            .events
            .extend((first..).zip(chunk));
    }
    Ok(out.into_iter().collect())
}

/// Format 1 kept each device's queue inside its record: move the messages to their own keys.
fn migrate_from_1(
    devices: &mut redb::Table<&str, &[u8]>,
    messages: &mut redb::Table<(&str, u64), &[u8]>,
    dir: &Path,
) -> Result<(), PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut old = Vec::new();
    for item in devices.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let record: DeviceRecord =
            decode(v.value()).map_err(|e| corrupt(dir, format!("device {}: {e}", k.value())))?;
        if !record.queue.is_empty() {
            old.push(record);
        }
    }
    for mut record in old {
        let id = record.device.device_id.clone();
        for m in std::mem::take(&mut record.queue) {
            let seq = m.sequence_number();
            let queued = QueuedRecord::from(m);
            messages
                .insert((id.as_str(), seq), encode_compact(&queued).as_slice())
                .map_err(bad)?;
        }
        devices
            .insert(id.as_str(), encode(&record).as_slice())
            .map_err(bad)?;
    }
    Ok(())
}

/// Format 2 stored each message as a whole [`MessageRecord`]: rewrite them without what the
/// key and the hub's rules give back.
fn migrate_from_2(
    messages: &mut redb::Table<(&str, u64), &[u8]>,
    dir: &Path,
) -> Result<(), PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut rewritten = Vec::new();
    for item in messages.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        let (id, seq) = k.value();
        let m: MessageRecord = decode(v.value())
            .map_err(|e| corrupt(dir, format!("message {seq} of device {id}: {e}")))?;
        rewritten.push((id.to_owned(), seq, encode_compact(&QueuedRecord::from(m))));
    }
    for (id, seq, bytes) in rewritten {
        messages
            .insert((id.as_str(), seq), bytes.as_slice())
            .map_err(bad)?;
    }
    Ok(())
}

/// Format 3 stored each event under (partition, its sequence number): each becomes a chunk of
/// one, keyed by its last (and only) event.
fn migrate_events_from_3(
    events: &mut redb::Table<(u32, u64), &[u8]>,
    dir: &Path,
) -> Result<(), PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let mut rewritten = Vec::new();
    for item in events.iter().map_err(bad)? {
        let (k, v) = item.map_err(bad)?;
        rewritten.push((k.value(), super::write::event_chunk(&[v.value().to_vec()])));
    }
    for (key, chunk) in rewritten {
        events.insert(key, chunk.as_slice()).map_err(bad)?;
    }
    Ok(())
}

/// Formats 1 to 3 kept the whole feedback queue in one `meta` record, rewritten by every
/// operation that touched it: give each pending record and batch its own key.
fn migrate_feedback_from_3(
    meta: &mut redb::Table<&str, &[u8]>,
    pending: &mut redb::Table<u64, &[u8]>,
    batches: &mut redb::Table<u64, &[u8]>,
    dir: &Path,
) -> Result<(), PersistError> {
    let bad = |e: redb::StorageError| corrupt(dir, e);
    let Some(old) = meta.remove("feedback").map_err(bad)? else {
        return Ok(());
    };
    let state: FeedbackState =
        decode(old.value()).map_err(|e| corrupt(dir, format!("feedback: {e}")))?;
    drop(old);
    let FeedbackRecords {
        pending: records,
        batches: released,
        last_batch,
    } = StoredFeedback::from(state).into_records();
    meta.insert("feedback_last_batch", encode(&last_batch).as_slice())
        .map_err(bad)?;
    for (key, r) in records {
        pending
            .insert(key, encode_compact(&r).as_slice())
            .map_err(bad)?;
    }
    for (id, b) in released {
        batches
            .insert(id, encode_compact(&b).as_slice())
            .map_err(bad)?;
    }
    Ok(())
}
