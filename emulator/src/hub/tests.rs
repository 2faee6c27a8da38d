//! Unit tests for every transition and error of the hub's rules, on a virtual clock.

use std::time::Duration;

use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::{AckMode, FeedbackStatus, HubError, Message, MessageId};
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn settings() -> HubSettings {
    HubSettings {
        hub_name: "testhub".into(),
        feedback_window: Duration::ZERO,
        ..HubSettings::default()
    }
}

fn hub_with(settings: HubSettings, devices: &[&str]) -> Hub {
    let mut hub = Hub::new(settings, 1);
    for d in devices {
        hub.create_device(Device::new(*d), T0).unwrap();
    }
    hub
}

fn hub(devices: &[&str]) -> Hub {
    hub_with(settings(), devices)
}

fn msg(id: &str, ack: AckMode) -> Message {
    let mut m = Message::new(format!("body of {id}"));
    m.system.message_id = Some(MessageId::from(id));
    m.system.ack = ack;
    m
}

fn events(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

fn settled(hub: &mut Hub) -> Vec<(u64, Outcome)> {
    events(hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::C2dSettled {
                sequence_number,
                outcome,
                ..
            } => Some((sequence_number, outcome)),
            _ => None,
        })
        .collect()
}

/// Every record the service can receive now, completing each batch.
fn drain_feedback(hub: &mut Hub, now: OffsetDateTime) -> Vec<(String, FeedbackStatus)> {
    let mut out = Vec::new();
    while let Some(d) = hub.receive_feedback(now) {
        for r in &d.batch.records {
            assert_eq!(r.description, r.status_code.as_str());
            out.push((r.original_message_id.clone(), r.status_code));
        }
        hub.complete_feedback(&d.lock_token, now).unwrap();
    }
    out
}

fn token(m: &Message) -> String {
    m.system.lock_token.clone().unwrap()
}

// ---- registry ----

#[test]
fn create_generates_keys_ids_and_etag() {
    let mut h = hub(&[]);
    let d = h.create_device(Device::new("d1"), T0).unwrap();
    assert!(d.primary_key().is_some() && d.secondary_key().is_some());
    assert_ne!(d.primary_key(), d.secondary_key());
    assert!(d.generation_id.is_some() && d.etag.is_some());
    assert_eq!(d.status, DeviceStatus::Enabled);
    assert_eq!(h.get_device("d1").unwrap(), d);
}

#[test]
fn create_keeps_given_keys_and_rejects_bad_ones() {
    let mut h = hub(&[]);
    let mut d = Device::new("d1");
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    d.authentication.symmetric_key.primary_key = Some(key.into());
    let created = h.create_device(d, T0).unwrap();
    assert_eq!(created.primary_key(), Some(key));
    let mut bad = Device::new("d2");
    bad.authentication.symmetric_key.primary_key = Some("not base64!".into());
    assert!(matches!(
        h.create_device(bad, T0),
        Err(HubError::ArgumentInvalid { .. })
    ));
}

#[test]
fn duplicate_create_and_bad_ids_fail() {
    let mut h = hub(&["d1"]);
    assert_eq!(
        h.create_device(Device::new("d1"), T0),
        Err(HubError::DeviceAlreadyExists {
            device_id: "d1".into()
        })
    );
    assert!(matches!(
        h.create_device(Device::new("a/b"), T0),
        Err(HubError::ArgumentInvalid { .. })
    ));
    assert!(matches!(
        h.get_device("nope"),
        Err(HubError::DeviceNotFound { .. })
    ));
}

#[test]
fn update_needs_matching_etag_and_changes_it() {
    let mut h = hub(&["d1"]);
    let d = h.get_device("d1").unwrap();
    let etag = d.etag.clone().unwrap();
    let mut change = d.clone();
    change.status = DeviceStatus::Disabled;
    assert!(matches!(
        h.put_device(change.clone(), Some("\"stale\""), T0),
        Err(HubError::PreconditionFailed { .. })
    ));
    let updated = h
        .put_device(change, Some(&format!("\"{etag}\"")), T0)
        .unwrap();
    assert_eq!(updated.status, DeviceStatus::Disabled);
    assert_ne!(updated.etag, Some(etag));
    assert_eq!(
        updated.generation_id, d.generation_id,
        "same device, same generation"
    );
    assert_eq!(
        updated.primary_key(),
        d.primary_key(),
        "empty keys keep the old ones"
    );
    assert!(events(&mut h).contains(&HubEvent::DeviceGone {
        device_id: "d1".into()
    }));
    let mut again = updated.clone();
    again.status = DeviceStatus::Enabled;
    assert!(h.put_device(again, Some("*"), T0).is_ok());
    let mut ghost = Device::new("ghost");
    ghost.status = DeviceStatus::Enabled;
    assert!(matches!(
        h.put_device(ghost, Some("*"), T0),
        Err(HubError::DeviceNotFound { .. })
    ));
}

#[test]
fn delete_checks_etag_and_recreate_gets_new_generation() {
    let mut h = hub(&["d1"]);
    let g1 = h.get_device("d1").unwrap().generation_id;
    assert!(matches!(
        h.delete_device("d1", Some("\"wrong\""), T0),
        Err(HubError::PreconditionFailed { .. })
    ));
    h.delete_device("d1", Some("\"*\""), T0).unwrap();
    assert!(matches!(
        h.delete_device("d1", None, T0),
        Err(HubError::DeviceNotFound { .. })
    ));
    let g2 = h
        .create_device(Device::new("d1"), T0)
        .unwrap()
        .generation_id;
    assert_ne!(g1, g2);
}

#[test]
fn list_is_sorted_and_limited() {
    let h = hub(&["c", "a", "b"]);
    let ids: Vec<_> = h.list_devices(2).into_iter().map(|d| d.device_id).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert_eq!(h.device_count(), 3);
}

// ---- enqueue ----

#[test]
fn enqueue_errors_are_distinct() {
    let mut h = hub_with(
        HubSettings {
            queue_depth: 2,
            ..settings()
        },
        &["d1"],
    );
    assert!(matches!(
        h.enqueue_c2d("nope", msg("m", AckMode::None), T0),
        Err(HubError::DeviceNotFound { .. })
    ));
    let big = Message::new(vec![0u8; 64 * 1024 + 1]);
    assert!(matches!(
        h.enqueue_c2d("d1", big, T0),
        Err(HubError::MessageTooLarge { .. })
    ));
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    h.enqueue_c2d("d1", msg("m2", AckMode::None), T0).unwrap();
    assert_eq!(
        h.enqueue_c2d("d1", msg("m3", AckMode::None), T0),
        Err(HubError::DeviceMaximumQueueDepthExceeded {
            device_id: "d1".into(),
            depth: 2
        })
    );
    let mut d = h.get_device("d1").unwrap();
    d.status = DeviceStatus::Disabled;
    h.put_device(d, Some("*"), T0).unwrap();
    h.purge_c2d("d1", T0).unwrap();
    assert!(matches!(
        h.enqueue_c2d("d1", msg("m4", AckMode::None), T0),
        Err(HubError::DeviceDisabled { .. })
    ));
}

#[test]
fn enqueue_sets_to_sequence_expiry_and_announces() {
    let mut h = hub(&["d1"]);
    events(&mut h);
    let a = h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    let b = h.enqueue_c2d("d1", msg("m2", AckMode::None), T0).unwrap();
    assert!(b.sequence_number > a.sequence_number);
    assert_eq!(a.expires_at, T0 + secs(3600), "default TTL is one hour");
    assert!(events(&mut h).contains(&HubEvent::C2dAvailable {
        device_id: "d1".into()
    }));
    let got = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(
        got.system.to.as_deref(),
        Some("/devices/d1/messages/devicebound")
    );
    assert_eq!(got.system.sequence_number, Some(a.sequence_number));
    assert_eq!(got.system.enqueued_time, Some(T0));
    assert_eq!(got.system.delivery_count, Some(0));
    assert_eq!(h.get_device("d1").unwrap().cloud_to_device_message_count, 2);
}

// ---- receive and settle ----

#[test]
fn receive_locks_in_order_and_skips_locked() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    h.enqueue_c2d("d1", msg("m2", AckMode::None), T0).unwrap();
    let first = h.receive_c2d("d1", T0).unwrap().unwrap();
    let second = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(first.system.message_id, Some("m1".into()));
    assert_eq!(second.system.message_id, Some("m2".into()));
    assert_ne!(token(&first), token(&second));
    assert_eq!(h.receive_c2d("d1", T0).unwrap(), None);
    assert!(matches!(
        h.receive_c2d("nope", T0),
        Err(HubError::DeviceNotFound { .. })
    ));
}

#[test]
fn complete_gives_positive_feedback_and_removes() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0 + secs(1)).unwrap();
    assert_eq!(settled(&mut h), vec![(1, Outcome::Completed)]);
    let fb = h.receive_feedback(T0 + secs(1)).unwrap();
    assert_eq!(fb.batch.user_id, "testhub");
    let r = &fb.batch.records[0];
    assert_eq!(r.original_message_id, "m1");
    assert_eq!(r.status_code, FeedbackStatus::Success);
    assert_eq!(r.device_id, "d1");
    assert_eq!(
        Some(r.device_generation_id.clone()),
        h.get_device("d1").unwrap().generation_id
    );
    assert_eq!(r.enqueued_time_utc, T0 + secs(1));
    assert!(h.peek_c2d("d1").unwrap().is_empty());
    assert!(matches!(
        h.complete_c2d("d1", &token(&m), T0),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
}

#[test]
fn settling_with_unknown_or_foreign_token_is_lock_lost() {
    let mut h = hub(&["d1", "d2"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    for op in [Hub::complete_c2d, Hub::reject_c2d, Hub::abandon_c2d] {
        assert!(matches!(
            op(&mut h, "d1", "00000000-0000-0000-0000-000000000000", T0),
            Err(HubError::DeviceMessageLockLost { .. })
        ));
        assert!(matches!(
            op(&mut h, "d2", &token(&m), T0),
            Err(HubError::DeviceMessageLockLost { .. })
        ));
    }
    assert!(matches!(
        h.complete_c2d("nope", &token(&m), T0),
        Err(HubError::DeviceNotFound { .. })
    ));
}

#[test]
fn reject_dead_letters_with_negative_feedback() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::Negative), T0)
        .unwrap();
    h.enqueue_c2d("d1", msg("m2", AckMode::Positive), T0)
        .unwrap();
    for _ in 0..2 {
        let m = h.receive_c2d("d1", T0).unwrap().unwrap();
        h.reject_c2d("d1", &token(&m), T0).unwrap();
    }
    assert_eq!(
        settled(&mut h),
        vec![(1, Outcome::Rejected), (2, Outcome::Rejected)]
    );
    assert_eq!(
        drain_feedback(&mut h, T0),
        vec![("m1".to_string(), FeedbackStatus::Rejected)],
        "positive ack does not report a reject"
    );
}

#[test]
fn abandon_requeues_with_count_and_dead_letters_at_max() {
    let mut h = hub_with(
        HubSettings {
            max_delivery_count: 2,
            ..settings()
        },
        &["d1"],
    );
    h.enqueue_c2d("d1", msg("m1", AckMode::Full), T0).unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.abandon_c2d("d1", &token(&m), T0).unwrap();
    let again = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(again.system.delivery_count, Some(1));
    assert_eq!(again.system.message_id, Some("m1".into()));
    h.abandon_c2d("d1", &token(&again), T0).unwrap();
    assert_eq!(h.receive_c2d("d1", T0).unwrap(), None);
    assert_eq!(settled(&mut h), vec![(1, Outcome::DeliveryCountExceeded)]);
    assert_eq!(
        drain_feedback(&mut h, T0),
        vec![("m1".to_string(), FeedbackStatus::DeliveryCountExceeded)]
    );
}

#[test]
fn lock_expiry_requeues_without_counting_by_default() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(h.poll_timeout(), Some(T0 + secs(60)));
    h.handle_timeout(T0 + secs(59));
    assert_eq!(
        h.receive_c2d("d1", T0 + secs(59)).unwrap(),
        None,
        "still locked"
    );
    h.handle_timeout(T0 + secs(60));
    assert!(matches!(
        h.complete_c2d("d1", &token(&m), T0 + secs(60)),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
    let again = h.receive_c2d("d1", T0 + secs(61)).unwrap().unwrap();
    assert_eq!(again.system.delivery_count, Some(0));
    assert_ne!(token(&again), token(&m));
}

#[test]
fn settling_after_lock_expiry_fails_even_without_handle_timeout() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert!(matches!(
        h.complete_c2d("d1", &token(&m), T0 + secs(60)),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
}

#[test]
fn every_release_rule_counts_lock_expiry_and_dropped_connections() {
    let mut h = hub_with(
        HubSettings {
            delivery_count_rule: DeliveryCountRule::EveryRelease,
            max_delivery_count: 2,
            ..settings()
        },
        &["d1"],
    );
    h.enqueue_c2d("d1", msg("m1", AckMode::Negative), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.handle_timeout(T0 + secs(60));
    let again = h.receive_c2d("d1", T0 + secs(60)).unwrap().unwrap();
    assert_eq!(again.system.delivery_count, Some(1));
    assert_ne!(token(&m), token(&again));
    h.release_c2d_lock("d1", &token(&again), T0 + secs(61))
        .unwrap();
    assert_eq!(settled(&mut h), vec![(1, Outcome::DeliveryCountExceeded)]);
}

#[test]
fn release_of_dropped_connection_requeues_without_count_by_default() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("m1", AckMode::None), T0).unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    events(&mut h);
    h.release_c2d_lock("d1", &token(&m), T0).unwrap();
    assert!(events(&mut h).contains(&HubEvent::C2dAvailable {
        device_id: "d1".into()
    }));
    let again = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(again.system.delivery_count, Some(0));
}

#[test]
fn ttl_expiry_dead_letters_enqueued_and_locked_messages() {
    let mut h = hub(&["d1"]);
    let mut short = msg("m1", AckMode::Negative);
    short.system.absolute_expiry = Some(T0 + secs(30));
    h.enqueue_c2d("d1", short, T0).unwrap();
    let mut locked = msg("m2", AckMode::Full);
    locked.system.absolute_expiry = Some(T0 + secs(40));
    h.enqueue_c2d("d1", locked, T0).unwrap();
    h.enqueue_c2d("d1", msg("m3", AckMode::Full), T0).unwrap();
    let first = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.abandon_c2d("d1", &token(&first), T0).unwrap();
    // m1 is back in the queue after the abandon; both expire whatever their state.
    h.handle_timeout(T0 + secs(45));
    assert_eq!(
        settled(&mut h),
        vec![(1, Outcome::Expired), (2, Outcome::Expired)]
    );
    let fb = drain_feedback(&mut h, T0 + secs(45));
    assert_eq!(
        fb,
        vec![
            ("m1".to_string(), FeedbackStatus::Expired),
            ("m2".to_string(), FeedbackStatus::Expired)
        ]
    );
    let left = h.peek_c2d("d1").unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message.system.message_id, Some("m3".into()));
}

#[test]
fn expiry_in_the_past_expires_at_once() {
    let mut h = hub(&["d1"]);
    let mut m = msg("old", AckMode::Full);
    m.system.absolute_expiry = Some(T0 - secs(1));
    h.enqueue_c2d("d1", m, T0).unwrap();
    assert_eq!(h.receive_c2d("d1", T0).unwrap(), None);
    assert_eq!(
        drain_feedback(&mut h, T0),
        vec![("old".to_string(), FeedbackStatus::Expired)]
    );
}

#[test]
fn purge_removes_everything_and_reports_purged_for_negative_and_full() {
    let mut h = hub(&["d1"]);
    for (id, ack) in [
        ("n", AckMode::None),
        ("p", AckMode::Positive),
        ("neg", AckMode::Negative),
        ("f", AckMode::Full),
    ] {
        h.enqueue_c2d("d1", msg(id, ack), T0).unwrap();
    }
    let locked = h.receive_c2d("d1", T0).unwrap().unwrap();
    assert_eq!(h.purge_c2d("d1", T0).unwrap(), 4);
    assert!(h.peek_c2d("d1").unwrap().is_empty());
    assert!(matches!(
        h.complete_c2d("d1", &token(&locked), T0),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
    assert_eq!(
        drain_feedback(&mut h, T0),
        vec![
            ("neg".to_string(), FeedbackStatus::Purged),
            ("f".to_string(), FeedbackStatus::Purged)
        ]
    );
    assert_eq!(h.pending_timers(), 0, "no deadline outlives its message");
    assert!(matches!(
        h.purge_c2d("nope", T0),
        Err(HubError::DeviceNotFound { .. })
    ));
    let next = h
        .enqueue_c2d("d1", msg("after", AckMode::None), T0)
        .unwrap();
    assert_eq!(next.sequence_number, 5, "sequence numbers are not reused");
}

#[test]
fn delete_device_drops_queue_and_unreceived_feedback() {
    let mut h = hub_with(
        HubSettings {
            feedback_window: secs(15),
            ..settings()
        },
        &["d1", "d2"],
    );
    h.enqueue_c2d("d1", msg("a", AckMode::Full), T0).unwrap();
    h.enqueue_c2d("d2", msg("b", AckMode::Full), T0).unwrap();
    for d in ["d1", "d2"] {
        let m = h.receive_c2d(d, T0).unwrap().unwrap();
        h.complete_c2d(d, &token(&m), T0).unwrap();
    }
    h.enqueue_c2d("d1", msg("c", AckMode::Full), T0).unwrap();
    events(&mut h);
    h.delete_device("d1", None, T0).unwrap();
    let ev = events(&mut h);
    assert!(ev.contains(&HubEvent::C2dSettled {
        device_id: "d1".into(),
        sequence_number: 2,
        outcome: Outcome::DeviceDeleted
    }));
    assert!(ev.contains(&HubEvent::DeviceGone {
        device_id: "d1".into()
    }));
    h.handle_timeout(T0 + secs(15));
    assert_eq!(
        drain_feedback(&mut h, T0 + secs(15)),
        vec![("b".to_string(), FeedbackStatus::Success)]
    );
}

// ---- feedback queue ----

#[test]
fn feedback_waits_for_window_or_full_batch() {
    let mut h = hub_with(
        HubSettings {
            feedback_window: secs(15),
            feedback_batch_size: 3,
            ..settings()
        },
        &["d1"],
    );
    let complete = |h: &mut Hub, id: &str| {
        h.enqueue_c2d("d1", msg(id, AckMode::Positive), T0).unwrap();
        let m = h.receive_c2d("d1", T0).unwrap().unwrap();
        h.complete_c2d("d1", &token(&m), T0).unwrap();
    };
    complete(&mut h, "a");
    assert!(h.receive_feedback(T0).is_none(), "window still open");
    complete(&mut h, "b");
    complete(&mut h, "c");
    let full = h.receive_feedback(T0).unwrap();
    assert_eq!(full.batch.records.len(), 3, "a full batch goes at once");
    h.complete_feedback(&full.lock_token, T0).unwrap();
    complete(&mut h, "d");
    assert!(h.receive_feedback(T0 + secs(14)).is_none());
    let late = h.receive_feedback(T0 + secs(15)).unwrap();
    assert_eq!(late.batch.records[0].original_message_id, "d");
}

#[test]
fn flush_releases_pending_feedback_now() {
    let mut h = hub_with(
        HubSettings {
            feedback_window: secs(15),
            ..settings()
        },
        &["d1"],
    );
    h.enqueue_c2d("d1", msg("a", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0).unwrap();
    h.flush_feedback(T0);
    assert!(events(&mut h).contains(&HubEvent::FeedbackAvailable));
    assert!(h.receive_feedback(T0).is_some());
}

#[test]
fn feedback_abandon_lock_expiry_max_delivery_and_ttl() {
    let mut h = hub_with(
        HubSettings {
            feedback_max_delivery_count: 2,
            feedback_lock_duration: secs(10),
            feedback_ttl: secs(120),
            ..settings()
        },
        &["d1"],
    );
    h.enqueue_c2d("d1", msg("a", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0).unwrap();
    let first = h.receive_feedback(T0).unwrap();
    assert!(
        h.receive_feedback(T0).is_none(),
        "locked batches are invisible"
    );
    h.abandon_feedback(&first.lock_token, T0).unwrap();
    assert!(matches!(
        h.complete_feedback(&first.lock_token, T0),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
    let second = h.receive_feedback(T0).unwrap();
    assert_eq!(second.delivery_count, 1);
    // The lock runs out: second release reaches the max, so the batch is dropped.
    h.handle_timeout(T0 + secs(10));
    assert!(h.receive_feedback(T0 + secs(10)).is_none());

    h.enqueue_c2d("d1", msg("b", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0).unwrap();
    h.handle_timeout(T0 + secs(120));
    assert!(
        h.receive_feedback(T0 + secs(120)).is_none(),
        "expired batch is gone"
    );
}

#[test]
fn feedback_reject_drops_the_batch() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("a", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0).unwrap();
    let b = h.receive_feedback(T0).unwrap();
    h.reject_feedback(&b.lock_token, T0).unwrap();
    h.handle_timeout(T0 + secs(3600));
    assert!(h.receive_feedback(T0 + secs(3600)).is_none());
}

#[test]
fn large_outcomes_split_into_batches_of_the_batch_size() {
    let mut h = hub_with(
        HubSettings {
            feedback_window: secs(15),
            feedback_batch_size: 64,
            queue_depth: 200,
            ..settings()
        },
        &["d1"],
    );
    for i in 0..150 {
        h.enqueue_c2d("d1", msg(&format!("m{i}"), AckMode::Negative), T0)
            .unwrap();
    }
    h.purge_c2d("d1", T0).unwrap();
    h.flush_feedback(T0);
    let mut sizes = Vec::new();
    while let Some(b) = h.receive_feedback(T0) {
        sizes.push(b.batch.records.len());
        h.complete_feedback(&b.lock_token, T0).unwrap();
    }
    assert_eq!(sizes, vec![64, 64, 22]);
}

// ---- telemetry, reset, timers ----

#[test]
fn d2c_keeps_the_last_n_and_checks_size() {
    let mut h = hub_with(
        HubSettings {
            d2c_retention: 2,
            ..settings()
        },
        &["d1"],
    );
    let d1 = event_log::Origin::device("d1");
    for i in 0..3 {
        h.send_telemetry(&d1, Message::new(format!("t{i}")), T0)
            .unwrap();
    }
    let kept: Vec<_> = h
        .d2c_messages("d1")
        .unwrap()
        .into_iter()
        .map(|r| (r.sequence_number, r.message().body.clone()))
        .collect();
    assert_eq!(kept, vec![(2, b"t1".to_vec()), (3, b"t2".to_vec())]);
    assert!(matches!(
        h.send_telemetry(&d1, Message::new(vec![0u8; 256 * 1024 + 1]), T0),
        Err(HubError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        h.send_telemetry(&event_log::Origin::device("nope"), Message::new("x"), T0),
        Err(HubError::DeviceNotFound { .. })
    ));
}

#[test]
fn reset_empties_everything() {
    let mut h = hub(&["d1"]);
    h.enqueue_c2d("d1", msg("a", AckMode::Full), T0).unwrap();
    h.reset();
    assert_eq!(h.device_count(), 0);
    assert_eq!(h.pending_timers(), 0);
    assert!(h.receive_feedback(T0).is_none());
}

#[test]
fn timers_stay_proportional_to_live_messages() {
    let mut h = hub_with(
        HubSettings {
            queue_depth: 50,
            ..settings()
        },
        &[],
    );
    for d in 0..100 {
        let id = format!("d{d}");
        h.create_device(Device::new(id.as_str()), T0).unwrap();
        for i in 0..50 {
            h.enqueue_c2d(&id, msg(&format!("m{i}"), AckMode::None), T0)
                .unwrap();
        }
    }
    assert_eq!(h.pending_timers(), 100 * 50);
    for d in 0..100 {
        let id = format!("d{d}");
        let m = h.receive_c2d(&id, T0).unwrap().unwrap();
        h.complete_c2d(&id, &token(&m), T0).unwrap();
    }
    assert_eq!(
        h.pending_timers(),
        100 * 49,
        "completed messages leave no deadline behind"
    );
}

#[test]
fn connection_state_is_recorded() {
    let mut h = hub(&["d1"]);
    h.set_connection_state("d1", true, T0);
    assert_eq!(
        h.get_device("d1").unwrap().connection_state,
        iothub_protocol::registry::ConnectionState::Connected
    );
}

#[test]
fn a_closed_feedback_link_releases_without_counting() {
    let mut h = hub_with(
        HubSettings {
            feedback_max_delivery_count: 1,
            ..settings()
        },
        &["d1"],
    );
    h.enqueue_c2d("d1", msg("a", AckMode::Positive), T0)
        .unwrap();
    let m = h.receive_c2d("d1", T0).unwrap().unwrap();
    h.complete_c2d("d1", &token(&m), T0).unwrap();
    let b = h.receive_feedback(T0).unwrap();
    h.release_feedback_lock(&b.lock_token, T0).unwrap();
    let again = h
        .receive_feedback(T0)
        .expect("released, not dropped at max delivery 1");
    assert_eq!(again.delivery_count, 0);
    assert!(matches!(
        h.release_feedback_lock(&b.lock_token, T0),
        Err(HubError::DeviceMessageLockLost { .. })
    ));
}
