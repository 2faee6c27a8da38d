//! Many sends in flight at once on the one connection: 10,000 messages to 200 devices, all
//! enqueued, all completed by the devices and all fed back, none lost or duplicated.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use iothub_emulator::Emulator;
use iothub_emulator::hub::HubSettings;
use iothub_protocol::{AckMode, FeedbackStatus};

const DEVICES: usize = 200;
const MESSAGES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_sends_are_all_accepted_and_fed_back() {
    let emulator = start(Emulator::builder().hub_settings(HubSettings {
        queue_depth: 100,
        feedback_window: Duration::from_millis(20),
        feedback_batch_size: 500,
        ..settings()
    }))
    .await;
    let devices: Vec<String> = (0..DEVICES).map(|i| format!("load-{i:03}")).collect();
    for d in &devices {
        emulator.create_device(d).unwrap();
    }
    let client = client(&emulator);
    let mut feedback = client.feedback().await.unwrap();

    // The devices: complete whatever arrives, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let hub = emulator.hub().clone();
    let drainer = {
        let stop = stop.clone();
        let devices = devices.clone();
        tokio::spawn(async move {
            let mut completed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for d in &devices {
                    completed += hub.run(|h, now| {
                        let mut n = 0;
                        while let Ok(Some(m)) = h.receive_c2d(d, now) {
                            let token = m.system.lock_token.clone().unwrap_or_default();
                            h.complete_c2d(d, &token, now).unwrap();
                            n += 1;
                        }
                        n
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            completed
        })
    };

    // The feedback: every record once, all Success.
    let collector = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut batches = 0;
        while seen.len() < MESSAGES {
            let batch = next_batch(&mut feedback, 60).await;
            batches += 1;
            for r in batch.records() {
                assert_eq!(r.status_code, FeedbackStatus::Success, "{r:?}");
                assert!(
                    seen.insert(r.original_message_id.clone()),
                    "duplicate record {r:?}"
                );
            }
            batch.complete().await.unwrap();
        }
        (seen, batches, feedback)
    });

    let started = Instant::now();
    let sends = (0..MESSAGES).map(|i| {
        let client = client.clone();
        let device = devices[i % DEVICES].clone();
        async move {
            client
                .send_c2d(&device, &message(&format!("load-m-{i}"), AckMode::Full))
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let sent = started.elapsed();
    let failures: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures[0]
    );

    let (seen, batches, mut feedback) = tokio::time::timeout(Duration::from_secs(120), collector)
        .await
        .expect("all feedback in time")
        .unwrap();
    let fed_back = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let completed = drainer.await.unwrap();
    assert_eq!(completed, MESSAGES);
    let want: HashSet<String> = (0..MESSAGES).map(|i| format!("load-m-{i}")).collect();
    assert_eq!(seen, want);
    if let Ok(b) = tokio::time::timeout(Duration::from_millis(300), feedback.recv()).await {
        panic!("unexpected extra feedback: {b:?}");
    }
    eprintln!(
        "{MESSAGES} sends accepted in {sent:?}; all fed back in {fed_back:?} ({batches} batches)"
    );
    client.close().await;
    emulator.shutdown().await;
}
