//! C2D and telemetry over MQTT (TLS and WebSocket).

use std::time::Duration;

use iothub_device::{AckMode, CompletionMode, Error, Message, Transport};
use iothub_protocol::FeedbackStatus;
use time::OffsetDateTime;

use crate::common::*;

/// A message with every kind of property: all settable system properties, feedback request,
/// and application properties whose values need percent-encoding in the topic.
fn rich_message() -> (Message, OffsetDateTime) {
    let expiry = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid")
        + Duration::from_secs(3600);
    let mut m = Message::new("hello ☃ {\"a\": 1}");
    m.system.message_id = Some("mid-1".into());
    m.system.correlation_id = Some("corr-1".into());
    m.system.user_id = Some("service-user".into());
    m.system.content_type = Some("application/json".into());
    m.system.content_encoding = Some("utf-8".into());
    m.system.absolute_expiry = Some(expiry);
    m.system.ack = AckMode::Full;
    m.properties.insert("Property", "PropMsg_0");
    m.properties.insert("k&y", "a b&c=d/e%f ü ☃");
    m.properties.insert("empty", "");
    (m, expiry)
}

async fn receives_every_property_kind(transport: Transport) {
    let emu = start().await;
    let client = device(&emu, "d1", transport).await;
    let (m, expiry) = rich_message();
    enqueue(&emu, "d1", m);

    let got = recv(&client).await;
    assert_eq!(got.transport(), transport);
    assert_eq!(got.body_str(), Some("hello ☃ {\"a\": 1}"));
    assert_eq!(mid(&got), "mid-1");
    assert_eq!(
        got.correlation_id().map(|c| c.to_string()).as_deref(),
        Some("corr-1")
    );
    assert_eq!(got.user_id(), Some("service-user"));
    assert_eq!(got.content_type(), Some("application/json"));
    assert_eq!(got.content_encoding(), Some("utf-8"));
    assert_eq!(got.expiry(), Some(expiry));
    assert_eq!(got.ack(), AckMode::Full);
    assert_eq!(
        got.system_properties().to.as_deref(),
        Some("/devices/d1/messages/devicebound")
    );
    let props: Vec<(&str, &str)> = got.properties().iter().collect();
    assert_eq!(
        props,
        [
            ("Property", "PropMsg_0"),
            ("k&y", "a b&c=d/e%f ü ☃"),
            ("empty", "")
        ]
    );
    // Automatic completion: Success feedback.
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].original_message_id, "mid-1");
    assert_eq!(fb[0].status_code, FeedbackStatus::Success);

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_receives_every_property_kind() {
    receives_every_property_kind(Transport::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_receives_every_property_kind() {
    receives_every_property_kind(Transport::MqttWebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_completion_completes_when_taken() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Mqtt).await;
    enqueue(&emu, "d1", c2d("m1", AckMode::Positive));
    enqueue(&emu, "d1", c2d("m2", AckMode::Positive));

    let first = recv(&client).await;
    assert_eq!(mid(&first), "m1");
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].original_message_id, "m1");
    assert_eq!(fb[0].status_code, FeedbackStatus::Success);
    // complete() is a no-op in automatic mode.
    first.complete().await.expect("no-op");

    let second = recv(&client).await;
    assert_eq!(mid(&second), "m2");
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].original_message_id, "m2");
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_completion_completes_on_complete_in_arrival_order() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Mqtt)
        .completion_mode(CompletionMode::Manual)
        .connect()
        .await
        .unwrap();
    enqueue(&emu, "d1", c2d("m1", AckMode::Full));
    enqueue(&emu, "d1", c2d("m2", AckMode::Full));
    enqueue(&emu, "d1", c2d("m3", AckMode::Full));
    let m1 = recv(&client).await;
    let m2 = recv(&client).await;
    let m3 = recv(&client).await;
    assert_eq!([mid(&m1), mid(&m2), mid(&m3)], ["m1", "m2", "m3"]);

    // Taken but not completed: still locked, no feedback.
    no_feedback(&emu, Duration::from_millis(300)).await;
    assert_eq!(queue(&emu, "d1").len(), 3);
    assert!(queue(&emu, "d1").iter().all(|q| q.is_locked()));

    // Completing m2 first holds its PUBACK back until m1 is settled (MQTT-4.6.0-2).
    m2.complete().await.unwrap();
    no_feedback(&emu, Duration::from_millis(300)).await;
    assert_eq!(queue(&emu, "d1").len(), 3);
    m1.complete().await.unwrap();
    let fb = feedback(&emu, 2).await;
    let ids: Vec<&str> = fb.iter().map(|r| r.original_message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert!(fb.iter().all(|r| r.status_code == FeedbackStatus::Success));

    m3.complete().await.unwrap();
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].original_message_id, "m3");
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_abandon_are_not_supported_over_mqtt() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Mqtt)
        .completion_mode(CompletionMode::Manual)
        .connect()
        .await
        .unwrap();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    let m = recv(&client).await;
    assert_eq!(
        m.reject().await,
        Err(Error::NotSupported {
            operation: "reject",
            transport: Transport::Mqtt
        })
    );
    enqueue(&emu, "d1", c2d("m2", AckMode::None));
    let m = recv(&client).await;
    let err = m.abandon().await.unwrap_err();
    assert!(matches!(
        err,
        Error::NotSupported {
            operation: "abandon",
            ..
        }
    ));
    assert!(err.to_string().contains("Transport::Https"), "{err}");
    // Neither message was settled: both stay locked until the connection ends.
    assert_eq!(queue(&emu, "d1").len(), 2);

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_recorded_with_its_properties() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Mqtt).await;
    let mut m = Message::new(r#"{"temperature": 21.5}"#);
    m.system.message_id = Some("t-1".into());
    m.system.correlation_id = Some("c-1".into());
    m.system.content_type = Some("application/json".into());
    m.system.content_encoding = Some("utf-8".into());
    m.properties.insert("alert", "false");
    m.properties.insert("note", "a b&c=d/e ü");
    client.send_event(m).await.expect("acknowledged");
    client
        .send_event(Message::new("second"))
        .await
        .expect("acknowledged");

    let recorded = emu.hub().read(|h| h.d2c_messages("d1")).unwrap();
    assert_eq!(recorded.len(), 2);
    let r = &recorded[0].message();
    assert_eq!(r.body, br#"{"temperature": 21.5}"#);
    assert_eq!(r.system.message_id, Some("t-1".into()));
    assert_eq!(r.system.correlation_id, Some("c-1".into()));
    assert_eq!(r.system.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.system.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(r.properties.get("alert"), Some("false"));
    assert_eq!(r.properties.get("note"), Some("a b&c=d/e ü"));
    assert_eq!(recorded[1].message().body, b"second");

    // Too large for the hub: refused before sending.
    let err = client
        .send_event(Message::new(vec![b'x'; 256 * 1024 + 1]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { max: 262144, .. }),
        "{err}"
    );
    assert_eq!(err.code(), Some(iothub_device::ErrorCode::MessageTooLarge));

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_host_name_takes_the_socket_and_host_name_the_token() {
    // The emulator answers as `localhost` for hub `myhub`, so tokens for
    // myhub.azure-devices.net are its own.
    let emu = iothub_emulator::Emulator::builder()
        .hub_name("myhub")
        .start()
        .await
        .unwrap();
    let cs = emu.create_device("d1").unwrap();
    let key = cs.split("SharedAccessKey=").nth(1).unwrap();
    let cs = format!(
        "HostName=myhub.azure-devices.net;DeviceId=d1;SharedAccessKey={key};GatewayHostName=localhost"
    );
    let client = builder(&emu, &cs, Transport::Mqtt).connect().await.unwrap();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    assert_eq!(mid(&recv(&client).await), "m1");
    client.close().await;
    emu.shutdown().await;
}
