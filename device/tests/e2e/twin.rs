//! The device twin over MQTT (TLS and WebSocket): read, report, follow desired patches; HTTPS
//! refuses.

use iothub_device::{Error, Transport};
use iothub_emulator::hub::Identity;
use iothub_protocol::twin::TwinWrite;
use serde_json::json;

use crate::common::*;

fn set_desired(emu: &iothub_emulator::RunningEmulator, id: &str, desired: serde_json::Value) {
    let w = TwinWrite::from_json(&json!({"properties": {"desired": desired}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&Identity::device(id), &w, None, now))
        .unwrap();
}

async fn twin_round_trip(transport: Transport) {
    let emu = start().await;
    let client = device(&emu, "tw", transport).await;
    let twin = client.twin().await.unwrap();
    assert_eq!(twin.desired_version(), Some(1));
    assert_eq!(twin.reported_version(), Some(1));

    let v = client
        .update_reported(&json!({"battery": 80, "fw": {"v": 1}}))
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(
        client.update_reported(&json!({"fw": null})).await.unwrap(),
        3
    );
    let e = client
        .update_reported(&json!({"bad key": 1}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");
    let twin = client.twin().await.unwrap();
    assert_eq!(twin.reported["battery"], json!(80));
    assert!(twin.reported.get("fw").is_none());

    let mut updates = client.desired_updates().unwrap();
    // A GET round trip after subscribing: the SUBSCRIBE is handled before it.
    client.twin().await.unwrap();
    set_desired(&emu, "tw", json!({"speed": 1}));
    set_desired(&emu, "tw", json!({"speed": null, "mode": "eco"}));
    let first = updates.next().await.unwrap();
    assert_eq!((first.version, &first.patch["speed"]), (2, &json!(1)));
    let second = updates.next().await.unwrap();
    assert_eq!(second.version, 3);
    assert_eq!(second.patch["speed"], serde_json::Value::Null);
    client.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn twin_over_mqtt() {
    twin_round_trip(Transport::Mqtt).await;
}

#[tokio::test]
async fn twin_over_mqtt_websocket() {
    twin_round_trip(Transport::MqttWebSocket).await;
}

#[tokio::test]
async fn twin_over_https_is_unsupported() {
    let emu = start().await;
    let client = device(&emu, "th", Transport::Https).await;
    assert!(matches!(
        client.twin().await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        client.desired_updates(),
        Err(Error::Unsupported { .. })
    ));
    client.close().await;
    emu.shutdown().await;
}
