//! Module telemetry over HTTPS (`POST /devices/{id}/modules/{mid}/messages/events`), the
//! tokens that may use it, and no C2D for modules.

use iothub_emulator::credentials::IOTHUBOWNER;
use iothub_emulator::hub::event_log::partition_for_device;
use iothub_protocol::EventPosition;
use iothub_protocol::sas::build_token;

use super::mqtt::{create_module, module_token};
use crate::support::http::start_http;
use crate::support::*;

#[tokio::test]
async fn module_https_telemetry_is_recorded_with_the_module_id() {
    let (emu, c) = start_http().await;
    // Mixed case: module ids are case-sensitive on every route.
    let key = create_module(&emu, "d1", "ModA");
    let token = module_token(&emu, "d1", "ModA", &key);
    let r = c
        .post("/devices/d1/modules/ModA/messages/events?api-version=2021-04-12")
        .auth(&token)
        .header("iothub-app-k", "v")
        .body(b"over-https".to_vec())
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c
        .post("/devices/d1/modules/ModA/messages/events")
        .auth(&token)
        .header("content-type", "application/vnd.microsoft.iothub.json")
        .body(br#"[{"body":"YmF0Y2g="}]"#.to_vec())
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    let partition = partition_for_device("d1", 4).to_string();
    let events = emu.hub().read(|h| {
        let mut cur = h
            .cursor(&partition, &EventPosition::Earliest)
            .expect("cursor");
        h.read_events(&mut cur, 100)
    });
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.origin.device_id, "d1");
        assert_eq!(e.origin.module_id.as_deref(), Some("ModA"));
    }
    assert_eq!(events[0].message.body, b"over-https");
    assert_eq!(events[0].message.properties.get("k"), Some("v"));
    assert_eq!(events[1].message.body, b"batch");

    // The module twin route keeps the module id's case too.
    let r = c
        .get("/twins/d1/modules/ModA")
        .auth(&owner_token(&emu))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["moduleId"], "ModA");
    emu.shutdown().await;
}

#[tokio::test]
async fn module_https_tokens_grant_only_their_own_identity() {
    let (emu, c) = start_http().await;
    let k1 = create_module(&emu, "d1", "m1");
    let k2 = create_module(&emu, "d1", "m2");
    let dk = device_key(&emu, "d1");
    let owner = emu.context().auth.policy(IOTHUBOWNER).unwrap().clone();
    let se = emu.context().now_unix() + 3600;
    let m1 = module_token(&emu, "d1", "m1", &k1);
    let m2 = module_token(&emu, "d1", "m2", &k2);
    let device = device_token(&emu, "d1", &dk);
    let m1_with_device_key = module_token(&emu, "d1", "m1", &dk);
    let owner_for_m1 = build_token(
        "localhost/devices/d1/modules/m1",
        &owner.primary_key,
        Some(&owner.name),
        se,
    )
    .unwrap();
    let hub_owner = owner_token(&emu);

    let dev = "/devices/d1/messages/events";
    let mod1 = "/devices/d1/modules/m1/messages/events";
    let mod2 = "/devices/d1/modules/m2/messages/events";
    let table = [
        ("module m1", &m1, [false, true, false]),
        ("module m2", &m2, [false, false, true]),
        ("device", &device, [true, false, false]),
        ("m1's scope, device key", &m1_with_device_key, [false; 3]),
        ("owner scoped to m1", &owner_for_m1, [false, true, false]),
        ("owner", &hub_owner, [true; 3]),
    ];
    for (label, token, expected) in table {
        for (path, want) in [dev, mod1, mod2].into_iter().zip(expected) {
            let r = c.post(path).auth(token).body(b"x".to_vec()).send().await;
            if want {
                assert_eq!(r.status, 204, "{label} token on {path}: {}", r.text());
            } else {
                r.assert_hub_error(401, "IotHubUnauthorizedAccess");
            }
        }
    }

    // No C2D for modules: refused once the token is the module's.
    let r = c
        .get("/devices/d1/modules/m1/messages/deviceBound?api-version=2021-04-12")
        .auth(&m1)
        .send()
        .await;
    r.assert_hub_error(400, "InvalidOperation");
    let r = c
        .get("/devices/d1/modules/m1/messages/deviceBound")
        .auth(&device)
        .send()
        .await;
    r.assert_hub_error(401, "IotHubUnauthorizedAccess");
    emu.shutdown().await;
}
