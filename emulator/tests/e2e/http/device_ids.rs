//! Every device id the registry accepts is addressable in every HTTPS route: path segments are
//! percent-decoded exactly once, so `%`, `#`, `?`, `..` and the rest of the hub's id alphabet
//! work when the client encodes them (as every SDK does with `encodeURIComponent`/`quote`).

use serde_json::json;

use crate::support::http::*;
use crate::support::*;

/// Encodes everything but RFC 3986 unreserved characters, as `encodeURIComponent` nearly does.
fn enc(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_creatable_id_works_in_every_route() {
    let (emu, c) = start_http().await;
    let owner = owner_token(&emu);
    let ids = [
        "..",
        ".",
        "a%b",
        "a%2Fb",
        "%25",
        "a#b",
        "a?b",
        "a+b",
        "a=b@c",
        "$x'(y)*!,",
        "a:b;c",
    ];
    for id in ids {
        let e = enc(id);
        let r = c
            .put(&format!("/devices/{e}?api-version=2021-04-12"))
            .auth(&owner)
            .json(&json!({ "deviceId": id }))
            .send()
            .await;
        if r.status == 400 {
            // Refused at creation is fine, as long as it is the hub's ArgumentInvalid.
            r.assert_hub_error(400, "ArgumentInvalid");
            continue;
        }
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["deviceId"], id);
        let key = device_key(&emu, id);
        let dev = device_token(&emu, id, &key);

        let r = c.get(&format!("/devices/{e}")).auth(&owner).send().await;
        assert_eq!(
            (r.status, r.json()["deviceId"].clone()),
            (200, json!(id)),
            "{id}"
        );
        let r = c
            .post(&format!("/_emulator/devices/{e}/messages"))
            .auth(&owner)
            .body("hi")
            .send()
            .await;
        assert_eq!(r.status, 200, "{id} send: {}", r.text());
        let r = c
            .get(&format!("/devices/{e}/messages/deviceBound"))
            .auth(&dev)
            .send()
            .await;
        assert_eq!(r.status, 200, "{id} receive: {}", r.text());
        let lock = r.header("etag").unwrap().trim_matches('"').to_owned();
        let r = c
            .delete(&format!("/devices/{e}/messages/deviceBound/{lock}"))
            .auth(&dev)
            .send()
            .await;
        assert_eq!(r.status, 204, "{id} complete: {}", r.text());
        let r = c
            .post(&format!("/devices/{e}/messages/events"))
            .auth(&dev)
            .body("t")
            .send()
            .await;
        assert_eq!(r.status, 204, "{id} events: {}", r.text());
        let r = c
            .delete(&format!("/devices/{e}/commands"))
            .auth(&owner)
            .send()
            .await;
        assert_eq!(r.status, 200, "{id} purge: {}", r.text());
        assert_eq!(r.json()["deviceId"], id);
        let r = c.delete(&format!("/devices/{e}")).auth(&owner).send().await;
        assert_eq!(r.status, 204, "{id} delete: {}", r.text());
        assert!(emu.hub().read(|h| h.get_device(id)).is_err(), "{id} gone");
    }
    emu.shutdown().await;
}
