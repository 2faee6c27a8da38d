//! Durable state: the hub kept in one redb file in the data directory, written by group
//! commits, acknowledged only once on disk.
//!
//! # Layout
//!
//! `<data dir>/state.redb`, a redb database (copy-on-write B-trees, ACID transactions):
//! - table `meta`: `format` = the format version (u64, little endian), `ids` = the hub's id
//!   generator (so etags continue rather than repeat), `created_at` = the hub's first moment
//!   (the Event Hubs creation time), `feedback_last_batch` = the last feedback batch id given
//!   out;
//! - table `devices`: device id → one [`DeviceRecord`](crate::hub::persisted::DeviceRecord): registry identity with keys, generation
//!   id, etag and status, twin, modules with their twins, the last C2D sequence number given
//!   out, the telemetry counter and last activity times. Written by registry, twin and
//!   connection changes; message traffic does not rewrite it (see *Activity* below);
//! - table `sequence_numbers`: device id → the last C2D sequence number given out, written by
//!   the enqueue that moved it, so numbers never repeat after a restart although the device
//!   record is not rewritten per message (on load the higher of the two counts);
//! - table `messages`: (device id, sequence number) → one queued C2D message with its delivery
//!   count and expiry time. One key per message, so an operation writes only the messages it
//!   touched (an enqueue, a settlement or a redelivery writes one; a lock writes none) and not
//!   the device's whole queue, and a restart reads the table front to back, attaching each
//!   message to its device by walking both tables in id order;
//! - table `events`: (partition, sequence number of the chunk's last event) → a chunk: the
//!   events of the Event Hubs-compatible log (telemetry and routed events, each with its
//!   offset, enqueued time, sender and message) that one commit appended to the partition, as
//!   a MessagePack array. One B-tree insert per partition and commit, not per event (format 3
//!   had one key per event: the writer's largest cost under telemetry);
//! - table `partitions`: partition → its numbering (next sequence number and offset, the last
//!   event's offset and time), which continues after a restart even when retention dropped
//!   every event, and the first retained sequence number. Written only when events are
//!   dropped: a plain append writes its event alone, and a restart carries the numbering on
//!   from the last event. Retention (age, per-partition count and bytes) and reset trim the
//!   front: the chunks whose last event is before the first retained one are deleted in the
//!   same commit; a chunk that straddles it stays until the rest of it goes, and its dropped
//!   front is not loaded (the record's first retained sequence number);
//! - tables `feedback_pending` (key → a feedback record waiting for its batch window, keys
//!   consecutive in arrival order) and `feedback_batches` (batch id → a released batch with
//!   its delivery count): one key each, so a settlement writes one record, not the whole
//!   feedback queue (format 3 kept the queue in one `meta` record: encoding it for every
//!   completion cost more CPU than the rest of the C2D path together).
//!
//! Records are MessagePack (`hub::persisted`): device records with field names, message and
//! event records as arrays, messages without what their key and the hub's rules give back
//! (sequence number, `to`, absolute expiry). 10,000 devices × 50 queued 64-byte messages take
//! 156 bytes per message in the file and reopen in about 0.9 s in a release build on a loaded
//! 2-core machine (format 1, with whole queues in device records: 657 bytes and 1.16 s);
//! `ready_time_with_10k_devices_by_50_messages` in the tests prints the figures. The CA and
//! certificates stay where they were (`tls`), so `iothub-emulator reset` removes only this
//! file.
//!
//! # Opening
//!
//! - No file: a new one is created, stamped with [`FORMAT_VERSION`].
//! - Format 1 (each device's queue inside its record), format 2 (whole message records,
//!   sequence number, `to` and absolute expiry included) and format 3 (the feedback queue in
//!   one record): migrated in the opening transaction, all or nothing, like any transaction.
//! - A file from a newer emulator, or one without a format stamp: refused
//!   ([`PersistError::NewerFormat`], [`PersistError::Corrupt`]) with what to do. A file that
//!   redb or the decoder cannot read is reported and left as it is, never wiped.
//! - Two emulators on one data directory: redb takes an exclusive lock on the file
//!   (`ConcurrencyMode::ExclusiveWriter`), so the second gets [`PersistError::InUse`].
//! - The hub is rebuilt with [`Hub::restore`]: devices disconnected, locks gone (locked
//!   messages and feedback batches available again), deadlines re-armed from the stored times,
//!   so messages that expired while the emulator was down expire at once, with feedback.
//!
//! # Writing: acknowledged means durable
//!
//! The hub stays sans-IO. Its [`MemoryStore`](crate::hub::MemoryStore) records which devices
//! an operation changed (their records, or only their queues and counters), which of their C2D
//! messages (each queue notes the sequence numbers it added, removed or redelivered) and which
//! feedback records and batches. Right after each operation, still under the hub lock, the driver calls [`Persister::submit`]: the changed records are encoded
//! and queued, numbered in operation order, for the writer thread. The writer takes everything
//! waiting, applies it in one write transaction and commits it with one fsync
//! (`Durability::Immediate`): a group commit, so many concurrent operations share one fsync.
//! Within a commit only the last write of each key is applied, each table opened once.
//! A commit that would hold fewer than `COMMIT_WINDOW_BATCHES` operations first waits
//! `COMMIT_WINDOW` (1 ms) for more, if the commit before it held more than one operation
//! (`write::waits_for_company`): redb's cost per commit (every tree touched copies and
//! checksums its pages, each page is a `pwrite`, then the fsync) dominated once commits were
//! small. The window trades up to 1 ms of acknowledgement latency under concurrent load for
//! fewer, larger commits; a client that sends one operation at a time and awaits each is never
//! made to wait (nobody would share its fsync). History: a 0.5 ms window for every small
//! commit took `durable` D2C 100 devices × 16 in flight from 58–61k to 82–83k acked/s and
//! `d2c-e2e` durable from 37k to 54k events/s; 1 ms only after shared commits is measured in
//! the README (*Durable state vs `--in-memory`*).
//! Adapters await [`Persister::synced`] (through `HubHandle::synced`) before they acknowledge
//! (PUBACK, AMQP disposition, HTTP response): it returns once everything submitted before the
//! call is committed. Operations nobody acknowledges (connection state, lock expiry) are written
//! by the same path without anybody waiting.
//!
//! A failed write (disk full, I/O error) makes every later `synced` fail: the adapters then
//! refuse instead of acknowledging, and the log says to restart. Nothing half-written is
//! visible after a restart: a transaction is all or nothing.
//!
//! A D2C acknowledgement (PUBACK, AMQP disposition, HTTP 204) waits for the event itself: the
//! append's event record is in the batch that `synced` waits for.
//!
//! # Activity: written late on purpose
//!
//! A device's telemetry counter and last activity times (its own and its modules') change
//! with every message, and nothing acknowledged depends on them. They live in the device
//! record, and rewriting that record (keys, twin, modules) per telemetry message cost more
//! than the message. So a device whose only change is activity is written at most once per
//! `ACTIVITY_INTERVAL` (1 s): with a later operation's batch, or, when none comes, by the
//! driver's timer task (it wakes at [`Persister::activity_due_in`]), and at a clean shutdown
//! ([`Persister::flush_activity`]). A kill -9 can lose about a second of activity times and
//! counts, never a message, an event or a registry or twin write.
//!
//! # Not kept (known gaps)
//!
//! - The recent-telemetry inspection view, direct-method invocations and attached Event Hubs
//!   readers (live connections' state; readers keep their own checkpoints).
//! - Events of partitions beyond a lowered `partition_count`: they are not loaded (a warning
//!   says how many), as their devices now hash to other partitions.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use tokio::sync::watch;

use crate::hub::event_log::EventRecord;
use crate::hub::persisted::{Restored, encode, encode_compact};
use crate::hub::{Hub, IdGen};

mod load;
mod write;

use write::Writes;

/// The state file's name in the data directory.
pub const FILE_NAME: &str = "state.redb";

/// The format this emulator writes and reads. Older ones are migrated on open: format 1 kept
/// each device's queue inside its record, format 2 stored each message with the fields its key
/// and the hub's rules give back, format 3 kept the feedback queue in one record.
pub const FORMAT_VERSION: u64 = 4;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const EVENTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("events");
const PARTITIONS: TableDefinition<u32, &[u8]> = TableDefinition::new("partitions");
const SEQUENCE_NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("sequence_numbers");
const FEEDBACK_PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("feedback_pending");
const FEEDBACK_BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("feedback_batches");

/// How often at most a device's activity alone is written.
const ACTIVITY_INTERVAL: Duration = Duration::from_secs(1);

/// Why the state cannot be opened or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// Another emulator holds the file.
    #[error(
        "the data directory {dir} is in use by another iothub-emulator ({FILE_NAME} is locked); stop that one, or start this one with another --data-dir or with --in-memory"
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// Written by a newer emulator.
    #[error(
        "{path} holds state format {found}, written by a newer iothub-emulator (this one reads format {FORMAT_VERSION}); upgrade iothub-emulator, or start empty with `iothub-emulator reset --data-dir {dir}` (keeps the CA), or use another --data-dir"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// The version it holds.
        found: u64,
    },
    /// Unreadable: damaged, or not an emulator state file.
    #[error(
        "{path} is damaged or is not an iothub-emulator state file ({detail}); it was left unchanged: move it away to keep it, or start empty with `iothub-emulator reset --data-dir {dir}` (keeps the CA)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// What could not be read.
        detail: String,
    },
    /// The file or directory cannot be used.
    #[error("cannot use {path}: {detail}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's or redb's message.
        detail: String,
    },
    /// A write failed; nothing since is acknowledged.
    #[error("writing the hub state failed ({0}); restart the emulator")]
    WriteFailed(String),
    /// The store was closed (the emulator is stopping).
    #[error("the hub state is closed")]
    Closed,
}

/// The changes of one operation (or of several, under one hub lock), encoded.
struct Batch {
    seq: u64,
    cleared: bool,
    /// Devices whose stored messages all go before `writes` are written.
    replaced: Vec<String>,
    writes: Writes,
}

enum Job {
    Write(Box<Batch>),
    Close,
}

/// How far the writer got.
#[derive(Debug, Clone, Default)]
struct Progress {
    committed: u64,
    failed: Option<String>,
    closed: bool,
}

/// What was handed to the writer, to leave out what did not change.
#[derive(Debug)]
struct Handed {
    /// Per device, the last C2D sequence number handed to the writer.
    numbering: HashMap<String, u64>,
    /// Devices whose activity changed since their record was last handed over.
    activity: BTreeSet<String>,
    /// When `activity` was last written.
    activity_written: Instant,
    /// The id generator as last handed over.
    ids: Option<IdGen>,
    /// The last feedback batch id as last handed over.
    last_batch: u64,
}

/// The handle to the state file's writer.
pub struct Persister {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    submitted: AtomicU64,
    handed: Mutex<Handed>,
    /// [`ACTIVITY_INTERVAL`], longer in tests that must not see it pass.
    activity_interval: Duration,
    progress: watch::Receiver<Progress>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Persister {
    /// Queues what the last operation(s) changed. Call under the hub lock, right after the
    /// operation, so batches are numbered in operation order.
    ///
    /// Returns true when activity started waiting to be written (see the module's
    /// *Activity*): the caller's timer then wakes at [`Persister::activity_due_in`].
    pub fn submit(&self, hub: &mut Hub) -> bool {
        self.submit_with(hub, false)
    }

    /// Queues every device whose only change since its last write is activity (see the
    /// module's *Activity*), with whatever else changed: at a clean shutdown, before
    /// [`Persister::close`].
    pub fn flush_activity(&self, hub: &mut Hub) {
        self.submit_with(hub, true);
    }

    /// How long until the activity waiting to be written is due (zero: at the next
    /// [`Persister::submit`]); `None` when none waits. A timer that calls `submit` then
    /// writes activity even when no other operation comes.
    pub fn activity_due_in(&self) -> Option<Duration> {
        let handed = guard(&self.handed);
        (!handed.activity.is_empty()).then(|| {
            self.activity_interval
                .saturating_sub(handed.activity_written.elapsed())
        })
    }

    /// A shorter or longer [`ACTIVITY_INTERVAL`], for tests.
    #[cfg(test)]
    pub(crate) fn set_activity_interval(&mut self, interval: Duration) {
        self.activity_interval = interval;
    }

    fn submit_with(&self, hub: &mut Hub, flush_activity: bool) -> bool {
        let changes = hub.take_changes();
        let mut handed = guard(&self.handed);
        let waited = !handed.activity.is_empty();
        let activity_due = waited
            && (flush_activity || handed.activity_written.elapsed() >= self.activity_interval);
        if changes.is_none() && !activity_due {
            return false;
        }
        let changes = changes.unwrap_or_default();
        let handed = &mut *handed;
        if changes.cleared {
            handed.numbering.clear();
            handed.activity.clear();
        }
        let mut w = Writes::default();
        for id in &changes.devices {
            handed.activity.remove(id);
            let record = hub.device_record_without_queue(id);
            let last = record.as_ref().map(|r| r.last_sequence_number);
            // Written with the record, so a stale number of a deleted namesake never counts.
            w.numbering.insert(id.clone(), last);
            match last {
                Some(n) => handed.numbering.insert(id.clone(), n),
                None => handed.numbering.remove(id),
            };
            w.devices.insert(id.clone(), record.map(|r| encode(&r)));
        }
        for (id, seqs) in &changes.messages {
            if !changes.devices.contains(id)
                && let Some(n) = hub.last_sequence_number(id)
                && handed.numbering.get(id) != Some(&n)
            {
                w.numbering.insert(id.clone(), Some(n));
                handed.numbering.insert(id.clone(), n);
            }
            for &seq in seqs {
                let record = hub.message_record(id, seq).map(|r| encode_compact(&r));
                w.messages.insert((id.clone(), seq), record);
            }
        }
        handed.activity.extend(changes.activity);
        if activity_due {
            handed.activity_written = Instant::now();
            for id in std::mem::take(&mut handed.activity) {
                // A device deleted since is deleted by its own change, not here.
                if let Some(r) = hub.device_record_without_queue(&id) {
                    w.devices.insert(id, Some(encode(&r)));
                }
            }
        }
        for &k in &changes.feedback.pending {
            w.feedback_pending.insert(
                k,
                hub.feedback_pending_record(k).map(|r| encode_compact(&r)),
            );
        }
        for &id in &changes.feedback.batches {
            let record = hub.feedback_batch_record(id).map(|r| encode_compact(&r));
            w.feedback_batches.insert(id, record);
        }
        let last_batch = hub.feedback_last_batch();
        if handed.last_batch != last_batch {
            handed.last_batch = last_batch;
            w.feedback_last_batch = Some(last_batch);
        }
        let ids = hub.id_state();
        if handed.ids.as_ref() != Some(&ids) {
            w.ids = Some(encode(&ids));
            handed.ids = Some(ids);
        }
        let log = hub.event_log();
        for e in &changes.events.appended {
            let seq = u64::try_from(e.sequence_number).unwrap_or_default();
            let record = encode_compact(&EventRecord::from(&**e));
            w.events.push((e.partition, seq, record));
        }
        for &p in &changes.events.partitions {
            if let Some((record, first)) = log.partition_record(p) {
                let first = u64::try_from(first).unwrap_or_default();
                w.partitions.insert(p, (encode(&record), first));
            }
        }
        if changes.events.created_at {
            w.created_at = log.created_at().map(|t| encode(&t));
        }
        let started = !waited && !handed.activity.is_empty();
        // A lock, or a message that came and went before this: nothing to write, and no
        // commit (an fsync) for anybody to wait for.
        if !changes.cleared && changes.replaced.is_empty() && w.is_empty() {
            return started;
        }
        let batch = Batch {
            seq: self.submitted.fetch_add(1, Ordering::SeqCst) + 1,
            cleared: changes.cleared,
            replaced: changes.replaced.into_iter().collect(),
            writes: w,
        };
        if let Some(tx) = guard(&self.tx).as_ref() {
            // A send fails only once the writer has stopped; `synced` then reports it.
            let _ = tx.send(Job::Write(Box::new(batch)));
        }
        started
    }

    /// Returns once everything submitted before the call is on disk.
    pub async fn synced(&self) -> Result<(), PersistError> {
        let target = self.submitted.load(Ordering::SeqCst);
        let mut rx = self.progress.clone();
        let seen = rx
            .wait_for(|p| p.committed >= target || p.failed.is_some() || p.closed)
            .await
            .map_err(|_| PersistError::Closed)?;
        if seen.committed >= target {
            return Ok(());
        }
        match &seen.failed {
            Some(e) => Err(PersistError::WriteFailed(e.clone())),
            None => Err(PersistError::Closed),
        }
    }

    /// Writes what is queued, closes the file and releases its lock.
    pub fn close(&self) {
        if let Some(tx) = guard(&self.tx).take() {
            let _ = tx.send(Job::Close);
        }
        if let Some(t) = guard(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.close();
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> PersistError {
    PersistError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn corrupt(dir: &Path, detail: impl std::fmt::Display) -> PersistError {
    PersistError::Corrupt {
        path: dir.join(FILE_NAME),
        dir: dir.to_owned(),
        detail: detail.to_string(),
    }
}

/// Opens redb's file, naming the failure as the user can act on it.
fn open_db(dir: &Path) -> Result<Database, PersistError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let path = dir.join(FILE_NAME);
    Database::create(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            PersistError::InUse {
                dir: dir.to_owned(),
            }
        }
        // redb reports a file that is not a redb database as invalid data.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            io_error(&path, io)
        }
        other => corrupt(dir, other),
    })
}

/// Opens (or creates) the state in `dir`, reads the whole hub, and starts the writer.
pub fn open(dir: &Path) -> Result<(Persister, Restored), PersistError> {
    let db = open_db(dir)?;
    let restored = load::load(&db, dir)?;
    let (done, progress) = watch::channel(Progress::default());
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("iothub-state-writer".into())
        .spawn(move || write::write_loop(db, rx, done))
        .map_err(|e| io_error(dir, e))?;
    Ok((
        Persister {
            tx: Mutex::new(Some(tx)),
            submitted: AtomicU64::new(0),
            handed: Mutex::new(Handed {
                numbering: HashMap::new(),
                activity: BTreeSet::new(),
                activity_written: Instant::now(),
                ids: None,
                last_batch: 0,
            }),
            activity_interval: ACTIVITY_INTERVAL,
            progress,
            thread: Mutex::new(Some(thread)),
        },
        restored,
    ))
}

/// Removes the state in `dir` (not the CA). Refused while an emulator uses it. Returns
/// whether there was a state file.
pub fn reset(dir: &Path) -> Result<bool, PersistError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(false);
    }
    // Opening takes the lock: a running emulator makes this fail with `InUse`. A damaged file
    // is what reset is for, so only the lock matters here.
    match open_db(dir) {
        Ok(db) => drop(db),
        Err(e @ PersistError::InUse { .. }) => return Err(e),
        Err(_) => {}
    }
    std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests;
