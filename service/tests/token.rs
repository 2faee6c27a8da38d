//! SAS token renewal: with a short lifetime, the client keeps its connection and links usable
//! by putting new tokens on the same connection (the emulator detaches a link whose token ran
//! out, which would release an unsettled feedback batch and make its settlement fail).

mod common;

use std::time::Duration;

use common::*;
use iothub_protocol::AckMode;

#[tokio::test]
async fn short_lived_tokens_are_renewed_on_the_same_connection() {
    let emulator = emulator().await;
    emulator.create_device("dev-token").unwrap();
    let client = builder_for(&emulator, &emulator.service_connection_string())
        .token_lifetime(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut feedback = client.feedback().await.unwrap();

    // A batch received now and held unsettled across several token lifetimes.
    client
        .send_c2d("dev-token", &message("held", AckMode::Positive))
        .await
        .unwrap();
    let m = receive_wait(&emulator, "dev-token").await;
    complete(&emulator, "dev-token", &m);
    let held = next_batch(&mut feedback, 10).await;
    assert_eq!(held.records()[0].original_message_id, "held");

    // Meanwhile the connection keeps sending, and the registry keeps answering.
    for i in 0..8 {
        let id = format!("tok-{i}");
        client
            .send_c2d("dev-token", &message(&id, AckMode::Positive))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        let m = receive_wait(&emulator, "dev-token").await;
        complete(&emulator, "dev-token", &m);
        client.get_device("dev-token").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }

    // The feedback link that received the held batch is still attached: settling works and
    // the batch is not handed out again.
    held.complete().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let batch = next_batch(&mut feedback, 10).await;
        for r in batch.records() {
            assert_ne!(r.original_message_id, "held", "the held batch came back");
            seen.push(r.original_message_id.clone());
        }
        batch.complete().await.unwrap();
    }
    seen.sort();
    let want: Vec<String> = (0..8).map(|i| format!("tok-{i}")).collect();
    assert_eq!(seen, want);
    if let Ok(b) = tokio::time::timeout(Duration::from_millis(500), feedback.recv()).await {
        panic!("unexpected feedback: {b:?}");
    }
    client.close().await;
    emulator.shutdown().await;
}
