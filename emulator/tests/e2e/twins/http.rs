//! Twins, queries and bulk registry writes over the service REST API.

use crate::support::http::start_http;
use crate::support::{create_device, owner_token, policy_token};
use hyper::Method;
use iothub_emulator::credentials::{REGISTRY_READ, SERVICE};
use serde_json::{Value, json};

#[tokio::test]
async fn twin_rest_get_patch_put_with_etags() {
    let (emu, c) = start_http().await;
    create_device(&emu, "t1");
    let t = owner_token(&emu);

    let got = c
        .get("/twins/t1?api-version=2021-04-12")
        .auth(&t)
        .send()
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let twin = got.json();
    assert_eq!(twin["deviceId"], "t1");
    assert_eq!(twin["version"], json!(2));
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(got.header("etag"), Some("\"AAAAAAAAAAE=\""));
    assert_eq!(twin["properties"]["desired"]["$version"], json!(1));
    assert_eq!(twin["connectionState"], "Disconnected");

    // PATCH with the current etag, quoted as the SDKs send it.
    let r = c
        .req(Method::PATCH, "/twins/t1")
        .auth(&t)
        .header("if-match", "\"AAAAAAAAAAE=\"")
        .json(&json!({"tags": {"floor": 3, "site": {"city": "Oslo"}}, "properties": {"desired": {"fw": "1.0"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let twin = r.json();
    assert_eq!(twin["tags"]["floor"], json!(3));
    assert_eq!(twin["properties"]["desired"]["fw"], "1.0");
    assert_eq!(twin["properties"]["desired"]["$version"], json!(2));
    let etag = twin["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag, "AAAAAAAAAAE=");

    // A stale etag: 412 PreconditionFailed; `*` always passes.
    let r = c
        .req(Method::PATCH, "/twins/t1")
        .auth(&t)
        .header("if-match", "\"AAAAAAAAAAE=\"")
        .json(&json!({"tags": {"floor": 4}}))
        .send()
        .await;
    r.assert_hub_error(412, "PreconditionFailed");
    let r = c
        .req(Method::PATCH, "/twins/t1")
        .auth(&t)
        .header("if-match", "\"*\"")
        .json(&json!({"tags": {"site": null}}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tags"], json!({"floor": 3}));

    // PUT replaces tags and desired.
    let r = c
        .put("/twins/t1")
        .auth(&t)
        .header("if-match", "*")
        .json(&json!({"tags": {"new": true}, "properties": {"desired": {"mode": "eco"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let twin = r.json();
    assert_eq!(twin["tags"], json!({"new": true}));
    assert_eq!(twin["properties"]["desired"]["mode"], "eco");
    assert!(twin["properties"]["desired"].get("fw").is_none());

    // The service cannot write reported properties; unknown devices are 404.
    let r = c
        .req(Method::PATCH, "/twins/t1")
        .auth(&t)
        .json(&json!({"properties": {"reported": {"x": 1}}}))
        .send()
        .await;
    r.assert_hub_error(400, "ArgumentInvalid");
    let r = c.get("/twins/ghost").auth(&t).send().await;
    r.assert_hub_error(404, "DeviceNotFound");
    // Either registry or service permissions read twins.
    let r = c
        .get("/twins/t1")
        .auth(&policy_token(&emu, SERVICE))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .get("/twins/t1")
        .auth(&policy_token(&emu, REGISTRY_READ))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .req(Method::PATCH, "/twins/t1")
        .auth(&policy_token(&emu, REGISTRY_READ))
        .json(&json!({"tags": {"a": 1}}))
        .send()
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    emu.shutdown().await;
}

async fn query_all(
    c: &crate::support::http::Client,
    t: &str,
    q: &str,
    size: usize,
) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut req = c
            .post("/devices/query?api-version=2021-04-12")
            .auth(t)
            .header("x-ms-max-item-count", &size.to_string());
        if let Some(tok) = &token {
            req = req.header("x-ms-continuation", tok);
        }
        let r = req.json(&json!({"query": q})).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        pages += 1;
        items.extend(r.json().as_array().expect("array").iter().cloned());
        match r.header("x-ms-continuation") {
            Some(next) => token = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

#[tokio::test]
async fn twin_rest_query_pages_until_the_continuation_header_is_gone() {
    let (emu, c) = start_http().await;
    let t = owner_token(&emu);
    for i in 0..25 {
        let id = format!("q{i:02}");
        create_device(&emu, &id);
        let r = c
            .req(Method::PATCH, &format!("/twins/{id}"))
            .auth(&t)
            .json(&json!({"tags": {"even": i % 2 == 0, "n": i}}))
            .send()
            .await;
        assert_eq!(r.status, 200);
    }
    let r = c
        .post("/devices/query")
        .auth(&t)
        .header("x-ms-max-item-count", "10")
        .json(&json!({"query": "SELECT * FROM devices"}))
        .send()
        .await;
    assert_eq!(r.header("x-ms-item-type"), Some("twin"));
    assert!(r.header("x-ms-continuation").is_some());

    let (items, pages) = query_all(&c, &t, "SELECT * FROM devices WHERE tags.even = true", 5).await;
    assert_eq!(items.len(), 13);
    assert_eq!(pages, 3);
    assert!(items.iter().all(|i| i["tags"]["even"] == json!(true)));
    let (items, _) = query_all(
        &c,
        &t,
        "SELECT COUNT() AS n FROM devices WHERE tags.n >= 20",
        100,
    )
    .await;
    assert_eq!(items, [json!({"n": 5})]);

    let r = c
        .post("/devices/query")
        .auth(&t)
        .json(&json!({"query": "SELECT * FROM devices ORDER BY deviceId"}))
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ORDER"), "{}", r.text());
    emu.shutdown().await;
}

#[tokio::test]
async fn twin_rest_bulk_creates_updates_and_deletes_with_per_device_errors() {
    let (emu, c) = start_http().await;
    let t = owner_token(&emu);
    create_device(&emu, "exists");
    let r = c
        .post("/devices?api-version=2021-04-12")
        .auth(&t)
        .json(&json!([
            {"id": "b1", "importMode": "create", "authentication": {"type": "sas", "symmetricKey": {}}, "tags": {"k": 1}},
            {"id": "b2", "importMode": "create"},
            {"id": "exists", "importMode": "create"},
        ]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["isSuccessful"], json!(false));
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    assert_eq!(v["errors"][0]["deviceId"], "exists");
    assert_eq!(v["errors"][0]["errorCode"], "DeviceAlreadyExists");
    let twin = c.get("/twins/b1").auth(&t).send().await.json();
    assert_eq!(twin["tags"], json!({"k": 1}));

    let r = c
        .post("/devices")
        .auth(&t)
        .json(&json!([
            {"id": "b1", "importMode": "Update", "status": "disabled"},
            {"id": "b2", "importMode": "Delete"},
        ]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["isSuccessful"], json!(true));
    assert_eq!(
        c.get("/devices/b1").auth(&t).send().await.json()["status"],
        "disabled"
    );
    c.get("/devices/b2")
        .auth(&t)
        .send()
        .await
        .assert_hub_error(404, "DeviceNotFound");

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("m{i}"), "importMode": "create"}))
        .collect();
    let r = c
        .post("/devices")
        .auth(&t)
        .json(&Value::Array(too_many))
        .send()
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    emu.shutdown().await;
}
