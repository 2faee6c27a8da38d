//! Feedback: a record for each outcome the ack mode asks about, and explicit settlement of
//! batches (complete removes, abandon and drop bring the batch back).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use iothub_emulator::Emulator;
use iothub_protocol::{AckMode, FeedbackRecord, FeedbackStatus};
use iothub_service::FeedbackReceiver;
use time::OffsetDateTime;

/// Collects records until `want` distinct message ids are seen, completing each batch.
async fn collect(feedback: &mut FeedbackReceiver, want: usize) -> HashMap<String, FeedbackRecord> {
    let mut seen = HashMap::new();
    while seen.len() < want {
        let batch = next_batch(feedback, 15).await;
        for r in batch.records() {
            assert!(
                seen.insert(r.original_message_id.clone(), r.clone())
                    .is_none(),
                "a record came twice: {r:?}"
            );
        }
        batch.complete().await.unwrap();
    }
    seen
}

/// Asserts that no batch arrives within `ms`.
async fn assert_quiet(feedback: &mut FeedbackReceiver, ms: u64) {
    if let Ok(batch) = tokio::time::timeout(Duration::from_millis(ms), feedback.recv()).await {
        panic!("unexpected feedback: {batch:?}");
    }
}

#[tokio::test]
async fn each_outcome_gives_the_feedback_its_ack_mode_asks_for() {
    let emulator = start(Emulator::builder().virtual_clock(true)).await;
    emulator.create_device("dev-fb").unwrap();
    let generation = emulator
        .hub()
        .run(|h, _| h.get_device("dev-fb"))
        .unwrap()
        .generation_id
        .unwrap();
    let client = client(&emulator);
    let mut feedback = client.feedback().await.unwrap();
    let start = OffsetDateTime::now_utc() - Duration::from_secs(1);

    // Device outcomes: (message id, ack, complete?)
    let cases = [
        ("m-success", AckMode::Full, true),
        ("m-rejected", AckMode::Full, false),
        ("m-positive-success", AckMode::Positive, true),
        ("m-positive-rejected", AckMode::Positive, false),
        ("m-negative-success", AckMode::Negative, true),
        ("m-negative-rejected", AckMode::Negative, false),
        ("m-none", AckMode::None, true),
    ];
    for (id, ack, completes) in cases {
        client.send_c2d("dev-fb", &message(id, ack)).await.unwrap();
        let m = receive_wait(&emulator, "dev-fb").await;
        assert_eq!(m.system.message_id, Some(id.into()));
        if completes {
            complete(&emulator, "dev-fb", &m);
        } else {
            reject(&emulator, "dev-fb", &m);
        }
    }
    // Settle those batches before moving the clock: a batch still locked to us when the clock
    // passes its lock duration would be delivered again, as on the hub.
    let mut records = collect(&mut feedback, 4).await;
    assert_quiet(&mut feedback, 300).await;

    // Expiry, moved along by the virtual clock.
    for (id, ack) in [
        ("m-expired", AckMode::Full),
        ("m-positive-expired", AckMode::Positive),
    ] {
        let mut m = message(id, ack);
        m.system.absolute_expiry = Some(OffsetDateTime::now_utc() + Duration::from_secs(30));
        client.send_c2d("dev-fb", &m).await.unwrap();
    }
    assert!(emulator.hub().advance_clock(Duration::from_secs(45)));
    records.extend(collect(&mut feedback, 1).await);

    let expect = [
        ("m-success", FeedbackStatus::Success),
        ("m-rejected", FeedbackStatus::Rejected),
        ("m-positive-success", FeedbackStatus::Success),
        ("m-negative-rejected", FeedbackStatus::Rejected),
        ("m-expired", FeedbackStatus::Expired),
    ];
    for (id, status) in expect {
        let r = records
            .get(id)
            .unwrap_or_else(|| panic!("no feedback for {id}: {records:?}"));
        assert_eq!(r.status_code, status, "{id}");
        assert_eq!(r.description, status.as_str(), "{id}");
        assert_eq!(r.device_id, "dev-fb");
        assert_eq!(r.device_generation_id, generation);
        assert!(r.enqueued_time_utc >= start, "{r:?}");
    }
    assert_eq!(records.len(), 5, "{records:?}");
    assert_quiet(&mut feedback, 500).await;

    feedback.close().await;
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn batches_are_settled_only_when_asked() {
    let emulator = emulator().await;
    emulator.create_device("dev-settle").unwrap();
    let client = client(&emulator);
    let mut feedback = client.feedback().await.unwrap();

    client
        .send_c2d("dev-settle", &message("m-settle", AckMode::Full))
        .await
        .unwrap();
    let m = receive_wait(&emulator, "dev-settle").await;
    complete(&emulator, "dev-settle", &m);

    // Abandon: it comes back.
    let batch = next_batch(&mut feedback, 15).await;
    assert_eq!(batch.records()[0].original_message_id, "m-settle");
    assert_eq!(batch.user_id, emulator.config().hub.hub_name);
    assert!(!batch.lock_token().is_empty());
    batch.abandon().await.unwrap();

    // Dropped without settling: it comes back too (released, never completed).
    let batch = next_batch(&mut feedback, 15).await;
    assert_eq!(batch.records()[0].original_message_id, "m-settle");
    drop(batch);

    // Complete: gone for good.
    let batch = next_batch(&mut feedback, 15).await;
    assert_eq!(batch.records()[0].original_message_id, "m-settle");
    batch.complete().await.unwrap();
    assert_quiet(&mut feedback, 500).await;

    // The stream form sees the next batch.
    client
        .send_c2d("dev-settle", &message("m-stream", AckMode::Positive))
        .await
        .unwrap();
    let m = receive_wait(&emulator, "dev-settle").await;
    complete(&emulator, "dev-settle", &m);
    let mut stream = Box::pin(feedback.into_stream());
    let batch = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.records()[0].original_message_id, "m-stream");
    assert_eq!(batch.records()[0].status_code, FeedbackStatus::Success);
    batch.complete().await.unwrap();

    // After close, the stream ends with Closed.
    client.close().await;
    let end = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .unwrap();
    assert!(
        matches!(end, Some(Err(iothub_service::Error::Closed)) | None),
        "{end:?}"
    );
    emulator.shutdown().await;
}
