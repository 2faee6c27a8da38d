//! Registry REST over real TLS: CRUD, list, statistics, and every error the SDKs rely on.

use crate::support::http::start_http;
use crate::support::{owner_token, policy_token};
use iothub_emulator::credentials::{REGISTRY_READ, REGISTRY_READ_WRITE};
use serde_json::json;

#[tokio::test]
async fn create_get_update_delete_as_the_sdks_call_them() {
    let (emu, c) = start_http().await;
    let t = policy_token(&emu, REGISTRY_READ_WRITE);

    // Python SDK create: empty symmetricKey, no If-Match, expects 200 and generated keys.
    let created = c
        .put("/devices/Dev-1?api-version=2021-04-12")
        .auth(&t)
        .json(&json!({
            "deviceId": "Dev-1", "status": "enabled",
            "authentication": {"symmetricKey": {}, "type": "sas"},
            "capabilities": {"iotEdge": false}
        }))
        .send()
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let d = created.json();
    assert_eq!(d["deviceId"], "Dev-1");
    let etag = d["etag"].as_str().unwrap().to_owned();
    assert_eq!(created.header("etag"), Some(format!("\"{etag}\"").as_str()));
    assert!(
        !d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(created.header("x-emulator-version").is_some());

    // Read back, with a re-cased path and a trailing slash; the id keeps its case.
    let got = c.get("/DEVICES/Dev-1/").auth(&t).send().await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["generationId"], d["generationId"]);
    c.get("/devices/dev-1")
        .auth(&t)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");

    // Update with the current etag (quoted, as C# sends it), then with "*" (Node), then bare *.
    let mut upd = d.clone();
    upd["status"] = json!("disabled");
    let r = c
        .put("/devices/Dev-1")
        .auth(&t)
        .header("if-match", &format!("\"{etag}\""))
        .json(&upd)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "disabled");
    assert_ne!(r.json()["etag"], d["etag"]);
    for m in ["\"*\"", "*"] {
        let r = c
            .put("/devices/Dev-1")
            .auth(&t)
            .header("if-match", m)
            .json(&d)
            .send()
            .await;
        assert_eq!(r.status, 200);
    }

    // A stale etag is 412.
    c.put("/devices/Dev-1")
        .auth(&t)
        .header("if-match", &format!("\"{etag}\""))
        .json(&d)
        .send()
        .await
        .assert_hub_error(412, "PreconditionFailed");
    c.delete("/devices/Dev-1")
        .auth(&t)
        .header("if-match", "\"stale\"")
        .send()
        .await
        .assert_hub_error(412, "PreconditionFailed");

    // Delete with If-Match: "*" is 204, and the device is gone.
    let r = c
        .delete("/devices/Dev-1?api-version=2021-04-12")
        .auth(&t)
        .header("if-match", "\"*\"")
        .send()
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    c.delete("/devices/Dev-1")
        .auth(&t)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");
    c.put("/devices/Dev-1")
        .auth(&t)
        .header("if-match", "*")
        .json(&d)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");
    emu.shutdown().await;
}

#[tokio::test]
async fn duplicate_create_is_409_with_the_node_error_shape() {
    let (emu, c) = start_http().await;
    let t = owner_token(&emu);
    let body = json!({"deviceId": "d1", "authentication": {"type": "sas",
        "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}});
    assert_eq!(
        c.put("/devices/d1")
            .auth(&t)
            .json(&body)
            .send()
            .await
            .status,
        200
    );
    let r = c.put("/devices/d1").auth(&t).json(&body).send().await;
    r.assert_hub_error(409, "DeviceAlreadyExists");
    // Node splits Message on ';' and ':' to find the code.
    let msg = r.json()["Message"].as_str().unwrap().to_owned();
    let code = msg.split(';').next().unwrap().split(':').nth(1).unwrap();
    assert_eq!(code, "DeviceAlreadyExists");
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_and_ids_are_400() {
    let (emu, c) = start_http().await;
    let t = owner_token(&emu);
    c.put("/devices/d1")
        .auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.put("/devices/d1")
        .auth(&t)
        .json(&json!({"status": "enabled"}))
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    let r = c
        .put("/devices/d1")
        .auth(&t)
        .json(&json!({"deviceId": "d2"}))
        .send()
        .await;
    r.assert_hub_error(400, "ArgumentInvalid");
    assert!(r.text().contains("differs"));
    c.put("/devices/d1")
        .auth(&t)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"deviceId":"d1"}"#)
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    // Invalid device ids in the path: a space, and an over-long id.
    c.get("/devices/bad%20id")
        .auth(&t)
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.get(&format!("/devices/{}", "a".repeat(129)))
        .auth(&t)
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    // A device id using the odd characters the registry allows, percent-encoded in the path.
    let id = "a+b%c#d?e";
    let enc = "a%2Bb%25c%23d%3Fe";
    let r = c
        .put(&format!("/devices/{enc}"))
        .auth(&t)
        .json(&json!({ "deviceId": id }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deviceId"], id);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_with_top_statistics_and_h2() {
    let (emu, c) = start_http().await;
    let t = policy_token(&emu, REGISTRY_READ);
    for id in ["c", "a", "b"] {
        emu.create_device(id).unwrap();
    }
    let mut d = emu.hub().read(|h| h.get_device("b")).unwrap();
    d.status = iothub_protocol::registry::DeviceStatus::Disabled;
    emu.hub()
        .run(|h, now| h.put_device(d, Some("*"), now))
        .unwrap();

    // C# calls /devices/?top=N, Node /devices/?api-version=...
    let r = c
        .get("/devices/?top=2&api-version=2021-04-12")
        .auth(&t)
        .send()
        .await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    for q in [
        "",
        "?top=5000",
        "?top=99999999999999999999999",
        "?top=%20%33",
    ] {
        let r = c.get(&format!("/devices{q}")).auth(&t).send().await;
        assert_eq!(r.json().as_array().unwrap().len(), 3, "{q}");
    }
    // Not a whole number from 1 up: the hub's error, not a silent default.
    for q in [
        "?top=0",
        "?top=x",
        "?top=abc",
        "?top=1e20",
        "?top=-1",
        "?top=",
        "?top=1.5",
    ] {
        let r = c.get(&format!("/devices{q}")).auth(&t).send().await;
        r.assert_hub_error(400, "ArgumentInvalid");
    }

    let r = c
        .get("/statistics/devices?api-version=1999-01-01")
        .auth(&t)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1})
    );

    // The same over h2, negotiated by ALPN.
    let r = c.get("/Devices/a").auth(&t).send_h2().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["deviceId"], "a");
    emu.shutdown().await;
}
