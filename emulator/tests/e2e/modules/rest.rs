//! Module registry and module twins over the service REST API, as the SDKs call them.

use crate::support::http::start_http;
use crate::support::{create_device, owner_token};
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn module_crud_with_generated_keys_etags_and_the_hubs_errors() {
    let (emu, c) = start_http().await;
    create_device(&emu, "d1");
    let t = owner_token(&emu);

    // Node's addModule body: empty keys ask the hub to generate them.
    let add = json!({"deviceId": "d1", "moduleId": "m1", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}});
    let r = c
        .put("/devices/d1/modules/m1?api-version=2021-04-12")
        .auth(&t)
        .json(&add)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(
        (m["deviceId"].clone(), m["moduleId"].clone()),
        (json!("d1"), json!("m1"))
    );
    let key = m["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert!(!key.is_empty());
    let etag = m["etag"].as_str().unwrap().to_owned();
    assert_eq!(r.header("etag"), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(m["connectionState"], "Disconnected");
    assert_eq!(m["cloudToDeviceMessageCount"], json!(0));

    let r = c
        .put("/devices/d1/modules/m1")
        .auth(&t)
        .json(&add)
        .send()
        .await;
    r.assert_hub_error(409, "ModuleAlreadyExistsOnDevice");
    let r = c
        .put("/devices/ghost/modules/m1")
        .auth(&t)
        .json(&json!({"deviceId": "ghost", "moduleId": "m1"}))
        .send()
        .await;
    r.assert_hub_error(404, "DeviceNotFound");
    let r = c.get("/devices/d1/modules/m9").auth(&t).send().await;
    r.assert_hub_error(404, "ModuleNotFound");
    let r = c
        .put("/devices/d1/modules/m2")
        .auth(&t)
        .json(&json!({"deviceId": "d1", "moduleId": "other"}))
        .send()
        .await;
    r.assert_hub_error(400, "ArgumentInvalid");

    let r = c.get("/devices/d1/modules/m1").auth(&t).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["authentication"]["symmetricKey"]["primaryKey"],
        key
    );

    // Update: a stale etag is refused, the current one or `*` passes (Node's forceUpdate).
    let upd = json!({"deviceId": "d1", "moduleId": "m1", "managedBy": "me", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}});
    let r = c
        .put("/devices/d1/modules/m1")
        .auth(&t)
        .header("if-match", "\"stale\"")
        .json(&upd)
        .send()
        .await;
    r.assert_hub_error(412, "PreconditionFailed");
    let r = c
        .put("/devices/d1/modules/m1")
        .auth(&t)
        .header("if-match", &format!("\"{etag}\""))
        .json(&upd)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["managedBy"], "me");
    assert_ne!(r.json()["etag"], json!(etag));
    let r = c
        .put("/devices/d1/modules/m1")
        .auth(&t)
        .header("if-match", "*")
        .json(&upd)
        .send()
        .await;
    assert_eq!(r.status, 200);

    c.put("/devices/d1/modules/m2")
        .auth(&t)
        .json(&json!({"deviceId": "d1", "moduleId": "m2"}))
        .send()
        .await;
    let r = c.get("/devices/d1/modules").auth(&t).send().await;
    assert_eq!(r.status, 200);
    let ids: Vec<_> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["moduleId"].clone())
        .collect();
    assert_eq!(ids, [json!("m1"), json!("m2")]);

    let r = c
        .delete("/devices/d1/modules/m2")
        .auth(&t)
        .header("if-match", "\"nope\"")
        .send()
        .await;
    r.assert_hub_error(412, "PreconditionFailed");
    let r = c
        .delete("/devices/d1/modules/m2")
        .auth(&t)
        .header("if-match", "*")
        .send()
        .await;
    assert_eq!(r.status, 204);
    let r = c.get("/devices/d1/modules/m2").auth(&t).send().await;
    r.assert_hub_error(404, "ModuleNotFound");

    // Deleting the device deletes its modules.
    c.delete("/devices/d1").auth(&t).send().await;
    create_device(&emu, "d1");
    let r = c.get("/devices/d1/modules").auth(&t).send().await;
    assert_eq!(r.json(), json!([]));
    emu.shutdown().await;
}

#[tokio::test]
async fn module_twins_over_rest_and_the_modules_query() {
    let (emu, c) = start_http().await;
    create_device(&emu, "d1");
    let t = owner_token(&emu);
    c.put("/devices/d1/modules/m1")
        .auth(&t)
        .json(&json!({"deviceId": "d1", "moduleId": "m1"}))
        .send()
        .await;

    let r = c.get("/twins/d1/modules/m1").auth(&t).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["moduleId"], "m1");
    assert_eq!(r.json()["deviceId"], "d1");
    let r = c
        .req(Method::PATCH, "/twins/d1/modules/m1")
        .auth(&t)
        .header("if-match", "*")
        .json(&json!({"tags": {"role": "sensor"}, "properties": {"desired": {"rate": 5}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["properties"]["desired"]["rate"], json!(5));
    let r = c.get("/twins/d1").auth(&t).send().await;
    assert!(
        r.json()["tags"].get("role").is_none(),
        "the device twin is separate"
    );
    let r = c
        .put("/twins/d1/modules/m1")
        .auth(&t)
        .json(&json!({"tags": {}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], json!({}));
    let r = c.get("/twins/d1/modules/m9").auth(&t).send().await;
    r.assert_hub_error(404, "ModuleNotFound");

    let r = c
        .post("/devices/query")
        .auth(&t)
        .json(&json!({"query": "SELECT * FROM devices.modules WHERE moduleId = 'm1'"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = r.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["moduleId"], "m1");
    emu.shutdown().await;
}
