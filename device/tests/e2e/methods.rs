//! Direct methods answered by the device client over MQTT (TLS and WebSocket).

use std::time::Duration;

use iothub_device::{Error, MethodResponse, Transport};
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::Identity;
use iothub_protocol::method::{JsonPayload, MethodCall};

use crate::common::*;

async fn call(emu: &RunningEmulator, name: &str, json: &str, connect: u32) -> (i32, String) {
    let call = MethodCall {
        connect_timeout_secs: connect,
        ..MethodCall::new(name, JsonPayload::from_json(json).unwrap())
    };
    let pending = emu
        .hub()
        .invoke_method(&Identity::device("d1"), call)
        .expect("invocation accepted");
    let r = tokio::time::timeout(Duration::from_secs(20), pending.outcome())
        .await
        .expect("the call ended in time")
        .expect("the device answered");
    (r.status, r.payload.as_str().to_owned())
}

async fn handlers_answer(transport: Transport) {
    let emu = start().await;
    let client = device(&emu, "d1", transport).await;
    client
        .on_method("reboot", |req| async move {
            MethodResponse::new(200, &format!(r#"{{"got":{}}}"#, req.payload.as_str()))
        })
        .await
        .expect("subscribed");
    for payload in ["null", r#""""#, r#""foo""#, "{}", r#"{"k1":"v1"}"#, "[1,2]"] {
        assert_eq!(
            call(&emu, "reboot", payload, 0).await,
            (200, format!(r#"{{"got":{payload}}}"#))
        );
    }
    // No handler for it: 501 at once, not a timeout.
    assert_eq!(call(&emu, "other", "1", 0).await.0, 501);
    client
        .on_any_method(|req| async move { MethodResponse::new(-1, &format!("\"{}\"", req.name)) })
        .await
        .unwrap();
    assert_eq!(call(&emu, "other", "1", 0).await, (-1, "\"other\"".into()));

    // After the hub drops the connection, the client reconnects and listens again.
    let d1 = Identity::device("d1");
    let before = emu.hub().read(|h| h.method_target(&d1));
    emu.hub().disconnect_device("d1");
    // A call made while the old connection is still closing would fail with 404104, as on
    // the hub; wait for the new connection's subscription (restored from the session).
    until("listening again", || {
        let now = emu.hub().read(|h| h.method_target(&d1));
        now.is_some() && now != before
    })
    .await;
    assert_eq!(
        call(&emu, "reboot", "7", 20).await,
        (200, r#"{"got":7}"#.into())
    );
    client.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn method_handlers_answer_over_mqtt() {
    handlers_answer(Transport::Mqtt).await;
}

#[tokio::test]
async fn method_handlers_answer_over_mqtt_websocket() {
    handlers_answer(Transport::MqttWebSocket).await;
}

#[tokio::test]
async fn methods_are_not_supported_over_https() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Https).await;
    let e = client
        .on_method("m", |_| async { MethodResponse::status(200) })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    client.close().await;
    emu.shutdown().await;
}
