//! Unit tests for every event log rule, then property tests of its invariants, on a virtual
//! clock. Telemetry ingestion is tested here too: it is how events get in.

use std::sync::Arc;
use std::time::Duration;

use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::{EventPosition, HubError, Message, MessageId};
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::hub::{Hub, HubEvent, HubSettings, Identity};

mod properties;
mod telemetry;

const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings(log: EventLogSettings) -> HubSettings {
    HubSettings {
        hub_name: "testhub".into(),
        event_log: log,
        ..HubSettings::default()
    }
}

fn hub_with(log: EventLogSettings, devices: &[&str]) -> Hub {
    let mut hub = Hub::new(settings(log), 1);
    for d in devices {
        hub.create_device(Device::new(*d), T0).unwrap();
    }
    hub
}

fn hub(devices: &[&str]) -> Hub {
    hub_with(EventLogSettings::default(), devices)
}

fn msg(id: &str) -> Message {
    let mut m = Message::new(format!("body of {id}"));
    m.system.message_id = Some(MessageId::from(id));
    m
}

fn send(hub: &mut Hub, device: &str, id: &str, now: OffsetDateTime) -> Appended {
    hub.send_telemetry(&Origin::device(device), msg(id), now)
        .unwrap()
}

fn all(hub: &Hub, partition: u32) -> Vec<Arc<Event>> {
    let mut c = hub
        .cursor(&partition.to_string(), &EventPosition::Earliest)
        .unwrap();
    hub.read_events(&mut c, usize::MAX)
}

fn seqs(events: &[Arc<Event>]) -> Vec<i64> {
    events.iter().map(|e| e.sequence_number).collect()
}

fn from(hub: &Hub, partition: u32, p: EventPosition) -> Result<Vec<i64>, EventLogError> {
    let mut c = hub.cursor(&partition.to_string(), &p)?;
    Ok(seqs(&hub.read_events(&mut c, usize::MAX)))
}

fn wakeups(hub: &mut Hub) -> Vec<u32> {
    std::iter::from_fn(|| hub.poll_event())
        .filter_map(|e| match e {
            HubEvent::EventsAvailable { partition } => Some(partition),
            _ => None,
        })
        .collect()
}

// ---- partitioning ----

#[test]
fn the_partition_hash_is_pinned() {
    // Changing the hash moves every device to another partition: do it knowingly.
    let got: Vec<u32> = ["d1", "d2", "thermostat-1", "", "éüñ"]
        .iter()
        .map(|d| partition_for_device(d, 4))
        .collect();
    assert_eq!(got, PINNED);
    assert_eq!(partition_for_device("anything", 1), 0);
    assert_eq!(
        partition_for_device("anything", 0),
        0,
        "no division by zero"
    );
}

/// Checked against an independent FNV-1a + fmix64 implementation.
const PINNED: [u32; 5] = [2, 1, 3, 2, 1];

#[test]
fn devices_spread_over_the_partitions() {
    for count in [2u32, 4, 32] {
        let mut per = vec![0usize; count as usize];
        for i in 0..3200 {
            per[partition_for_device(&format!("device-{i}"), count) as usize] += 1;
        }
        let fair = 3200 / count as usize;
        for n in per {
            assert!(
                n > fair * 3 / 4 && n < fair * 5 / 4,
                "{count}: {n} vs {fair}"
            );
        }
    }
}

#[test]
fn a_devices_messages_and_its_modules_share_one_partition() {
    let mut h = hub(&["d1"]);
    let home = partition_for_device("d1", 4);
    let a = send(&mut h, "d1", "a", T0);
    h.create_module(iothub_protocol::module::Module::new("d1", "m1"), T0)
        .unwrap();
    let module = Origin {
        identity: Identity::module("d1", "m1"),
        auth: AuthMethod::MODULE_SAS,
    };
    let b = h.send_telemetry(&module, msg("b"), T0).unwrap();
    assert_eq!((a.partition, b.partition), (home, home));
    let events = all(&h, home);
    assert_eq!(events[1].origin, Identity::module("d1", "m1"));
    let names: Vec<_> = events[1]
        .annotations()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&annotation::MODULE_ID));
}

// ---- numbering, offsets, enqueued time ----

#[test]
fn sequence_numbers_start_at_zero_and_offsets_count_bytes() {
    let mut h = hub(&["d1"]);
    let p = partition_for_device("d1", 4);
    let placed: Vec<_> = (0..3)
        .map(|i| send(&mut h, "d1", &format!("m{i}"), T0))
        .collect();
    assert_eq!(
        placed.iter().map(|a| a.sequence_number).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let size = |id: &str| (msg(id).size() + "d1".len()) as u64 + EVENT_OVERHEAD;
    assert_eq!(placed[0].offset, 0);
    assert_eq!(placed[1].offset, size("m0"));
    assert_eq!(placed[2].offset, size("m0") + size("m1"));
    let events = all(&h, p);
    assert_eq!(events[2].offset_string(), placed[2].offset.to_string());
    // Other partitions are untouched.
    for q in (0..4).filter(|q| *q != p) {
        assert!(all(&h, q).is_empty());
    }
}

#[test]
fn enqueued_time_is_in_milliseconds_and_never_goes_back() {
    let mut h = hub(&["d1"]);
    let t = datetime!(2026-01-01 0:00:01.234567 UTC);
    let a = send(&mut h, "d1", "a", t);
    assert_eq!(a.enqueued_time, datetime!(2026-01-01 0:00:01.234 UTC));
    let b = send(&mut h, "d1", "b", t - Duration::from_secs(5));
    assert_eq!(
        b.enqueued_time, a.enqueued_time,
        "a clock moved back is ignored"
    );
    let c = send(&mut h, "d1", "c", t + ms(10));
    assert_eq!(unix_ms(c.enqueued_time) - unix_ms(a.enqueued_time), 10);
}

// ---- retention ----

fn small(retention: Duration, max_events: usize, max_bytes: u64) -> EventLogSettings {
    EventLogSettings {
        partition_count: 1,
        retention,
        max_events_per_partition: max_events,
        max_bytes_per_partition: max_bytes,
        consumer_groups: Vec::new(),
    }
}

#[test]
fn events_expire_after_the_retention_time_oldest_first() {
    let mut h = hub_with(small(Duration::from_secs(60), 100, 1 << 20), &["d1"]);
    send(&mut h, "d1", "a", T0);
    send(&mut h, "d1", "b", T0 + Duration::from_secs(10));
    assert_eq!(
        h.pending_timers(),
        1,
        "one retention deadline per partition"
    );
    h.handle_timeout(T0 + Duration::from_secs(60) - ms(1));
    assert_eq!(seqs(&all(&h, 0)), vec![0, 1]);
    h.handle_timeout(T0 + Duration::from_secs(60));
    assert_eq!(seqs(&all(&h, 0)), vec![1]);
    assert_eq!(h.pending_timers(), 1, "re-armed for the next oldest");
    // An operation fires what is due first, as everywhere in the hub.
    send(&mut h, "d1", "c", T0 + Duration::from_secs(75));
    assert_eq!(seqs(&all(&h, 0)), vec![2]);
    let info = h.partition_info("0").unwrap();
    assert_eq!(
        (
            info.begin_sequence_number,
            info.last_enqueued_sequence_number
        ),
        (2, 2)
    );
    h.handle_timeout(T0 + Duration::from_secs(3600));
    assert_eq!(h.pending_timers(), 0);
    let info = h.partition_info("0").unwrap();
    assert!(info.is_empty);
    assert_eq!(info.begin_sequence_number, 3);
    assert_eq!(info.last_enqueued_sequence_number, 2);
}

#[test]
fn the_count_bound_drops_the_oldest() {
    let mut h = hub_with(small(Duration::from_secs(86_400), 3, 1 << 20), &["d1"]);
    for i in 0..5 {
        send(&mut h, "d1", &format!("m{i}"), T0);
    }
    assert_eq!(seqs(&all(&h, 0)), vec![2, 3, 4]);
    assert_eq!(h.partition_info("0").unwrap().begin_sequence_number, 2);
}

#[test]
fn the_byte_bound_drops_the_oldest_and_keeps_the_newest() {
    let mut h = hub_with(small(Duration::from_secs(86_400), 1000, 1 << 20), &["d1"]);
    let big = |n: usize| Message::new(vec![b'x'; n]);
    for _ in 0..5 {
        h.send_telemetry(&Origin::device("d1"), big(250 * 1024), T0)
            .unwrap();
    }
    // Each counts 250 KiB + ids + overhead: four fit in 1 MiB, five do not.
    assert_eq!(seqs(&all(&h, 0)), vec![1, 2, 3, 4]);
    let p = &h.event_log.partitions[0];
    assert!(p.bytes() <= 1 << 20);
    assert_eq!(p.len(), 4);
}

#[test]
fn reset_drops_events_but_numbering_continues() {
    let mut h = hub(&["d1"]);
    let p = partition_for_device("d1", 4);
    send(&mut h, "d1", "a", T0);
    let before = send(&mut h, "d1", "b", T0);
    h.reset();
    assert!(all(&h, p).is_empty());
    assert_eq!(h.pending_timers(), 0);
    h.create_device(Device::new("d1"), T0).unwrap();
    let after = send(&mut h, "d1", "c", T0);
    assert_eq!(after.sequence_number, before.sequence_number + 1);
    assert!(after.offset > before.offset);
    assert_eq!(seqs(&all(&h, p)), vec![2]);
}

// ---- consumer groups and partitions ----

#[test]
fn consumer_groups_match_ignoring_case() {
    let h = hub_with(
        EventLogSettings {
            consumer_groups: vec!["Analytics".into()],
            ..EventLogSettings::default()
        },
        &[],
    );
    assert_eq!(h.consumer_group("$default"), Ok("$Default"));
    assert_eq!(h.consumer_group("$DEFAULT"), Ok("$Default"));
    assert_eq!(h.consumer_group("analytics"), Ok("Analytics"));
    let e = h.consumer_group("alerts").unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("The messaging entity 'testhub/ConsumerGroups/alerts' could not be found"),
        "{text}"
    );
    assert!(text.contains("$Default, Analytics"), "{text}");
}

#[test]
fn partition_ids_are_exact_decimal_strings() {
    let h = hub(&[]);
    assert!(h.partition_info("3").is_ok());
    for bad in [
        "4",
        "01",
        " 1",
        "+1",
        "-1",
        "one",
        "",
        "99999999999999999999",
    ] {
        match h.partition_info(bad) {
            Err(EventLogError::PartitionNotFound { last: 3, .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let e = h.partition_info("7").unwrap_err().to_string();
    assert!(e.contains("It should be between 0 and 3"), "{e}");
}

#[test]
fn entity_and_partition_information() {
    let mut h = hub(&["d1"]);
    let info = h.event_hub_info();
    assert_eq!(info.name, "testhub");
    assert_eq!(info.created_at, T0, "the hub's first operation");
    assert_eq!(info.partition_ids, vec!["0", "1", "2", "3"]);
    let p = partition_for_device("d1", 4).to_string();
    let empty = h.partition_info(&p).unwrap();
    assert_eq!(
        empty,
        PartitionInfo {
            partition_id: p.clone(),
            begin_sequence_number: 0,
            last_enqueued_sequence_number: -1,
            last_enqueued_offset: "-1".into(),
            last_enqueued_time: OffsetDateTime::UNIX_EPOCH,
            is_empty: true,
        }
    );
    send(&mut h, "d1", "a", T0);
    let last = send(&mut h, "d1", "b", T0 + ms(5));
    let info = h.partition_info(&p).unwrap();
    assert_eq!(info.begin_sequence_number, 0);
    assert_eq!(info.last_enqueued_sequence_number, 1);
    assert_eq!(info.last_enqueued_offset, last.offset.to_string());
    assert_eq!(info.last_enqueued_time, T0 + ms(5));
    assert!(!info.is_empty);
}

// ---- positions ----

/// Three events in partition 0 at T0, T0+10ms, T0+20ms; returns their offsets.
fn three() -> (Hub, Vec<u64>) {
    let mut h = hub_with(small(Duration::from_secs(86_400), 100, 1 << 20), &["d1"]);
    let offsets = (0..3)
        .map(|i| send(&mut h, "d1", &format!("m{i}"), T0 + ms(10 * i)).offset)
        .collect();
    (h, offsets)
}

#[test]
fn earliest_latest_and_sequence_numbers() {
    use EventPosition::*;
    let (h, _) = three();
    let seq = |n, inclusive| SequenceNumber {
        sequence_number: n,
        inclusive,
    };
    assert_eq!(from(&h, 0, Earliest), Ok(vec![0, 1, 2]));
    assert_eq!(from(&h, 0, Latest), Ok(vec![]));
    assert_eq!(from(&h, 0, seq(1, false)), Ok(vec![2]));
    assert_eq!(from(&h, 0, seq(1, true)), Ok(vec![1, 2]));
    assert_eq!(from(&h, 0, seq(-1, false)), Ok(vec![0, 1, 2]));
    assert_eq!(from(&h, 0, seq(2, false)), Ok(vec![]), "after the last");
    assert_eq!(from(&h, 0, seq(3, true)), Ok(vec![]), "the next one");
    let e = from(&h, 0, seq(3, false)).unwrap_err();
    assert_eq!(
        e,
        EventLogError::SequenceNumberBeyondEnd {
            supplied: 3,
            last: 2
        }
    );
    assert!(
        e.to_string()
            .contains("The last sequence number in the system is '2'")
    );
    assert!(from(&h, 0, seq(i64::MAX, false)).is_err(), "no overflow");
    assert_eq!(from(&h, 0, seq(i64::MIN, true)), Ok(vec![0, 1, 2]));
}

#[test]
fn offsets_inclusive_exclusive_and_between_events() {
    let (h, o) = three();
    let off = |v: String, inclusive| EventPosition::Offset {
        offset: v,
        inclusive,
    };
    assert_eq!(from(&h, 0, off(o[1].to_string(), true)), Ok(vec![1, 2]));
    assert_eq!(from(&h, 0, off(o[1].to_string(), false)), Ok(vec![2]));
    // An offset inside an event's bytes starts at the next event.
    assert_eq!(from(&h, 0, off((o[1] + 1).to_string(), true)), Ok(vec![2]));
    assert_eq!(from(&h, 0, off(o[2].to_string(), false)), Ok(vec![]));
    assert!(matches!(
        from(&h, 0, off("12x".into(), false)),
        Err(EventLogError::InvalidOffset { .. })
    ));
    let end = h.event_log.partitions[0].next_offset;
    assert_eq!(from(&h, 0, off(end.to_string(), true)), Ok(vec![]));
    let e = from(&h, 0, off(end.to_string(), false)).unwrap_err();
    assert_eq!(
        e,
        EventLogError::OffsetBeyondEnd {
            supplied: end.to_string(),
            last: o[2].to_string()
        }
    );
}

#[test]
fn enqueued_times_exclusive_and_inclusive() {
    let (h, _) = three();
    let t = |at: OffsetDateTime, inclusive| EventPosition::EnqueuedTime {
        unix_ms: unix_ms(at),
        inclusive,
    };
    assert_eq!(from(&h, 0, t(T0 + ms(10), false)), Ok(vec![2]));
    assert_eq!(from(&h, 0, t(T0 + ms(10), true)), Ok(vec![1, 2]));
    assert_eq!(from(&h, 0, t(T0 + ms(9), false)), Ok(vec![1, 2]));
    assert_eq!(from(&h, 0, t(T0 - ms(1), false)), Ok(vec![0, 1, 2]));
    assert_eq!(
        from(&h, 0, t(T0 + ms(3_600_000), false)),
        Ok(vec![]),
        "future"
    );
}

#[test]
fn positions_before_the_first_retained_event_start_there() {
    let mut h = hub_with(small(Duration::from_secs(86_400), 2, 1 << 20), &["d1"]);
    let first = send(&mut h, "d1", "a", T0);
    for i in 0..3 {
        send(&mut h, "d1", &format!("m{i}"), T0);
    }
    let p = EventPosition::SequenceNumber {
        sequence_number: 0,
        inclusive: true,
    };
    assert_eq!(from(&h, 0, p), Ok(vec![2, 3]));
    let o = EventPosition::Offset {
        offset: first.offset.to_string(),
        inclusive: true,
    };
    assert_eq!(from(&h, 0, o), Ok(vec![2, 3]));
}

#[test]
fn reading_in_chunks_and_skipping_what_retention_dropped() {
    let mut h = hub_with(small(Duration::from_secs(86_400), 4, 1 << 20), &["d1"]);
    for i in 0..3 {
        send(&mut h, "d1", &format!("m{i}"), T0);
    }
    let mut c = h.cursor("0", &EventPosition::Earliest).unwrap();
    assert!(h.has_events(&c));
    assert_eq!(seqs(&h.read_events(&mut c, 2)), vec![0, 1]);
    assert_eq!(c.next_sequence_number(), 2);
    assert_eq!(seqs(&h.read_events(&mut c, 0)), Vec::<i64>::new());
    assert_eq!(seqs(&h.read_events(&mut c, 2)), vec![2]);
    assert!(!h.has_events(&c));
    assert!(h.read_events(&mut c, 10).is_empty());
    for i in 3..10 {
        send(&mut h, "d1", &format!("m{i}"), T0);
    }
    // 3, 4 and 5 were dropped while the reader was away.
    assert_eq!(seqs(&h.read_events(&mut c, 10)), vec![6, 7, 8, 9]);
}

#[test]
fn latest_is_pinned_when_the_reader_attaches() {
    let mut h = hub(&["d1"]);
    let p = partition_for_device("d1", 4);
    send(&mut h, "d1", "before", T0);
    let request = ReaderRequest {
        consumer_group: "$default".into(),
        partition_id: p.to_string(),
        position: EventPosition::Latest,
        owner_level: None,
    };
    let mut reader = h.attach_reader(&request, T0).unwrap();
    assert_eq!(reader.consumer_group, "$Default");
    send(&mut h, "d1", "after", T0);
    let got = h.read_events(&mut reader.cursor, 10);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.system.message_id, Some("after".into()));
}

#[test]
fn readers_check_group_partition_and_position_and_report_displacement() {
    let mut h = hub(&[]);
    let req = |group: &str, partition: &str, owner_level| ReaderRequest {
        consumer_group: group.into(),
        partition_id: partition.into(),
        position: EventPosition::Earliest,
        owner_level,
    };
    assert!(matches!(
        h.attach_reader(&req("nope", "0", None), T0),
        Err(EventLogError::ConsumerGroupNotFound { .. })
    ));
    assert!(matches!(
        h.attach_reader(&req("$Default", "9", None), T0),
        Err(EventLogError::PartitionNotFound { .. })
    ));
    let bad_position = ReaderRequest {
        position: EventPosition::SequenceNumber {
            sequence_number: 5,
            inclusive: false,
        },
        ..req("$Default", "0", None)
    };
    assert!(h.attach_reader(&bad_position, T0).is_err());
    assert_eq!(h.reader_count(), 0, "refused readers are not registered");
    let shared = h.attach_reader(&req("$Default", "0", None), T0).unwrap();
    let _ = std::iter::from_fn(|| h.poll_event()).count();
    let owner = h.attach_reader(&req("$Default", "0", Some(1)), T0).unwrap();
    let displaced: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    assert_eq!(
        displaced,
        vec![HubEvent::ReaderDisplaced { reader: shared.id }]
    );
    assert!(matches!(
        h.attach_reader(&req("$DEFAULT", "0", None), T0),
        Err(EventLogError::OwnerLevelConflict { held: 1, .. })
    ));
    h.detach_reader(owner.id);
    assert_eq!(h.reader_count(), 0);
}
