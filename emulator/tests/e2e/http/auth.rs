//! Authentication on every kind of hub route: each failure is 401 IotHubUnauthorizedAccess with
//! the hub's error body and header.

use crate::support::http::start_http;
use crate::support::{owner_token, policy_token, stored_device_token};
use iothub_emulator::credentials::{DEVICE, REGISTRY_READ, SERVICE, well_known_policies};
use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::sas::build_token;

const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test]
async fn every_auth_failure_is_401() {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    emu.create_device("d2").unwrap();
    let later = emu.context().now_unix() + 3600;
    let service = well_known_policies()
        .into_iter()
        .find(|p| p.name == SERVICE)
        .unwrap();

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("not a SAS token", Some("Basic dXNlcjpwYXNz".into())),
        (
            "bearer token",
            Some("Bearer eyJhbGciOiJub25lIn0.e30.".into()),
        ),
        (
            "wrong signature",
            Some(build_token("localhost", OTHER_KEY, Some(SERVICE), later).unwrap()),
        ),
        (
            "expired",
            Some(
                build_token(
                    "localhost",
                    &service.primary_key,
                    Some(SERVICE),
                    emu.context().now_unix() - 1,
                )
                .unwrap(),
            ),
        ),
        (
            "unknown policy",
            Some(build_token("localhost", OTHER_KEY, Some("nobody"), later).unwrap()),
        ),
        (
            "insufficient permission",
            Some(policy_token(&emu, REGISTRY_READ)),
        ),
        (
            "device token on a service route",
            Some(stored_device_token(&emu, "d1")),
        ),
    ];
    for (what, token) in &cases {
        let mut req = c.get("/messages/serviceBound/feedback");
        if let Some(t) = token {
            req = req.auth(t);
        }
        let r = req.send().await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        r.assert_hub_error(401, "IotHubUnauthorizedAccess");
    }

    // Registry: read-only policy cannot write; service policy cannot read the registry.
    c.delete("/devices/d1")
        .auth(&policy_token(&emu, REGISTRY_READ))
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");
    c.get("/devices/d1")
        .auth(&policy_token(&emu, SERVICE))
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");

    // Device routes: a device token only works for its own device.
    let d1 = stored_device_token(&emu, "d1");
    for path in [
        "/devices/d2/messages/deviceBound",
        "/devices/D1/messages/deviceBound",
    ] {
        c.get(path)
            .auth(&d1)
            .send()
            .await
            .assert_hub_error(401, "IotHubUnauthorizedAccess");
    }
    // A device token scoped to another device's path (wrong scope), signed with d1's key.
    let key = emu.hub().read(|h| h.get_device("d1")).unwrap();
    let scoped = build_token(
        "localhost/devices/d2",
        key.primary_key().unwrap(),
        None,
        later,
    )
    .unwrap();
    c.get("/devices/d2/messages/deviceBound")
        .auth(&scoped)
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");
    // A policy without DeviceConnect cannot act as a device; one with it can.
    c.post("/devices/d1/messages/events")
        .auth(&policy_token(&emu, SERVICE))
        .body("x")
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");
    let r = c
        .post("/devices/d1/messages/events")
        .auth(&policy_token(&emu, DEVICE))
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        c.get("/devices/d1/messages/deviceBound")
            .auth(&d1)
            .send()
            .await
            .status,
        204
    );

    // Control API: iothubowner only.
    c.post("/_emulator/reset")
        .auth(&policy_token(&emu, SERVICE))
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_disabled_device_is_refused() {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    let t = stored_device_token(&emu, "d1");
    let mut d = emu.hub().read(|h| h.get_device("d1")).unwrap();
    d.status = DeviceStatus::Disabled;
    let r = c
        .put("/devices/d1")
        .auth(&owner_token(&emu))
        .header("if-match", "*")
        .json(&serde_json::to_value(&d).unwrap())
        .send()
        .await;
    assert_eq!(r.status, 200);
    for req in [
        c.get("/devices/d1/messages/deviceBound"),
        c.post("/devices/d1/messages/events"),
        c.delete("/devices/d1/messages/deviceBound/00000000-0000-0000-0000-000000000000"),
    ] {
        req.auth(&t)
            .send()
            .await
            .assert_hub_error(401, "IotHubUnauthorizedAccess");
    }
    // Also through a DeviceConnect policy.
    c.get("/devices/d1/messages/deviceBound")
        .auth(&policy_token(&emu, DEVICE))
        .send()
        .await
        .assert_hub_error(401, "IotHubUnauthorizedAccess");
    emu.shutdown().await;
}
