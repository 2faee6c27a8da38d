//! C2D and telemetry over HTTPS polling.

use iothub_device::{AckMode, CompletionMode, Error, Message, Transport};
use iothub_protocol::FeedbackStatus;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_complete_reject_and_abandon_produce_their_feedback() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Https)
        .completion_mode(CompletionMode::Manual)
        .connect()
        .await
        .unwrap();
    let mut first = c2d("m1", AckMode::Full);
    first.system.correlation_id = Some("c1".into());
    first.system.content_type = Some("text/plain".into());
    first.properties.insert("Property", "PropMsg_0");
    first.properties.insert("spaced", "a b&c=d/e");
    enqueue(&emu, "d1", first);
    enqueue(&emu, "d1", c2d("m2", AckMode::Full));
    enqueue(&emu, "d1", c2d("m3", AckMode::Full));

    let m1 = recv(&client).await;
    assert_eq!(m1.transport(), Transport::Https);
    assert_eq!(mid(&m1), "m1");
    assert_eq!(m1.body_str(), Some("body of m1"));
    assert_eq!(
        m1.correlation_id().map(|c| c.to_string()).as_deref(),
        Some("c1")
    );
    assert_eq!(m1.content_type(), Some("text/plain"));
    assert_eq!(m1.ack(), AckMode::Full);
    assert_eq!(m1.delivery_count(), Some(0));
    assert!(m1.lock_token().is_some_and(|t| !t.is_empty()));
    // HTTP header names are case-insensitive: property names arrive lower-cased.
    assert_eq!(m1.properties().get("property"), Some("PropMsg_0"));
    assert_eq!(m1.properties().get("spaced"), Some("a b&c=d/e"));
    m1.complete().await.expect("completed");
    let fb = feedback(&emu, 1).await;
    assert_eq!(
        (fb[0].original_message_id.as_str(), fb[0].status_code),
        ("m1", FeedbackStatus::Success)
    );

    let m2 = recv(&client).await;
    assert_eq!(mid(&m2), "m2");
    m2.reject().await.expect("rejected");
    let fb = feedback(&emu, 1).await;
    assert_eq!(
        (fb[0].original_message_id.as_str(), fb[0].status_code),
        ("m2", FeedbackStatus::Rejected)
    );

    let m3 = recv(&client).await;
    assert_eq!(mid(&m3), "m3");
    m3.abandon().await.expect("abandoned");
    let again = recv(&client).await;
    assert_eq!(mid(&again), "m3");
    assert_eq!(again.delivery_count(), Some(1));
    again.complete().await.expect("completed");
    let fb = feedback(&emu, 1).await;
    assert_eq!(
        (fb[0].original_message_id.as_str(), fb[0].status_code),
        ("m3", FeedbackStatus::Success)
    );
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_automatic_completion_and_its_limits() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Https).await;
    enqueue(&emu, "d1", c2d("m1", AckMode::Positive));
    let m = recv(&client).await;
    assert_eq!(mid(&m), "m1");
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].status_code, FeedbackStatus::Success);
    assert_eq!(
        m.reject().await,
        Err(Error::AlreadyCompleted {
            operation: "reject"
        })
    );
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;
    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_lock_lost_is_typed() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Https)
        .completion_mode(CompletionMode::Manual)
        .connect()
        .await
        .unwrap();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    let m = recv(&client).await;
    // Settle it behind the client's back, then try again.
    let token = m.lock_token().unwrap().to_owned();
    emu.hub()
        .run(|h, now| h.complete_c2d("d1", &token, now))
        .unwrap();
    let err = m.complete().await.unwrap_err();
    assert!(matches!(err, Error::DeviceMessageLockLost { .. }), "{err}");
    assert_eq!(
        err.code(),
        Some(iothub_device::ErrorCode::DeviceMessageLockLost)
    );
    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_telemetry_is_recorded_with_its_properties() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Https).await;
    let mut m = Message::new("21.5");
    m.system.message_id = Some("t-1".into());
    m.system.correlation_id = Some("c-1".into());
    m.system.content_type = Some("text/plain".into());
    m.system.content_encoding = Some("utf-8".into());
    m.properties.insert("unit", "celsius");
    client.send_event(m).await.expect("acknowledged");

    let recorded = emu.hub().read(|h| h.d2c_messages("d1")).unwrap();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0].message();
    assert_eq!(r.body, b"21.5");
    assert_eq!(r.system.message_id, Some("t-1".into()));
    assert_eq!(r.system.correlation_id, Some("c-1".into()));
    assert_eq!(r.system.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.system.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(r.properties.get("unit"), Some("celsius"));

    // What a header cannot carry is refused before sending.
    let mut bad = Message::new("x");
    bad.properties.insert("k", "line\nbreak");
    assert!(matches!(
        client.send_event(bad).await,
        Err(Error::ArgumentInvalid { .. })
    ));

    client.close().await;
    emu.shutdown().await;
}
