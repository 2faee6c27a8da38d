//! The writer thread: group commits of coalesced changes.

use std::collections::BTreeMap;
use std::sync::mpsc;

use redb::{Database, Durability, TableDefinition, WriteTransaction};
use tokio::sync::watch;

use crate::hub::persisted::encode;

use super::{
    Batch, DEVICES, EVENTS, FEEDBACK_BATCHES, FEEDBACK_PENDING, Job, MESSAGES, META, PARTITIONS,
    Progress, SEQUENCE_NUMBERS,
};

/// A commit holding fewer batches than this waits [`COMMIT_WINDOW`] for more first.
const COMMIT_WINDOW_BATCHES: usize = 64;
/// How long a small commit waits for company, when the last one had company.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether a commit that could take `waiting` batches now should first wait the window, when
/// the one before it held `last` batches. Operations that came one at a time (a single client
/// sending and awaiting each acknowledgement) are committed at once: nobody else would share
/// the fsync. Once commits hold several operations, the writer is the bottleneck of concurrent
/// clients, and a small commit waits for more, so that a commit's fixed cost (redb copies and
/// checksums every page a commit touches, then the fsync) is shared by more operations.
fn waits_for_company(waiting: usize, last: usize) -> bool {
    last > 1 && waiting < COMMIT_WINDOW_BATCHES
}

/// The writer thread: everything waiting goes into one transaction with one fsync.
pub(super) fn write_loop(db: Database, rx: mpsc::Receiver<Job>, done: watch::Sender<Progress>) {
    let mut closing = false;
    // How many batches the previous commit held.
    let mut last_commit = 0;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        let mut batches = Vec::new();
        for job in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match job {
                Job::Write(b) => batches.push(*b),
                Job::Close => closing = true,
            }
        }
        if !closing && waits_for_company(batches.len(), last_commit) {
            std::thread::sleep(COMMIT_WINDOW);
            for job in std::iter::from_fn(|| rx.try_recv().ok()) {
                match job {
                    Job::Write(b) => batches.push(*b),
                    Job::Close => closing = true,
                }
            }
        }
        last_commit = batches.len();
        let Some(last_seq) = batches.last().map(|b| b.seq) else {
            continue;
        };
        if done.borrow().failed.is_some() {
            continue;
        }
        match write(&db, batches) {
            Ok(()) => done.send_modify(|p| p.committed = last_seq),
            Err(e) => {
                tracing::error!(error = %e, "writing the hub state failed; nothing is acknowledged any more, restart the emulator");
                done.send_modify(|p| p.failed = Some(e.to_string()));
            }
        }
    }
    drop(db);
    done.send_modify(|p| p.closed = true);
}

/// Keys to write, each with its last value (`None`: delete): what one operation changed, and
/// merged in the writer, what a whole commit changes. So a key written by many operations of
/// one commit (a device's numbering, a message enqueued and completed) costs one B-tree
/// update, and each table is opened once per commit.
#[derive(Default)]
pub(super) struct Writes {
    pub devices: BTreeMap<String, Option<Vec<u8>>>,
    /// The last C2D sequence number given out, per device.
    pub numbering: BTreeMap<String, Option<u64>>,
    pub messages: BTreeMap<(String, u64), Option<Vec<u8>>>,
    /// Pending feedback records by key.
    pub feedback_pending: BTreeMap<u64, Option<Vec<u8>>>,
    /// Released feedback batches by id.
    pub feedback_batches: BTreeMap<u64, Option<Vec<u8>>>,
    /// The last feedback batch id given out, when it moved.
    pub feedback_last_batch: Option<u64>,
    /// The id generator, when it moved.
    pub ids: Option<Vec<u8>>,
    pub created_at: Option<Vec<u8>>,
    /// (partition, sequence number, record) of each appended event.
    pub events: Vec<(u32, u64, Vec<u8>)>,
    /// Per partition: its last numbering record and the first sequence number it retains
    /// (retention only moves it forward, so trimming once after the inserts is the same as
    /// trimming after each).
    pub partitions: BTreeMap<u32, (Vec<u8>, u64)>,
}

impl Writes {
    /// Adds later writes: they win over earlier ones of the same key.
    fn add(&mut self, later: Writes) {
        self.devices.extend(later.devices);
        self.numbering.extend(later.numbering);
        self.messages.extend(later.messages);
        self.feedback_pending.extend(later.feedback_pending);
        self.feedback_batches.extend(later.feedback_batches);
        for (mine, theirs) in [
            (&mut self.ids, later.ids),
            (&mut self.created_at, later.created_at),
        ] {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        if later.feedback_last_batch.is_some() {
            self.feedback_last_batch = later.feedback_last_batch;
        }
        self.events.extend(later.events);
        for (p, (record, first)) in later.partitions {
            let e = self.partitions.entry(p).or_insert((Vec::new(), 0));
            e.0 = record;
            e.1 = e.1.max(first);
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.numbering.is_empty()
            && self.messages.is_empty()
            && self.feedback_pending.is_empty()
            && self.feedback_batches.is_empty()
            && self.feedback_last_batch.is_none()
            && self.ids.is_none()
            && self.created_at.is_none()
            && self.events.is_empty()
            && self.partitions.is_empty()
    }

    /// Writes everything into the transaction and empties itself.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let Writes {
            devices,
            numbering,
            messages,
            feedback_pending,
            feedback_batches,
            feedback_last_batch,
            ids,
            created_at,
            events,
            partitions,
        } = std::mem::take(self);
        if !messages.is_empty() {
            let mut table = txn.open_table(MESSAGES)?;
            for ((id, seq), record) in &messages {
                match record {
                    Some(bytes) => drop(table.insert((id.as_str(), *seq), bytes.as_slice())?),
                    None => drop(table.remove((id.as_str(), *seq))?),
                }
            }
        }
        put_all(txn, DEVICES, devices.iter().map(|(k, v)| (k.as_str(), v)))?;
        if !numbering.is_empty() {
            let mut table = txn.open_table(SEQUENCE_NUMBERS)?;
            for (id, n) in &numbering {
                match n {
                    Some(n) => drop(table.insert(id.as_str(), *n)?),
                    None => drop(table.remove(id.as_str())?),
                }
            }
        }
        put_all(
            txn,
            FEEDBACK_PENDING,
            feedback_pending.iter().map(|(k, v)| (*k, v)),
        )?;
        put_all(
            txn,
            FEEDBACK_BATCHES,
            feedback_batches.iter().map(|(k, v)| (*k, v)),
        )?;
        if ids.is_some() || created_at.is_some() || feedback_last_batch.is_some() {
            let mut meta = txn.open_table(META)?;
            if let Some(n) = feedback_last_batch {
                meta.insert("feedback_last_batch", encode(&n).as_slice())?;
            }
            if let Some(t) = &created_at {
                meta.insert("created_at", t.as_slice())?;
            }
            if let Some(ids) = &ids {
                meta.insert("ids", ids.as_slice())?;
            }
        }
        if !events.is_empty() || !partitions.is_empty() {
            let mut table = txn.open_table(EVENTS)?;
            for (p, last, chunk) in chunks(events) {
                table.insert((p, last), chunk.as_slice())?;
            }
            let mut numbering = txn.open_table(PARTITIONS)?;
            for (p, (record, first)) in &partitions {
                numbering.insert(*p, record.as_slice())?;
                // Retention and reset trim the front only: every chunk whose last event is
                // before the first retained one goes. A chunk that straddles it stays until
                // its last event goes too; the partition record's `first_seq` hides the
                // dropped part on load.
                if *first > 0 {
                    table.retain_in((*p, 0)..(*p, *first), |_, _| false)?;
                }
            }
        }
        Ok(())
    }
}

/// Groups a commit's events into one value per run of consecutive events of a partition:
/// (partition, last sequence number, MessagePack array of the event records). One B-tree
/// insert per partition and commit instead of one per event (the writer's largest cost under
/// telemetry); keyed by the last event so that trimming the front deletes exactly the chunks
/// that hold nothing retained.
fn chunks(events: Vec<(u32, u64, Vec<u8>)>) -> Vec<(u32, u64, Vec<u8>)> {
    let mut runs: Vec<(u32, u64, Vec<Vec<u8>>)> = Vec::new();
    for (p, seq, record) in events {
        match runs.iter_mut().rev().find(|r| r.0 == p) {
            Some(run) if run.1.checked_add(1) == Some(seq) => {
                run.1 = seq;
                run.2.push(record);
            }
            _ => runs.push((p, seq, vec![record])),
        }
    }
    runs.into_iter()
        .map(|(p, last, records)| (p, last, event_chunk(&records)))
        .collect()
}

/// A MessagePack array of already-encoded records.
pub(super) fn event_chunk(records: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = records.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(len + 5);
    // Writing into a Vec cannot fail; a run holds far fewer than 2^32 events.
    let _ =
        rmp::encode::write_array_len(&mut out, u32::try_from(records.len()).unwrap_or(u32::MAX));
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// Writes (`Some`) or deletes (`None`) each entry of a table with byte-string values.
fn put_all<'k, K: redb::Key + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<K, &'static [u8]>,
    entries: impl Iterator<Item = (K::SelfType<'k>, &'k Option<Vec<u8>>)>,
) -> Result<(), redb::Error> {
    let mut entries = entries.peekable();
    if entries.peek().is_none() {
        return Ok(());
    }
    let mut t = txn.open_table(table)?;
    for (k, v) in entries {
        match v {
            Some(bytes) => drop(t.insert(k, bytes.as_slice())?),
            None => drop(t.remove(k)?),
        }
    }
    Ok(())
}

/// One transaction, one fsync, for all `batches` in order.
fn write(db: &Database, batches: Vec<Batch>) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut pending = Writes::default();
    for b in batches {
        // A reset or a replaced device deletes ranges of keys: what came before goes in first,
        // so the deletes apply to it and not to what comes after.
        if b.cleared || !b.replaced.is_empty() {
            pending.apply(&txn)?;
        }
        if b.cleared {
            txn.delete_table(DEVICES)?;
            txn.delete_table(MESSAGES)?;
            txn.delete_table(SEQUENCE_NUMBERS)?;
            txn.delete_table(FEEDBACK_PENDING)?;
            txn.delete_table(FEEDBACK_BATCHES)?;
        }
        if !b.replaced.is_empty() {
            let mut messages = txn.open_table(MESSAGES)?;
            for id in &b.replaced {
                messages.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
            }
        }
        pending.add(b.writes);
    }
    pending.apply(&txn)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commits_after_shared_ones_wait_for_company() {
        // One client awaiting each acknowledgement: never waits.
        assert!(!waits_for_company(1, 0));
        assert!(!waits_for_company(1, 1));
        // The last commit was shared: a small one waits, a full one does not.
        assert!(waits_for_company(1, 2));
        assert!(waits_for_company(COMMIT_WINDOW_BATCHES - 1, 40));
        assert!(!waits_for_company(COMMIT_WINDOW_BATCHES, 40));
    }
}
