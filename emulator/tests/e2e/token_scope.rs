//! A token grants only on resources under its `sr`, on every protocol: policy and device
//! tokens, each scoped correctly, to another hub, narrower and wider than what the operation
//! acts on. And a CBS audience bounds the links its token then authorizes.

use fe2o3_amqp::types::messaging::{Body, Message, MessageId, Outcome, Properties};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Receiver, Sender};
use iothub_emulator::RunningEmulator;
use iothub_emulator::credentials::IOTHUBOWNER;
use iothub_protocol::sas::build_token;
use rumqttc::ConnectReturnCode;

use crate::support::amqp::{Cbs, session, status_code};
use crate::support::http::Client;
use crate::support::mqtt::{options, try_connect, username};
use crate::support::*;

const OTHER_HUB: &str = "otherhub.azure-devices.net";

/// Who signs the token.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Signer {
    Owner,
    Device,
}

/// The scopes tried for an operation acting on `resource` (a path below the hub): label,
/// `sr`, and whether it grants when signed by the owner policy and by dev1's key.
fn scopes(resource: &str) -> Vec<(&'static str, String, bool, bool)> {
    let at = |host: &str, path: &str| {
        if path.is_empty() {
            host.to_owned()
        } else {
            format!("{host}/{path}")
        }
    };
    let is_dev1 = resource == "devices/dev1";
    let narrower = match resource {
        "" => "devices".to_owned(),
        "devices" => "devices/dev1".to_owned(),
        r => format!("{r}/modules/m1"),
    };
    let mut rows = vec![
        ("correct", at("localhost", resource), true, is_dev1),
        (
            "correct, host in capitals",
            at("LocalHost", resource),
            true,
            is_dev1,
        ),
        ("other hub", at(OTHER_HUB, resource), false, false),
        ("narrower", at("localhost", &narrower), false, false),
    ];
    if let Some((parent, _)) = resource.rsplit_once('/') {
        rows.push(("wider", at("localhost", parent), true, false));
    } else if !resource.is_empty() {
        rows.push(("wider", "localhost".to_owned(), true, false));
    }
    rows
}

fn token(emu: &RunningEmulator, signer: Signer, sr: &str) -> String {
    let se = emu.context().now_unix() + 3600;
    match signer {
        Signer::Owner => {
            let p = emu.context().auth.policy(IOTHUBOWNER).expect("owner");
            build_token(sr, &p.primary_key, Some(&p.name), se).expect("token")
        }
        Signer::Device => build_token(sr, &device_key(emu, "dev1"), None, se).expect("token"),
    }
}

/// Runs `op` for every signer and scope of `resource`; collects mismatches.
async fn table<F, Fut>(
    emu: &RunningEmulator,
    what: &str,
    resource: &str,
    signers: &[Signer],
    mut op: F,
) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut wrong = Vec::new();
    for &signer in signers {
        for (label, sr, owner_ok, device_ok) in scopes(resource) {
            let expected = if signer == Signer::Owner {
                owner_ok
            } else {
                device_ok
            };
            let got = op(token(emu, signer, &sr)).await;
            if got != expected {
                wrong.push(format!(
                    "{what}, {signer:?} token, {label} ({sr}): granted {got}, expected {expected}"
                ));
            }
        }
    }
    wrong
}

async fn setup() -> RunningEmulator {
    let emu = start().await;
    create_device(&emu, "dev1");
    create_device(&emu, "dev2");
    emu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_grants_only_under_the_tokens_scope() {
    let emu = setup().await;
    let c = Client::new(&emu);
    let both = [Signer::Owner, Signer::Device];
    let mut wrong = Vec::new();
    wrong.extend(
        table(&emu, "GET /devices", "devices", &[Signer::Owner], |t| {
            let req = c.get("/devices").auth(&t);
            async move { req.send().await.status == 200 }
        })
        .await,
    );
    wrong.extend(
        table(
            &emu,
            "GET /devices/dev1",
            "devices/dev1",
            &[Signer::Owner],
            |t| {
                let req = c.get("/devices/dev1").auth(&t);
                async move { req.send().await.status == 200 }
            },
        )
        .await,
    );
    wrong.extend(
        table(&emu, "D2C as dev1", "devices/dev1", &both, |t| {
            let req = c.post("/devices/dev1/messages/events").auth(&t).body("x");
            async move { req.send().await.status == 204 }
        })
        .await,
    );
    // A token narrowed to dev1 acts on dev1 only: not dev2, not the whole registry.
    let narrow = token(&emu, Signer::Owner, "localhost/devices/dev1");
    for (path, status) in [("/devices/dev2", 401), ("/statistics/devices", 401)] {
        let r = c.get(path).auth(&narrow).send().await;
        if r.status != status {
            wrong.push(format!("GET {path} with a dev1 token: {}", r.status));
        }
    }
    let r = c
        .post("/_emulator/devices/dev2/messages")
        .auth(&narrow)
        .body("x")
        .send()
        .await;
    if r.status != 401 {
        wrong.push(format!("send to dev2 with a dev1 token: {}", r.status));
    }
    let r = c
        .put("/devices/dev3")
        .auth(&narrow)
        .json(&serde_json::json!({"deviceId": "dev3"}))
        .send()
        .await;
    if r.status != 401 {
        wrong.push(format!("create dev3 with a dev1 token: {}", r.status));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    within(emu.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_grants_only_under_the_tokens_scope() {
    let emu = setup().await;
    let wrong = table(
        &emu,
        "MQTT CONNECT as dev1",
        "devices/dev1",
        &[Signer::Owner, Signer::Device],
        |t| {
            let opts = options(&emu, "dev1", &username("dev1"), &t, true);
            async move {
                match try_connect(opts).await {
                    Ok(m) => {
                        let ok = m.connack.code == ConnectReturnCode::Success;
                        let _ = m.client.disconnect().await;
                        ok
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    assert!(wrong.is_empty(), "{wrong:#?}");
    within(emu.shutdown()).await;
}

/// Puts `token` for `audience` on a fresh connection; then whether a C2D send link works.
async fn amqp_service_send(emu: &RunningEmulator, token: &str, audience: &str) -> bool {
    let (c, mut s) = session(emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs
        .put_token_for(MessageId::Ulong(1), token, audience)
        .await;
    let granted = if status_code(&reply) != 200 {
        false
    } else {
        match within(Sender::attach(&mut s, "c2d", "/messages/devicebound")).await {
            Err(_) => false,
            Ok(mut sender) => {
                let m = Message::builder()
                    .properties(Properties {
                        to: Some("/devices/dev1/messages/devicebound".into()),
                        ..Properties::default()
                    })
                    .data(b"x".to_vec())
                    .build();
                matches!(within(sender.send(m)).await, Ok(Outcome::Accepted(_)))
            }
        }
    };
    let mut c = c;
    let _ = within(c.close()).await;
    granted
}

/// Puts `token` for `audience`; then whether dev1's C2D receiver link gets a message.
async fn amqp_device_receive(emu: &RunningEmulator, token: &str, audience: &str) -> bool {
    let (c, mut s) = session(emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs
        .put_token_for(MessageId::Ulong(1), token, audience)
        .await;
    let granted = if status_code(&reply) != 200 {
        false
    } else {
        emu.hub()
            .run(|hub, now| hub.enqueue_c2d("dev1", iothub_protocol::Message::new("x"), now))
            .expect("enqueued");
        match within(Receiver::attach(
            &mut s,
            "rx",
            "/devices/dev1/messages/devicebound",
        ))
        .await
        {
            Err(_) => false,
            Ok(mut rx) => match within(rx.recv::<Body<Value>>()).await {
                Ok(d) => {
                    let _ = within(rx.accept(&d)).await;
                    true
                }
                Err(_) => false,
            },
        }
    };
    let mut c = c;
    let _ = within(c.close()).await;
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_grants_only_under_the_tokens_scope_and_audience() {
    let emu = setup().await;
    let mut wrong = Vec::new();
    // The audience is the token's own scope, as the Node SDK sends it.
    wrong.extend(
        table(&emu, "AMQP C2D send", "", &[Signer::Owner], |t| {
            let emu = &emu;
            async move {
                let sr = iothub_protocol::sas::SasToken::parse(&t).unwrap();
                amqp_service_send(emu, &t, sr.resource()).await
            }
        })
        .await,
    );
    wrong.extend(
        table(
            &emu,
            "AMQP dev1 receive",
            "devices/dev1",
            &[Signer::Owner, Signer::Device],
            |t| {
                let emu = &emu;
                async move {
                    let sr = iothub_protocol::sas::SasToken::parse(&t).unwrap();
                    amqp_device_receive(emu, &t, sr.resource()).await
                }
            },
        )
        .await,
    );
    // Audiences: what the SDKs send for a hub-wide token works; another hub's or a narrower
    // one bounds (or refuses) the token.
    let owner = token(&emu, Signer::Owner, "localhost");
    for (audience, send_ok, dev1_ok) in [
        ("localhost", true, true),
        ("amqps://localhost:5671/", true, true),
        ("https://localhost", true, true),
        (OTHER_HUB, false, false),
        ("localhost/devices/dev1", false, true),
        ("localhost/devices/dev2", false, false),
    ] {
        let got = amqp_service_send(&emu, &owner, audience).await;
        if got != send_ok {
            wrong.push(format!("owner token put for {audience}: send {got}"));
        }
        let got = amqp_device_receive(&emu, &owner, audience).await;
        if got != dev1_ok {
            wrong.push(format!(
                "owner token put for {audience}: dev1 receive {got}"
            ));
        }
    }
    let dev = token(&emu, Signer::Device, "localhost/devices/dev1");
    for (audience, ok) in [
        ("localhost/devices/dev1", true),
        ("localhost/devices/dev2", false),
        (OTHER_HUB, false),
    ] {
        let got = amqp_device_receive(&emu, &dev, audience).await;
        if got != ok {
            wrong.push(format!("dev1 token put for {audience}: receive {got}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    within(emu.shutdown()).await;
}
