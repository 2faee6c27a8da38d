//! C2D over HTTPS end to end: the emulator's send route, device receive and settlement, the
//! feedback each outcome produces (feedback window 0), lock expiry and TTL on the virtual clock,
//! purge, and D2C single and batch.

use crate::support::http::{Client, Resp, start_http};
use crate::support::{owner_token, policy_token, stored_device_token};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_emulator::RunningEmulator;
use iothub_emulator::credentials::SERVICE;
use iothub_protocol::Message;
use serde_json::{Value, json};

async fn send(c: &Client, svc: &str, id: &str, msg_id: &str, ack: &str) -> Resp {
    let r = c
        .post(&format!("/_emulator/devices/{id}/messages"))
        .auth(svc)
        .header("iothub-messageid", msg_id)
        .header("iothub-ack", ack)
        .body(format!("body of {msg_id}"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// Receives one feedback batch, completes it, and returns its records.
async fn feedback(c: &Client, svc: &str) -> Vec<Value> {
    let r = c
        .get("/messages/serviceBound/feedback")
        .auth(svc)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.microsoft.iothub.feedback.json")
    );
    let lock = r.header("etag").unwrap().trim_matches('"').to_owned();
    let done = c
        .delete(&format!("/messages/serviceBound/feedback/{lock}"))
        .auth(svc)
        .send()
        .await;
    assert_eq!(done.status, 204);
    r.json().as_array().unwrap().clone()
}

fn statuses(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            assert_eq!(r["description"], r["statusCode"]);
            (
                r["originalMessageId"].as_str().unwrap().to_owned(),
                r["statusCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn receive(c: &Client, dev: &str, id: &str) -> Resp {
    c.get(&format!(
        "/devices/{id}/messages/deviceBound?api-version=2020-09-30"
    ))
    .auth(dev)
    .header("iothub-to", &format!("/devices/{id}/messages/devicebound"))
    .send()
    .await
}

fn lock_of(r: &Resp) -> String {
    let etag = r.header("etag").expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    etag.trim_matches('"').to_owned()
}

async fn setup() -> (RunningEmulator, Client, String, String) {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    let svc = policy_token(&emu, SERVICE);
    let dev = stored_device_token(&emu, "d1");
    (emu, c, svc, dev)
}

#[tokio::test]
async fn receive_complete_reject_abandon_and_their_feedback() {
    let (emu, c, svc, dev) = setup().await;
    assert_eq!(receive(&c, &dev, "d1").await.status, 204);
    assert_eq!(
        c.get("/messages/serviceBound/feedback")
            .auth(&svc)
            .send()
            .await
            .status,
        204
    );

    // Complete (Node spells the path lower-case and sends the lock unquoted in If-Match).
    let sent = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .header("iothub-messageid", "m1")
        .header("iothub-correlationid", "corr")
        .header("iothub-userid", "svc-user")
        .header("iothub-ack", "full")
        .header("iothub-expiry", "2099-01-01T00:00:00Z")
        .header("iothub-contenttype", "application/json")
        .header("iothub-contentencoding", "utf-8")
        .header("iothub-app-color", "blue green")
        .body(r#"{"on":true}"#)
        .send()
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let s = sent.json();
    assert_eq!(s["messageId"], "m1");
    assert_eq!(s["sequenceNumber"], 1);
    assert_eq!(s["expiresAt"], "2099-01-01T00:00:00.000Z");

    let r = receive(&c, &dev, "d1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, br#"{"on":true}"#);
    assert_eq!(r.header("iothub-messageid"), Some("m1"));
    assert_eq!(r.header("iothub-correlationid"), Some("corr"));
    assert_eq!(r.header("iothub-userid"), Some("svc-user"));
    assert_eq!(r.header("iothub-sequencenumber"), Some("1"));
    assert_eq!(r.header("iothub-deliverycount"), Some("0"));
    assert_eq!(r.header("iothub-expiry"), Some("2099-01-01T00:00:00.000Z"));
    assert!(r.header("iothub-enqueuedtime").unwrap().ends_with('Z'));
    assert_eq!(
        r.header("iothub-to"),
        Some("/devices/d1/messages/devicebound")
    );
    assert_eq!(r.header("iothub-ack"), Some("full"));
    assert_eq!(r.header("contenttype"), Some("application/json"));
    assert_eq!(r.header("contentencoding"), Some("utf-8"));
    assert_eq!(r.header("iothub-app-color"), Some("blue green"));
    let lock = lock_of(&r);
    // Locked: nothing else to receive.
    assert_eq!(receive(&c, &dev, "d1").await.status, 204);
    let done = c
        .delete(&format!(
            "/devices/d1/messages/devicebound/{lock}?api-version=2021-04-12"
        ))
        .auth(&dev)
        .header("if-match", &lock)
        .send()
        .await;
    assert_eq!(done.status, 204);
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("m1".into(), "Success".into())]
    );
    // Settling twice is a lost lock.
    c.delete(&format!("/devices/d1/messages/deviceBound/{lock}"))
        .auth(&dev)
        .send()
        .await
        .assert_hub_error(412, "DeviceMessageLockLost");

    // Reject (bare `reject` query key, quoted lock in If-Match as C sends it).
    send(&c, &svc, "d1", "m2", "negative").await;
    let r = receive(&c, &dev, "d1").await;
    let lock = lock_of(&r);
    let done = c
        .delete(&format!(
            "/devices/d1/messages/deviceBound/{lock}?api-version=2016-11-14&reject"
        ))
        .auth(&dev)
        .header("if-match", &format!("\"{lock}\""))
        .send()
        .await;
    assert_eq!(done.status, 204);
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("m2".into(), "Rejected".into())]
    );

    // Abandon: the message comes back with its delivery count up; no feedback until it ends.
    send(&c, &svc, "d1", "m3", "positive").await;
    let lock = lock_of(&receive(&c, &dev, "d1").await);
    let done = c
        .post(&format!("/devices/d1/messages/deviceBound/{lock}/abandon"))
        .auth(&dev)
        .send()
        .await;
    assert_eq!(done.status, 204);
    assert_eq!(
        c.get("/messages/serviceBound/feedback")
            .auth(&svc)
            .send()
            .await
            .status,
        204
    );
    let again = receive(&c, &dev, "d1").await;
    assert_eq!(again.header("iothub-messageid"), Some("m3"));
    assert_eq!(again.header("iothub-deliverycount"), Some("1"));
    let lock2 = lock_of(&again);
    assert_ne!(lock, lock2);
    c.post(&format!("/devices/d1/messages/deviceBound/{lock}/abandon"))
        .auth(&dev)
        .send()
        .await
        .assert_hub_error(412, "DeviceMessageLockLost");
    assert_eq!(
        c.delete(&format!("/devices/d1/messages/deviceBound/{lock2}"))
            .auth(&dev)
            .send()
            .await
            .status,
        204
    );

    // Feedback abandon: the batch is offered again under a new lock, then completed.
    let r = c
        .get("/messages/serviceBound/feedback")
        .auth(&svc)
        .send()
        .await;
    let fb_lock = lock_of(&r);
    let ab = c
        .post(&format!(
            "/messages/serviceBound/feedback/{fb_lock}/abandon"
        ))
        .auth(&svc)
        .send()
        .await;
    assert_eq!(ab.status, 204);
    c.delete(&format!("/messages/serviceBound/feedback/{fb_lock}"))
        .auth(&svc)
        .send()
        .await
        .assert_hub_error(412, "DeviceMessageLockLost");
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("m3".into(), "Success".into())]
    );

    // Bad lock tokens.
    for bad in ["nonsense", "00000000-0000-0000-0000-000000000000"] {
        c.delete(&format!("/devices/d1/messages/deviceBound/{bad}"))
            .auth(&dev)
            .send()
            .await
            .assert_hub_error(412, "DeviceMessageLockLost");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn odd_property_values_are_percent_encoded_in_headers() {
    let (emu, c, _svc, dev) = setup().await;
    let mut m = Message::new("x");
    m.properties.insert("city", "Zürich");
    emu.hub().run(|h, now| h.enqueue_c2d("d1", m, now)).unwrap();
    let r = receive(&c, &dev, "d1").await;
    assert_eq!(r.header("iothub-app-city"), Some("Z%C3%BCrich"));
    emu.shutdown().await;
}

#[tokio::test]
async fn lock_expiry_and_ttl_on_the_virtual_clock() {
    let (emu, c, svc, dev) = setup().await;
    let own = owner_token(&emu);
    let advance = |secs: u64| {
        c.post(&format!("/_emulator/clock/advance?seconds={secs}"))
            .auth(&own)
            .send()
    };

    // Lock expiry: after 61 s the lock is lost and the message can be received again.
    send(&c, &svc, "d1", "m1", "full").await;
    let lock = lock_of(&receive(&c, &dev, "d1").await);
    let peek = c.get("/_emulator/devices/d1/c2d").auth(&own).send().await;
    assert_eq!(peek.json()[0]["state"], "locked");
    assert_eq!(peek.json()[0]["lockToken"], lock.as_str());
    let r = advance(61).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["advancedSeconds"], 61.0);
    c.delete(&format!("/devices/d1/messages/deviceBound/{lock}"))
        .auth(&dev)
        .send()
        .await
        .assert_hub_error(412, "DeviceMessageLockLost");
    let again = receive(&c, &dev, "d1").await;
    assert_eq!(again.header("iothub-messageid"), Some("m1"));
    assert_ne!(lock_of(&again), lock);

    // TTL: the default (1 hour) runs out, with Expired feedback; an explicit expiry too.
    let hub_now = emu.hub().now();
    let exp = iothub_protocol::time_format::format_millis(hub_now + time::Duration::seconds(30));
    let r = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .header("iothub-messageid", "m2")
        .header("iothub-ack", "negative")
        .header("iothub-expiry", &exp)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    advance(31).await;
    let peek = c.get("/_emulator/devices/d1/c2d").auth(&own).send().await;
    let ids: Vec<String> = peek
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m1"]);
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("m2".into(), "Expired".into())]
    );
    advance(3600).await;
    assert_eq!(receive(&c, &dev, "d1").await.status, 204);
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("m1".into(), "Expired".into())]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn purge_and_the_send_route_errors() {
    let (emu, c, svc, dev) = setup().await;
    send(&c, &svc, "d1", "a", "full").await;
    send(&c, &svc, "d1", "b", "none").await;
    send(&c, &svc, "d1", "c", "none").await;
    let r = c.delete("/devices/d1/commands").auth(&svc).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"totalMessagesPurged": 3, "deviceId": "d1"})
    );
    assert_eq!(receive(&c, &dev, "d1").await.status, 204);
    assert_eq!(
        statuses(&feedback(&c, &svc).await),
        [("a".into(), "Purged".into())]
    );
    c.delete("/devices/ghost/commands")
        .auth(&svc)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");

    // A message without an id gets a GUID.
    let r = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messageId"].as_str().unwrap().len(), 36);

    // Every header name is a valid property name (HTTP tokens use the hub's alphabet), so
    // only values can be wrong here.
    for (h, v) in [
        ("iothub-ack", "sometimes"),
        ("iothub-expiry", "tomorrow"),
        ("iothub-messageid", "has space"),
    ] {
        c.post("/_emulator/devices/d1/messages")
            .auth(&svc)
            .header(h, v)
            .body("x")
            .send()
            .await
            .assert_hub_error(400, "ArgumentInvalid");
    }
    c.post("/_emulator/devices/ghost/messages")
        .auth(&svc)
        .body("x")
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");
    c.post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .body(vec![b'x'; 64 * 1024 + 1])
        .send()
        .await
        .assert_hub_error(413, "MessageTooLarge");
    emu.shutdown().await;
}

#[tokio::test]
async fn d2c_single_and_batch() {
    let (emu, c, _svc, dev) = setup().await;
    let own = owner_token(&emu);
    let r = c
        .post("/devices/d1/messages/events?api-version=2021-04-12")
        .auth(&dev)
        .header("iothub-to", "/devices/d1/messages/events")
        .header("IoTHub-MessageId", "t1")
        .header("iothub-contenttype", "application/json")
        .header("iothub-app-temp", "21.5")
        .body(r#"{"t":21.5}"#)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    let batch = json!([
        {"body": STANDARD.encode("one"), "properties": {"iothub-app-k": "v1", "iothub-messageid": "b1"}},
        {"body": "two", "base64Encoded": false, "properties": {"iothub-app-k": "v2"}}
    ]);
    let r = c
        .post("/devices/d1/messages/events")
        .auth(&dev)
        .header("content-type", "application/vnd.microsoft.iothub.json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    let got = c.get("/_emulator/devices/d1/d2c").auth(&own).send().await;
    assert_eq!(got.status, 200);
    let list = got.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["messageId"], "t1");
    assert_eq!(list[0]["bodyText"], r#"{"t":21.5}"#);
    assert_eq!(list[0]["contentType"], "application/json");
    assert_eq!(list[0]["properties"]["temp"], "21.5");
    assert_eq!(list[1]["bodyText"], "one");
    assert_eq!(list[1]["messageId"], "b1");
    assert_eq!(list[2]["bodyText"], "two");
    assert_eq!(list[2]["properties"]["k"], "v2");
    assert_eq!(list[2]["sequenceNumber"], 3);

    // Oversize single and batch, malformed batch: refused, nothing recorded.
    c.post("/devices/d1/messages/events")
        .auth(&dev)
        .body(vec![b'x'; 256 * 1024 + 1])
        .send()
        .await
        .assert_hub_error(413, "MessageTooLarge");
    let half = STANDARD.encode(vec![0u8; 128 * 1024 + 1]);
    c.post("/devices/d1/messages/events")
        .auth(&dev)
        .header("content-type", "application/vnd.microsoft.iothub.json")
        .body(serde_json::to_vec(&json!([{"body": half}, {"body": half}])).unwrap())
        .send()
        .await
        .assert_hub_error(413, "MessageTooLarge");
    c.post("/devices/d1/messages/events")
        .auth(&dev)
        .header("content-type", "application/vnd.microsoft.iothub.json")
        .body("[{\"body\":")
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    let got = c.get("/_emulator/devices/d1/d2c").auth(&own).send().await;
    assert_eq!(got.json().as_array().unwrap().len(), 3);
    emu.shutdown().await;
}
