use std::path::PathBuf;

use iothub_protocol::registry::Device;
use iothub_protocol::{AckMode, Message};
use proptest::prelude::*;
use time::OffsetDateTime;

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::*;
use crate::hub::event_log::EventRecord;
use crate::hub::persisted::decode;
use crate::hub::{Hub, HubSettings};

fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("iothub-persist-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn t(s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
}

fn settings() -> HubSettings {
    let mut s = HubSettings {
        feedback_window: std::time::Duration::ZERO,
        ..HubSettings::default()
    };
    // Small, so that the model test sees events dropped by age and by count.
    s.event_log.partition_count = 2;
    s.event_log.retention = std::time::Duration::from_secs(100);
    s.event_log.max_events_per_partition = 5;
    s
}

/// A hub over the state in `dir`, tracking changes as the driver does.
fn open_hub(dir: &Path, now: OffsetDateTime) -> (Persister, Hub) {
    let (p, restored) = open(dir).unwrap();
    let mut hub = Hub::new(settings(), 1);
    hub.restore(restored, now);
    hub.track_changes();
    (p, hub)
}

/// A fresh data directory and a hub over it with one device, `d1`, created at `t(0)`.
fn hub_with_d1(name: &str) -> (PathBuf, Persister, Hub) {
    let dir = temp_dir(name);
    let (p, mut hub) = open_hub(&dir, t(0));
    hub.create_device(Device::new("d1"), t(0)).unwrap();
    (dir, p, hub)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn records(hub: &Hub) -> Vec<Vec<u8>> {
    hub.list_devices(usize::MAX)
        .iter()
        .map(|d| encode(&hub.device_record(&d.device_id).unwrap()))
        .chain([encode(&hub.feedback_record())])
        .chain([event_log(hub).into_bytes()])
        .collect()
}

/// The event log as readers see it: each partition's runtime information and every retained
/// event with its numbering, time and message.
fn event_log(hub: &Hub) -> String {
    let mut out = format!("{:?}\n", hub.event_hub_info());
    for p in 0..hub.event_log().partition_count() {
        let id = p.to_string();
        let info = hub.partition_info(&id).unwrap();
        let mut cursor = hub
            .cursor(&id, &iothub_protocol::EventPosition::Earliest)
            .unwrap();
        let events = hub.read_events(&mut cursor, usize::MAX);
        out += &format!("{info:?}\n{events:?}\n");
    }
    out
}

fn telemetry(hub: &mut Hub, device: &str, body: &str, now: OffsetDateTime) {
    let mut m = Message::new(body);
    m.system.message_id = Some(iothub_protocol::MessageId::String(format!("m-{body}")));
    m.system.content_type = Some("application/json".into());
    m.properties.insert("k", body);
    let origin = crate::hub::Origin::device(device);
    hub.send_telemetry(&origin, m, now).unwrap();
}

#[test]
fn a_restart_restores_devices_keys_twins_queues_and_feedback() {
    let dir = temp_dir("restart");
    let (p, mut hub) = open_hub(&dir, t(0));
    let created = hub.create_device(Device::new("d1"), t(0)).unwrap();
    let mut m = Message::new("hello");
    m.system.ack = AckMode::Full;
    hub.enqueue_c2d("d1", m.clone(), t(1)).unwrap();
    hub.enqueue_c2d("d1", m, t(1)).unwrap();
    let got = hub.receive_c2d("d1", t(2)).unwrap().unwrap();
    hub.complete_c2d("d1", got.system.lock_token.as_deref().unwrap(), t(3))
        .unwrap();
    // The second one is locked when the emulator stops.
    assert!(hub.receive_c2d("d1", t(4)).unwrap().is_some());
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    let before = records(&hub);
    p.close();
    drop(p);

    let (p2, mut again) = open_hub(&dir, t(5));
    assert_eq!(records(&again), before);
    let device = again.get_device("d1").unwrap();
    assert_eq!(device.primary_key(), created.primary_key());
    assert_eq!(device.etag, created.etag);
    let back = again.receive_c2d("d1", t(6)).unwrap().unwrap();
    assert_eq!(
        back.system.sequence_number,
        Some(2),
        "the locked message is back"
    );
    assert!(again.has_feedback_available());
    // Sequence numbers and etags continue.
    let e = again.enqueue_c2d("d1", Message::new("x"), t(6)).unwrap();
    assert_eq!(e.sequence_number, 3);
    let updated = again.update_device(device.clone(), "*", t(7)).unwrap();
    assert_ne!(updated.etag, device.etag);
    p2.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_file() {
    let dir = temp_dir("lock");
    let (p, _) = open(&dir).unwrap();
    let err = open(&dir).err().unwrap();
    assert!(matches!(err, PersistError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("--in-memory"));
    assert!(matches!(reset(&dir), Err(PersistError::InUse { .. })));
    p.close();
    assert!(open(&dir).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_newer_format_is_refused_with_what_to_do() {
    let dir = temp_dir("newer");
    {
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", 99u64.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open(&dir).err().unwrap();
    assert!(
        matches!(err, PersistError::NewerFormat { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("reset"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_file_is_reported_and_kept_and_reset_removes_it() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(FILE_NAME);
    std::fs::write(
        &path,
        b"this is not a database, but somebody's data".repeat(200),
    )
    .unwrap();
    let err = open(&dir).err().unwrap();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(path.exists(), "never wiped");
    std::fs::write(dir.join("ca.pem"), b"keep").unwrap();
    assert!(reset(&dir).unwrap());
    assert!(!path.exists());
    assert!(dir.join("ca.pem").exists(), "reset keeps the CA");
    assert!(open(&dir).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_that_does_not_decode_is_reported() {
    let dir = temp_dir("record");
    {
        let (p, _) = open(&dir).unwrap();
        p.close();
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(DEVICES)
            .unwrap()
            .insert("d1", b"\xc1".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open(&dir).err().unwrap();
    assert!(err.to_string().contains("device d1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Format 1 kept each device's queue in its record; opening such a file moves the messages
/// to their own keys and restores the same hub.
#[test]
fn a_format_1_file_is_migrated_on_open() {
    let dir = temp_dir("migrate");
    let mut hub = Hub::new(settings(), 1);
    hub.create_device(Device::new("d1"), t(0)).unwrap();
    hub.create_device(Device::new("d2"), t(0)).unwrap();
    for body in ["a", "b", "c"] {
        hub.enqueue_c2d("d1", Message::new(body), t(1)).unwrap();
    }
    let token = lock_one(&mut hub, "d1");
    hub.complete_c2d("d1", &token, t(2)).unwrap();
    let before = records(&hub);
    {
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", 1u64.to_le_bytes().as_slice())
                .unwrap();
            meta.insert("ids", encode(&hub.id_state()).as_slice())
                .unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            for id in ["d1", "d2"] {
                // Format 1: the whole queue inside the device record.
                let record = encode(&hub.device_record(id).unwrap());
                devices.insert(id, record.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let (p, mut again) = open_hub(&dir, t(3));
    // Format 1 kept no event log (nor the hub's creation time).
    let without_log = |r: Vec<Vec<u8>>| r[..r.len() - 1].to_vec();
    assert!(
        without_log(records(&again)) == without_log(before),
        "migrated state differs"
    );
    let e = again.enqueue_c2d("d1", Message::new("d"), t(3)).unwrap();
    assert_eq!(e.sequence_number, 4, "sequence numbers continue");
    p.submit(&mut again);
    block_on(p.synced()).unwrap();
    let after = records(&again);
    p.close();
    {
        let db = open_db(&dir).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let meta = txn.open_table(META).unwrap();
        let format = meta.get("format").unwrap().unwrap().value().to_vec();
        assert_eq!(format, FORMAT_VERSION.to_le_bytes());
        let messages = txn.open_table(MESSAGES).unwrap();
        assert_eq!(
            messages.len().unwrap(),
            3,
            "b, c and d under their own keys"
        );
        let devices = txn.open_table(DEVICES).unwrap();
        let d1: crate::hub::persisted::DeviceRecord =
            decode(devices.get("d1").unwrap().unwrap().value()).unwrap();
        assert!(
            d1.queue.is_empty(),
            "the device record no longer holds the queue"
        );
    }
    let (p, again) = open_hub(&dir, t(4));
    assert!(records(&again) == after, "state after migration differs");
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Format 2 stored whole message records under their own keys; opening such a file rewrites
/// them in the compact form and restores the same hub.
#[test]
fn a_format_2_file_is_migrated_on_open() {
    let dir = temp_dir("migrate2");
    let mut hub = Hub::new(settings(), 1);
    hub.create_device(Device::new("d1"), t(0)).unwrap();
    for body in ["a", "b"] {
        let mut m = Message::new(body);
        m.properties.insert("k", body);
        hub.enqueue_c2d("d1", m, t(1)).unwrap();
    }
    let before = records(&hub);
    {
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", 2u64.to_le_bytes().as_slice())
                .unwrap();
            meta.insert("ids", encode(&hub.id_state()).as_slice())
                .unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut record = hub.device_record("d1").unwrap();
            for m in std::mem::take(&mut record.queue) {
                let seq = m.sequence_number();
                messages
                    .insert(("d1", seq), encode_compact(&m).as_slice())
                    .unwrap();
            }
            devices.insert("d1", encode(&record).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (p, again) = open_hub(&dir, t(3));
    let without_log = |r: Vec<Vec<u8>>| r[..r.len() - 1].to_vec();
    assert!(
        without_log(records(&again)) == without_log(before.clone()),
        "migrated state differs"
    );
    p.close();
    // Written back in format 3: a second open reads the same.
    let (p, again) = open_hub(&dir, t(4));
    assert!(
        without_log(records(&again)) == without_log(before),
        "state after migration differs"
    );
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Format 3 kept the whole feedback queue in one `meta` record: it is split into keys.
#[test]
fn a_format_3_file_is_migrated_on_open() {
    let dir = temp_dir("migrate3");
    let mut s = settings();
    s.feedback_batch_size = 2;
    s.feedback_window = std::time::Duration::from_secs(60);
    let mut hub = Hub::new(s.clone(), 1);
    hub.create_device(Device::new("d1"), t(0)).unwrap();
    for _ in 0..3 {
        let mut m = Message::new("x");
        m.system.ack = AckMode::Full;
        hub.enqueue_c2d("d1", m, t(1)).unwrap();
        let token = lock_one(&mut hub, "d1");
        hub.complete_c2d("d1", &token, t(1)).unwrap();
    }
    // One released batch of two, one record waiting for its window.
    let before = encode(&hub.feedback_record());
    // Format 3 kept each event under its own key, as a single record.
    hub.track_changes();
    telemetry(&mut hub, "d1", "e", t(1));
    let appended = hub.take_changes().unwrap().events.appended;
    let log_before = event_log(&hub);
    {
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", 3u64.to_le_bytes().as_slice())
                .unwrap();
            meta.insert("feedback", before.as_slice()).unwrap();
            let created = encode(&hub.event_log().created_at().unwrap());
            meta.insert("created_at", created.as_slice()).unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            let record = hub.device_record_without_queue("d1").unwrap();
            devices.insert("d1", encode(&record).as_slice()).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            for e in &appended {
                let record = encode_compact(&EventRecord::from(&**e));
                let seq = u64::try_from(e.sequence_number).unwrap();
                events
                    .insert((e.partition, seq), record.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    for now in [t(2), t(3)] {
        let (p, restored) = open(&dir).unwrap();
        let mut again = Hub::new(s.clone(), 1);
        again.restore(restored, now);
        assert!(
            encode(&again.feedback_record()) == before,
            "migrated feedback differs"
        );
        assert_eq!(event_log(&again), log_before, "migrated events differ");
        p.close();
    }
    let db = open_db(&dir).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(
        txn.open_table(META)
            .unwrap()
            .get("feedback")
            .unwrap()
            .is_none()
    );
    assert_eq!(txn.open_table(FEEDBACK_PENDING).unwrap().len().unwrap(), 1);
    assert_eq!(txn.open_table(FEEDBACK_BATCHES).unwrap().len().unwrap(), 1);
    drop(txn);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The device record is not rewritten per message, yet C2D sequence numbers never repeat
/// after a restart, even when every message was completed.
#[test]
fn sequence_numbers_continue_after_a_restart_with_an_empty_queue() {
    let (dir, p, mut hub) = hub_with_d1("numbering");
    p.submit(&mut hub);
    for _ in 0..3 {
        hub.enqueue_c2d("d1", Message::new("x"), t(1)).unwrap();
        p.submit(&mut hub);
        let token = lock_one(&mut hub, "d1");
        hub.complete_c2d("d1", &token, t(1)).unwrap();
        p.submit(&mut hub);
    }
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    let (p, mut again) = open_hub(&dir, t(2));
    let e = again.enqueue_c2d("d1", Message::new("y"), t(2)).unwrap();
    assert_eq!(e.sequence_number, 4);
    // A deleted and re-created namesake starts again from 1, also after a restart.
    again.delete_device("d1", None, t(3)).unwrap();
    again.create_device(Device::new("d1"), t(3)).unwrap();
    p.submit(&mut again);
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    let (p, mut third) = open_hub(&dir, t(4));
    let e = third.enqueue_c2d("d1", Message::new("z"), t(4)).unwrap();
    assert_eq!(e.sequence_number, 1);
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Telemetry counters and activity times are written late (at most once a second, or at a
/// clean shutdown), the events themselves at once.
#[test]
fn activity_is_written_late_and_at_shutdown() {
    let (dir, mut p, mut hub) = hub_with_d1("activity");
    // However slow the machine, the interval does not pass in this test.
    p.set_activity_interval(Duration::MAX);
    p.submit(&mut hub);
    telemetry(&mut hub, "d1", "a", t(5));
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    let (p, mut again) = open_hub(&dir, t(6));
    let d = again.get_device("d1").unwrap();
    assert_ne!(d.last_activity_time, Some(t(5)), "activity alone waits");
    assert!(event_log(&again).contains("m-a"), "the event is there");
    telemetry(&mut again, "d1", "b", t(7));
    p.submit(&mut again);
    p.flush_activity(&mut again);
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    let (p, third) = open_hub(&dir, t(8));
    assert_eq!(
        third.get_device("d1").unwrap().last_activity_time,
        Some(t(7))
    );
    assert_eq!(
        third.device_record("d1").unwrap().d2c_count,
        1,
        "the first session closed as if killed: its count was lost, the second's was flushed"
    );
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

fn lock_one(hub: &mut Hub, device: &str) -> String {
    let m = hub.receive_c2d(device, t(1)).unwrap().unwrap();
    m.system.lock_token.unwrap()
}

/// Messages written one by one come back as the queue they were in.
#[test]
fn messages_written_one_by_one_restore_the_queue() {
    let (dir, p, mut hub) = hub_with_d1("touched");
    for _ in 0..50 {
        hub.enqueue_c2d("d1", Message::new("x"), t(0)).unwrap();
    }
    p.submit(&mut hub);
    let token = lock_one(&mut hub, "d1");
    hub.abandon_c2d("d1", &token, t(1)).unwrap();
    p.submit(&mut hub);
    let token = lock_one(&mut hub, "d1");
    hub.complete_c2d("d1", &token, t(2)).unwrap();
    p.submit(&mut hub);
    hub.enqueue_c2d("d1", Message::new("y"), t(3)).unwrap();
    // Locked when the emulator stops: back in the queue with its count.
    lock_one(&mut hub, "d1");
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    let model = records(&hub);
    p.close();
    let (p, again) = open_hub(&dir, t(4));
    assert!(records(&again) == model, "restored state differs");
    assert_eq!(again.peek_c2d("d1").unwrap().len(), 50);
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_message_of_an_unknown_device_is_reported() {
    let dir = temp_dir("orphan");
    {
        let (p, _) = open(&dir).unwrap();
        p.close();
        let db = open_db(&dir).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(MESSAGES)
            .unwrap()
            .insert(("ghost", 7), b"\x80".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open(&dir).err().unwrap();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("ghost"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Telemetry comes back with its partition, sequence number, offset and enqueued time, and
/// numbering continues after the restart instead of starting from 0.
#[test]
fn a_restart_keeps_the_event_log_and_its_numbering() {
    let dir = temp_dir("events");
    let (p, mut hub) = open_hub(&dir, t(0));
    for d in ["d1", "d2", "d3"] {
        hub.create_device(Device::new(d), t(0)).unwrap();
    }
    for (i, d) in ["d1", "d2", "d3", "d1"].iter().enumerate() {
        telemetry(
            &mut hub,
            d,
            &format!("{i}"),
            t(1) + time::Duration::milliseconds(7),
        );
    }
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    let before = event_log(&hub);
    let d1 = crate::hub::event_log::partition_for_device("d1", 2).to_string();
    let last = hub
        .partition_info(&d1)
        .unwrap()
        .last_enqueued_sequence_number;
    p.close();
    drop(p);

    // What a hub that never stopped gives the next event.
    telemetry(&mut hub, "d1", "after", t(51));
    let unstopped = hub.partition_info(&d1).unwrap();

    let (p, mut again) = open_hub(&dir, t(50));
    assert_eq!(event_log(&again), before);
    telemetry(&mut again, "d1", "after", t(51));
    let info = again.partition_info(&d1).unwrap();
    assert_eq!(
        info.last_enqueued_sequence_number,
        last + 1,
        "numbering continues"
    );
    // No event was dropped, so no numbering record was written: the restart carried it on
    // from the last event, offsets included.
    assert_eq!(format!("{info:?}"), format!("{unstopped:?}"));
    p.submit(&mut again);
    block_on(p.synced()).unwrap();
    let after = event_log(&again);
    p.close();
    let (p, again) = open_hub(&dir, t(52));
    assert_eq!(event_log(&again), after);
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Events on disk, counted inside their chunks.
fn stored_events(dir: &Path) -> usize {
    use redb::ReadableTable;
    let db = open_db(dir).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = txn.open_table(EVENTS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|item| {
            let (_, v) = item.unwrap();
            decode::<Vec<EventRecord>>(v.value()).unwrap().len()
        })
        .sum()
}

/// A commit's events of a partition are one chunk on disk; when retention drops the front of a
/// chunk, the rest of it stays retained, and the dropped part stays dropped after a restart.
#[test]
fn a_chunk_that_straddles_retention_loads_without_its_dropped_events() {
    let (dir, p, mut hub) = hub_with_d1("straddle");
    for i in 0..12 {
        telemetry(&mut hub, "d1", &i.to_string(), t(1));
    }
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    let before = event_log(&hub);
    p.close();
    drop(p);
    assert_eq!(
        stored_events(&dir),
        12,
        "one chunk, its front dropped in memory only"
    );
    let (p, again) = open_hub(&dir, t(2));
    assert_eq!(event_log(&again), before);
    let d1 = crate::hub::event_log::partition_for_device("d1", 2).to_string();
    assert_eq!(again.partition_info(&d1).unwrap().begin_sequence_number, 7);
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Retention deletes from disk too: by count on append, by age when the deadline fires
/// (also when it fires right after a restart), and everything on reset; numbering continues.
#[test]
fn retention_deletes_events_from_disk() {
    let (dir, p, mut hub) = hub_with_d1("retention");
    // A commit each, so each event is a chunk of its own.
    for i in 0..12 {
        telemetry(&mut hub, "d1", &i.to_string(), t(1));
        p.submit(&mut hub);
        block_on(p.synced()).unwrap();
    }
    p.close();
    assert_eq!(stored_events(&dir), 5, "the per-partition bound");

    // Past the retention time (100 s) while the emulator is down.
    let (p, mut hub) = open_hub(&dir, t(500));
    let d1 = crate::hub::event_log::partition_for_device("d1", 2).to_string();
    assert_eq!(hub.partition_info(&d1).unwrap().begin_sequence_number, 7);
    hub.handle_timeout(t(500));
    let info = hub.partition_info(&d1).unwrap();
    assert!(info.is_empty);
    assert_eq!(info.last_enqueued_sequence_number, 11);
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    p.close();
    assert_eq!(stored_events(&dir), 0, "aged out on disk");

    let (p, mut hub) = open_hub(&dir, t(501));
    let info = hub.partition_info(&d1).unwrap();
    assert_eq!(
        (
            info.begin_sequence_number,
            info.last_enqueued_sequence_number
        ),
        (12, 11)
    );
    telemetry(&mut hub, "d1", "x", t(502));
    telemetry(&mut hub, "d1", "y", t(502));
    hub.reset();
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    p.close();
    assert_eq!(stored_events(&dir), 0, "reset drops every event");
    let (p, hub) = open_hub(&dir, t(503));
    let info = hub.partition_info(&d1).unwrap();
    assert_eq!(
        info.last_enqueued_sequence_number, 13,
        "reset keeps the numbering"
    );
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Activity that waits says when it is due, and a submit with nothing else to write writes it
/// then: what the driver's timer task does when no later operation comes.
#[test]
fn waiting_activity_is_written_by_a_submit_when_due() {
    let (dir, mut p, mut hub) = hub_with_d1("due");
    p.set_activity_interval(Duration::from_millis(50));
    assert!(!p.submit(&mut hub), "a new device is no activity");
    assert_eq!(p.activity_due_in(), None);
    telemetry(&mut hub, "d1", "a", t(5));
    assert!(p.submit(&mut hub), "activity started waiting");
    assert!(
        p.activity_due_in()
            .is_some_and(|d| d <= Duration::from_millis(50))
    );
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(p.activity_due_in(), Some(Duration::ZERO));
    assert!(!p.submit(&mut hub));
    assert_eq!(p.activity_due_in(), None, "written");
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    let (p, again) = open_hub(&dir, t(6));
    assert_eq!(
        again.get_device("d1").unwrap().last_activity_time,
        Some(t(5))
    );
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Delete(u8),
    Enqueue(u8),
    Receive(u8),
    Complete,
    Reject,
    Abandon,
    Tag(u8, u8),
    Advance(u8),
    Purge(u8),
    Telemetry(u8),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0u8..4;
    prop_oneof![
        3 => d.clone().prop_map(Op::Create),
        1 => d.clone().prop_map(Op::Delete),
        6 => d.clone().prop_map(Op::Enqueue),
        4 => d.clone().prop_map(Op::Receive),
        2 => Just(Op::Complete),
        1 => Just(Op::Reject),
        1 => Just(Op::Abandon),
        2 => (d.clone(), 0u8..5).prop_map(|(d, v)| Op::Tag(d, v)),
        1 => (0u8..120).prop_map(Op::Advance),
        1 => d.clone().prop_map(Op::Purge),
        4 => d.clone().prop_map(Op::Telemetry),
        1 => Just(Op::Reset),
    ]
}

fn apply(hub: &mut Hub, op: &Op, now: &mut OffsetDateTime, tokens: &mut Vec<(String, String)>) {
    let id = |d: &u8| format!("d{d}");
    match op {
        Op::Create(d) => drop(hub.create_device(Device::new(id(d)), *now)),
        Op::Delete(d) => drop(hub.delete_device(&id(d), None, *now)),
        Op::Enqueue(d) => {
            let mut m = Message::new(vec![*d; 3]);
            m.system.ack = AckMode::Full;
            m.system.absolute_expiry = Some(*now + time::Duration::seconds(90));
            drop(hub.enqueue_c2d(&id(d), m, *now));
        }
        Op::Receive(d) => {
            if let Ok(Some(m)) = hub.receive_c2d(&id(d), *now)
                && let Some(t) = m.system.lock_token
            {
                tokens.push((id(d), t));
            }
        }
        Op::Complete | Op::Reject | Op::Abandon => {
            if let Some((dev, token)) = tokens.pop() {
                let _ = match op {
                    Op::Complete => hub.complete_c2d(&dev, &token, *now),
                    Op::Reject => hub.reject_c2d(&dev, &token, *now),
                    _ => hub.abandon_c2d(&dev, &token, *now),
                };
            }
        }
        Op::Tag(d, v) => {
            let body = serde_json::json!({"tags": {"v": v}, "properties": {"desired": {"v": v}}});
            if let Ok(write) = iothub_protocol::twin::TwinWrite::from_json(&body) {
                let _ = hub.update_twin(&crate::hub::Identity::device(id(d)), &write, None, *now);
            }
        }
        Op::Advance(s) => {
            *now += time::Duration::seconds(i64::from(*s));
            hub.handle_timeout(*now);
        }
        Op::Purge(d) => drop(hub.purge_c2d(&id(d), *now)),
        Op::Telemetry(d) => {
            let origin = crate::hub::Origin::device(id(d));
            drop(hub.send_telemetry(&origin, Message::new(vec![*d; 5]), *now));
        }
        Op::Reset => hub.reset(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any prefix of acknowledged operations, a restart gives exactly the model's state
    /// (the model being a hub that never stopped, with its locks released).
    #[test]
    fn a_restart_after_any_prefix_equals_the_model(ops in proptest::collection::vec(op(), 1..40), cut in 0usize..40) {
        let dir = temp_dir("model");
        let mut now = t(0);
        let (p, mut hub) = open_hub(&dir, now);
        let mut tokens = Vec::new();
        let cut = cut.min(ops.len());
        for op in &ops[..cut] {
            apply(&mut hub, op, &mut now, &mut tokens);
            p.submit(&mut hub);
            block_on(p.synced()).unwrap();
        }
        // Activity (telemetry counters, last activity times) is written late on purpose; its
        // own test is `activity_is_written_late_and_at_shutdown`.
        p.flush_activity(&mut hub);
        block_on(p.synced()).unwrap();
        let model = records(&hub);
        // Unacknowledged work after the crash point is never submitted.
        for op in &ops[cut..] {
            apply(&mut hub, op, &mut now, &mut tokens);
        }
        p.close();
        drop(p);
        let (p2, again) = open_hub(&dir, now);
        prop_assert!(records(&again) == model, "restored state differs from the model");
        p2.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The ready-time figure: 10,000 devices with 50 queued messages each, reopened.
/// Ignored in the normal suite (it writes ~500,000 messages); run with
/// `cargo test --release -p iothub-emulator --lib ready_time -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints the figure"]
fn ready_time_with_10k_devices_by_50_messages() {
    let dir = temp_dir("ready");
    let (p, mut hub) = open_hub(&dir, t(0));
    for d in 0..10_000 {
        let id = format!("dev-{d:05}");
        hub.create_device(Device::new(id.clone()), t(0)).unwrap();
        for _ in 0..50 {
            hub.enqueue_c2d(&id, Message::new(vec![b'x'; 64]), t(0))
                .unwrap();
        }
        if d % 500 == 0 {
            p.submit(&mut hub);
        }
    }
    p.submit(&mut hub);
    block_on(p.synced()).unwrap();
    p.close();
    drop(p);
    drop(hub);
    let size = std::fs::metadata(dir.join(FILE_NAME)).unwrap().len();
    let started = std::time::Instant::now();
    let (p, restored) = open(&dir).unwrap();
    let read = started.elapsed();
    let mut hub = Hub::new(settings(), 1);
    hub.restore(restored, t(1));
    hub.track_changes();
    let elapsed = started.elapsed();
    assert_eq!(hub.device_count(), 10_000);
    println!(
        "ready time: {elapsed:?} (read and decode {read:?}, hub rebuild {:?}) for 10,000 devices x 50 messages; file {size} bytes = {} bytes per queued message",
        elapsed - read,
        size / 500_000
    );
    p.close();
    let _ = std::fs::remove_dir_all(&dir);
}
