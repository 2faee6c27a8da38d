//! Module links over AMQP, as the Node `ModuleClient` attaches them: telemetry on
//! `/devices/{id}/modules/{mid}/messages/events`, the twin on `.../twin`, methods on
//! `.../methods/devicebound`, all under a put-token for the module itself.

use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp::{Receiver, Sender};
use iothub_emulator::RunningEmulator;
use iothub_emulator::credentials::{IOTHUBOWNER, REGISTRY_READ};
use iothub_emulator::hub::Identity;
use iothub_emulator::hub::event_log::partition_for_device;
use iothub_protocol::EventPosition;
use iothub_protocol::registry::ConnectionState;
use iothub_protocol::sas::build_token;
use iothub_protocol::twin::TwinWrite;
use serde_json::json;

use super::mqtt::{create_module, module_token};
use crate::support::amqp::*;
use crate::support::http::start_http;
use crate::support::*;

fn twin_request(op: &str, resource: Option<&str>, id: &str, body: &str) -> Message<Data> {
    let mut a = MessageAnnotations::builder().insert(Symbol::from("operation"), op.to_owned());
    if let Some(r) = resource {
        a = a.insert(Symbol::from("resource"), r.to_owned());
    }
    Message::builder()
        .properties(Properties {
            correlation_id: Some(MessageId::String(id.to_owned())),
            ..Properties::default()
        })
        .message_annotations(a.build())
        .data(body.as_bytes().to_vec())
        .build()
}

fn status(d: &Delivery<Body<Value>>) -> Option<Value> {
    d.message()
        .message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::from(Symbol::from("status")))
        .cloned()
}

fn body_bytes(d: &Delivery<Body<Value>>) -> Vec<u8> {
    match d.body() {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("expected data sections, got {other:?}"),
    }
}

/// A connection whose one put-token is the module's, for the audience Node sends (the `sr`
/// percent-encoded as a whole).
async fn module_session(
    emu: &RunningEmulator,
    device: &str,
    module: &str,
    key: &str,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
    Cbs,
) {
    let (c, mut s) = session(emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let audience = format!("localhost%2Fdevices%2F{device}%2Fmodules%2F{module}");
    let reply = cbs
        .put_token_for(
            MessageId::Ulong(1),
            &module_token(emu, device, module, key),
            &audience,
        )
        .await;
    assert_eq!(status_code(&reply), 200);
    (c, s, cbs)
}

#[tokio::test]
async fn module_amqp_telemetry_twin_and_methods() {
    let (emu, http) = start_http().await;
    let key = create_module(&emu, "d1", "m1");
    let (conn, mut s, _cbs) = module_session(&emu, "d1", "m1", &key).await;

    // Telemetry lands in the log with the module id.
    let mut events = within(Sender::attach(
        &mut s,
        "events",
        "/devices/d1/modules/m1/messages/events",
    ))
    .await
    .unwrap();
    let m = Message::builder()
        .application_properties(ApplicationProperties::builder().insert("k", "v").build())
        .data(Binary::from(b"amqp-module".to_vec()))
        .build();
    let outcome = within(events.send(m)).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let partition = partition_for_device("d1", 4).to_string();
    let logged = emu.hub().read(|h| {
        let mut c = h
            .cursor(&partition, &EventPosition::Earliest)
            .expect("cursor");
        h.read_events(&mut c, 100)
    });
    let e = logged
        .iter()
        .find(|e| e.message.body == b"amqp-module")
        .expect("event");
    assert_eq!(e.origin.module_id.as_deref(), Some("m1"));
    assert_eq!(e.message.properties.get("k"), Some("v"));
    let names: Vec<_> = e.annotations().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"iothub-connection-module-id"), "{names:?}");
    assert_eq!(
        emu.hub()
            .read(|h| h.get_module("d1", "m1").map(|m| m.connection_state)),
        Ok(ConnectionState::Connected)
    );
    assert_eq!(
        emu.hub()
            .read(|h| h.get_device("d1").map(|d| d.connection_state)),
        Ok(ConnectionState::Disconnected),
        "the module's links do not connect the device"
    );

    // The module's twin: GET, PATCH reported, subscribe, a desired delta.
    let mut tx = within(Sender::attach(
        &mut s,
        "twin-snd",
        "/devices/d1/modules/m1/twin",
    ))
    .await
    .unwrap();
    let mut rx = within(Receiver::attach(
        &mut s,
        "twin-rcv",
        "/devices/d1/modules/m1/twin",
    ))
    .await
    .unwrap();
    within(tx.send(twin_request("GET", None, "g1", " ")))
        .await
        .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(status(&r), Some(Value::Int(200)));
    let twin: serde_json::Value = serde_json::from_slice(&body_bytes(&r)).unwrap();
    assert_eq!(twin["desired"]["$version"], json!(1));
    within(tx.send(twin_request(
        "PATCH",
        Some("/properties/reported"),
        "p1",
        r#"{"role":"sensor"}"#,
    )))
    .await
    .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(status(&r), Some(Value::Int(204)));
    let module = Identity::module("d1", "m1");
    let reported = emu
        .hub()
        .read(|h| h.get_twin(&module))
        .unwrap()
        .properties
        .reported;
    assert_eq!(reported.get("role"), Some(&json!("sensor")), "{reported:?}");
    let device_twin = emu.hub().read(|h| h.get_twin(&Identity::device("d1")));
    assert!(
        device_twin
            .unwrap()
            .properties
            .reported
            .get("role")
            .is_none(),
        "the device twin is not the module's"
    );
    within(tx.send(twin_request(
        "PUT",
        Some("/notifications/twin/properties/desired"),
        "s1",
        " ",
    )))
    .await
    .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(status(&r), Some(Value::Int(200)));
    let w = TwinWrite::from_json(&json!({"properties": {"desired": {"interval": 7}}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&module, &w, None, now))
        .unwrap();
    let d: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&d)).await.unwrap();
    let delta: serde_json::Value = serde_json::from_slice(&body_bytes(&d)).unwrap();
    assert_eq!(delta["interval"], json!(7));
    assert_eq!(delta["$version"], json!(2));

    // Methods: C#'s spelling of the node; a module call reaches it, a device call does not.
    let mut requests = within(Receiver::attach(
        &mut s,
        "methods-rx",
        "/devices/d1/modules/m1/methods/deviceBound",
    ))
    .await
    .unwrap();
    let mut answers = within(Sender::attach(
        &mut s,
        "methods-tx",
        "/devices/d1/modules/m1/methods/devicebound",
    ))
    .await
    .unwrap();
    let hub = emu.hub().clone();
    wait_until("module listening", || {
        hub.read(|h| h.method_target(&module)).is_some()
    })
    .await;
    assert!(
        hub.read(|h| h.method_target(&Identity::device("d1")))
            .is_none()
    );
    let call = http
        .post("/twins/d1/modules/m1/methods?api-version=2021-04-12")
        .auth(&owner_token(&emu))
        .json(&json!({"methodName": "reboot", "payload": {"n": 1}}))
        .send();
    let module_side = async {
        let d = within(requests.recv::<Body<Value>>()).await.unwrap();
        within(requests.accept(&d)).await.unwrap();
        let m = d.into_message();
        let cid = m.properties.clone().unwrap().correlation_id;
        let answer = Message::builder()
            .properties(Properties {
                correlation_id: cid,
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("IoThub-status", 201)
                    .build(),
            )
            .data(Binary::from(br#"{"module":"m1"}"#.to_vec()))
            .build();
        within(answers.send(answer)).await.unwrap();
    };
    let (r, ()) = within(async { tokio::join!(call, module_side) }).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"status": 201, "payload": {"module": "m1"}})
    );

    // Deleting the module detaches its links.
    emu.hub()
        .run(|h, now| h.delete_module("d1", "m1", None, now))
        .unwrap();
    let condition = sender_closed_with(&mut events).await;
    assert_eq!(condition, "amqp:unauthorized-access");
    finish(conn, emu).await;
}

/// Puts `token` on a new connection; then whether a telemetry link to `address` takes a
/// message.
async fn can_send(emu: &RunningEmulator, token: &str, address: &str) -> bool {
    let (c, mut s) = session(emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs.put_token(MessageId::Ulong(1), token).await;
    let granted = if status_code(&reply) != 200 {
        false
    } else {
        match within(Sender::attach(&mut s, "events", address)).await {
            Err(_) => false,
            Ok(mut tx) => matches!(
                within(tx.send(Message::builder().data(Binary::from(b"x".to_vec())).build())).await,
                Ok(Outcome::Accepted(_))
            ),
        }
    };
    let mut c = c;
    let _ = within(c.close()).await;
    granted
}

#[tokio::test]
async fn module_amqp_tokens_grant_only_their_own_identity() {
    let emu = start().await;
    let k1 = create_module(&emu, "d1", "m1");
    let k2 = create_module(&emu, "d1", "m2");
    let dk = device_key(&emu, "d1");
    let se = emu.context().now_unix() + 3600;
    let owner = emu.context().auth.policy(IOTHUBOWNER).unwrap().clone();
    let read = emu.context().auth.policy(REGISTRY_READ).unwrap().clone();
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
    let read_only = build_token("localhost", &read.primary_key, Some(&read.name), se).unwrap();
    let hub_owner = owner_token(&emu);

    let dev = "/devices/d1/messages/events";
    let mod1 = "/devices/d1/modules/m1/messages/events";
    let mod2 = "amqps://localhost:5671/devices/d1/modules/m2/messages/events";
    let table = [
        ("module m1", &m1, [false, true, false]),
        ("module m2", &m2, [false, false, true]),
        ("device", &device, [true, false, false]),
        ("m1's scope, device key", &m1_with_device_key, [false; 3]),
        ("owner scoped to m1", &owner_for_m1, [false, true, false]),
        ("registryRead", &read_only, [false; 3]),
        ("owner", &hub_owner, [true; 3]),
    ];
    for (label, token, expected) in table {
        for (address, want) in [dev, mod1, mod2].into_iter().zip(expected) {
            assert_eq!(
                can_send(&emu, token, address).await,
                want,
                "{label} token on {address}"
            );
        }
    }
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn module_amqp_has_no_c2d() {
    let emu = start().await;
    let key = create_module(&emu, "d1", "m1");
    let (conn, mut s, _cbs) = module_session(&emu, "d1", "m1", &key).await;
    // Node's input-message receiver sits on the module's events node: refused.
    let mut inputs = within(Receiver::attach(
        &mut s,
        "inputs",
        "/devices/d1/modules/m1/messages/events",
    ))
    .await
    .unwrap();
    assert_eq!(receiver_closed_with(&mut inputs).await, "amqp:not-allowed");
    // And there is no module devicebound node.
    let mut c2d = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/d1/modules/m1/messages/devicebound",
    ))
    .await
    .unwrap();
    assert_eq!(receiver_closed_with(&mut c2d).await, "amqp:not-found");
    finish(conn, emu).await;
}
