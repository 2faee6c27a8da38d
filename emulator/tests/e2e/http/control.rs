//! Health, readiness, the CA download, the control API and WebSocket upgrades, end to end.

use std::time::Duration;

use crate::support::http::{Client, start_http};
use crate::support::{owner_token, policy_token, stored_device_token};
use iothub_emulator::Emulator;
use iothub_emulator::credentials::SERVICE;
use iothub_emulator::hub::HubSettings;
use serde_json::json;

#[tokio::test]
async fn health_ready_and_ca_on_both_ports() {
    let (emu, c) = start_http().await;
    for r in [c.plain_get("/health").await, c.get("/health").send().await] {
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "ok");
        assert!(r.header("x-emulator-version").is_some());
    }
    for r in [c.plain_get("/ready").await, c.get("/Ready/").send().await] {
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["status"], "ready");
        assert_eq!(v["endpoints"]["https"], c.https_port);
        assert_eq!(v["endpoints"]["http"], c.http_port);
    }
    let ca = c.plain_get("/_emulator/ca.pem").await;
    assert_eq!(ca.status, 200);
    assert_eq!(ca.text(), emu.ca_pem());
    // Not ready while shutting down.
    emu.context().info.set_ready(false);
    assert_eq!(c.plain_get("/ready").await.status, 503);
    emu.shutdown().await;
}

#[tokio::test]
async fn control_routes() {
    let (emu, c) = start_http().await;
    let own = owner_token(&emu);
    let svc = policy_token(&emu, SERVICE);
    emu.create_device("d1").unwrap();
    emu.create_device("d2").unwrap();
    let dev = stored_device_token(&emu, "d1");
    for id in ["m1", "m2"] {
        let r = c
            .post("/_emulator/devices/d1/messages")
            .auth(&svc)
            .header("iothub-messageid", id)
            .header("iothub-app-k", "v")
            .body("hello")
            .send()
            .await;
        assert_eq!(r.status, 200);
    }
    let got = c
        .get("/devices/d1/messages/deviceBound")
        .auth(&dev)
        .send()
        .await;
    assert_eq!(got.status, 200);

    // Devices with their counts.
    let r = c.get("/_emulator/devices").auth(&own).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list[0]["deviceId"], "d1");
    assert_eq!(list[0]["cloudToDeviceMessageCount"], 2);
    assert_eq!(list[0]["lockedMessageCount"], 1);
    assert_eq!(list[0]["connectionState"], "Disconnected");
    assert_eq!(list[1]["deviceId"], "d2");
    assert_eq!(list[1]["cloudToDeviceMessageCount"], 0);

    // Peek: states, delivery counts, properties, bodies.
    let r = c.get("/_emulator/devices/d1/c2d").auth(&own).send().await;
    let msgs = r.json();
    assert_eq!(msgs[0]["messageId"], "m1");
    assert_eq!(msgs[0]["state"], "locked");
    assert!(msgs[0]["lockedUntil"].is_string());
    assert_eq!(msgs[0]["deliveryCount"], 0);
    assert_eq!(msgs[0]["sequenceNumber"], 1);
    assert!(msgs[0]["expiresAt"].is_string());
    assert_eq!(msgs[1]["state"], "enqueued");
    assert_eq!(msgs[1]["properties"], json!({"k": "v"}));
    assert_eq!(msgs[1]["bodyText"], "hello");
    assert_eq!(msgs[1]["body"], "aGVsbG8=");
    c.get("/_emulator/devices/ghost/c2d")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");
    let r = c.get("/_emulator/devices/d2/d2c").auth(&own).send().await;
    assert_eq!(r.json(), json!([]));

    // Clock: bad values, then a real move.
    for bad in ["", "?seconds=-1", "?seconds=abc", "?seconds=1e300"] {
        c.post(&format!("/_emulator/clock/advance{bad}"))
            .auth(&own)
            .send()
            .await
            .assert_hub_error(400, "ArgumentInvalid");
    }
    let before = emu.hub().now();
    let r = c
        .post("/_emulator/clock/advance?seconds=90")
        .auth(&own)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(emu.hub().now() - before >= time::Duration::seconds(90));
    assert!(r.json()["now"].as_str().unwrap().ends_with('Z'));

    // Disconnect: counts the connections it closed.
    let conn = emu
        .hub()
        .register_connection("d1", iothub_emulator::driver::DeviceProtocol::Mqtt);
    let r = c
        .post("/_emulator/devices/d1/disconnect")
        .auth(&own)
        .send()
        .await;
    assert_eq!(r.json(), json!({"deviceId": "d1", "connectionsClosed": 1}));
    assert!(conn.cancelled().is_cancelled());
    drop(conn);
    c.post("/_emulator/devices/ghost/disconnect")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");

    // Reset: everything goes.
    let r = c.post("/_emulator/reset").auth(&own).send().await;
    assert_eq!(r.json(), json!({"devicesRemoved": 2}));
    let r = c.get("/_emulator/devices").auth(&own).send().await;
    assert_eq!(r.json(), json!([]));
    emu.shutdown().await;
}

#[tokio::test]
async fn flush_releases_feedback_held_by_the_window() {
    let emu = Emulator::builder()
        .hub_settings(HubSettings {
            feedback_window: Duration::from_secs(600),
            ..HubSettings::default()
        })
        .start()
        .await
        .unwrap();
    let c = Client::new(&emu);
    let own = owner_token(&emu);
    let svc = policy_token(&emu, SERVICE);
    emu.create_device("d1").unwrap();
    let dev = stored_device_token(&emu, "d1");
    let r = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .header("iothub-ack", "positive")
        .header("iothub-messageid", "m1")
        .send()
        .await;
    assert_eq!(r.status, 200);
    let got = c
        .get("/devices/d1/messages/deviceBound")
        .auth(&dev)
        .send()
        .await;
    let lock = got.header("etag").unwrap().trim_matches('"').to_owned();
    let done = c
        .delete(&format!("/devices/d1/messages/deviceBound/{lock}"))
        .auth(&dev)
        .send()
        .await;
    assert_eq!(done.status, 204);
    let fb = || c.get("/messages/serviceBound/feedback").auth(&svc).send();
    assert_eq!(fb().await.status, 204);
    let r = c.post("/_emulator/feedback/flush").auth(&own).send().await;
    assert_eq!(r.json(), json!({"feedbackAvailable": true}));
    let r = fb().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["originalMessageId"], "m1");

    // This emulator's clock is real: advancing it is refused.
    c.post("/_emulator/clock/advance?seconds=1")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(400, "InvalidOperation");
    emu.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_choose_the_subprotocol() {
    let (emu, c) = start_http().await;
    let upgrade = |path: &'static str, proto: &'static str| {
        c.get(path)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", proto)
            .send()
    };
    let r = upgrade("/$iothub/websocket", "mqtt").await;
    assert_eq!(r.status, 101, "{}", r.text());
    assert_eq!(r.header("sec-websocket-protocol"), Some("mqtt"));
    let r = upgrade("/$iothub/websocket", "AMQPWSB10").await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("AMQPWSB10"));
    let r = upgrade("/$servicebus/websocket/", "foo, amqpwsb10").await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("amqpwsb10"));
    upgrade("/$servicebus/websocket", "mqtt")
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    upgrade("/$iothub/websocket", "stomp")
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.get("/$iothub/websocket")
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    emu.shutdown().await;
}
