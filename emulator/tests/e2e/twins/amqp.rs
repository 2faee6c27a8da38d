//! Twins over AMQP, as the Node, C# and C device SDKs use them: a sender and a receiver on
//! `/devices/{id}/twin`, requests by message annotation, responses correlated by id with an
//! int `status`, and desired deltas without correlation id after `PUT`.

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Receiver, Sender};
use iothub_emulator::hub::Identity;
use iothub_protocol::twin::TwinWrite;
use serde_json::json;

fn annotation(d: &Delivery<Body<Value>>, key: &str) -> Option<Value> {
    d.message()
        .message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::from(Symbol::from(key)))
        .cloned()
}

fn body_json(d: &Delivery<Body<Value>>) -> serde_json::Value {
    match d.body() {
        Body::Data(batch) => {
            let bytes: Vec<u8> = batch.iter().flat_map(|d| d.0.to_vec()).collect();
            serde_json::from_slice(&bytes).expect("JSON body")
        }
        other => panic!("expected one data section, got {other:?}"),
    }
}

fn request(op: &str, resource: Option<&str>, id: &str, body: &str) -> Message<Data> {
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

#[tokio::test]
async fn twin_amqp_get_patch_subscribe_and_desired_deltas() {
    let emu = start().await;
    let key = create_device(&emu, "ta1");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "ta1", &key)).await;
    let mut tx = within(Sender::attach(&mut s, "twin-snd", "/devices/ta1/twin"))
        .await
        .unwrap();
    let mut rx = within(Receiver::attach(&mut s, "twin-rcv", "/devices/ta1/twin"))
        .await
        .unwrap();

    within(tx.send(request("GET", None, "g1", " ")))
        .await
        .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(annotation(&r, "status"), Some(Value::Int(200)));
    let props = r.message().properties.as_ref().unwrap();
    assert_eq!(props.correlation_id, Some(MessageId::String("g1".into())));
    assert_eq!(body_json(&r)["desired"]["$version"], json!(1));

    within(tx.send(request(
        "PATCH",
        Some("/properties/reported"),
        "p1",
        r#"{"temp":21}"#,
    )))
    .await
    .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(annotation(&r, "status"), Some(Value::Int(204)));
    assert_eq!(annotation(&r, "version"), Some(Value::Long(2)));

    // A bad patch: an error status and a JSON body with errorCode.
    within(tx.send(request("PATCH", Some("/properties/reported"), "p2", "nope")))
        .await
        .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(annotation(&r, "status"), Some(Value::Int(400)));
    assert_eq!(body_json(&r)["errorCode"], json!(400004));

    within(tx.send(request(
        "PUT",
        Some("/notifications/twin/properties/desired"),
        "s1",
        " ",
    )))
    .await
    .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(annotation(&r, "status"), Some(Value::Int(200)));

    let id = Identity::device("ta1");
    for i in 0..3 {
        let w = TwinWrite::from_json(&json!({"properties": {"desired": {"n": i}}})).unwrap();
        emu.hub()
            .run(|h, now| h.update_twin(&id, &w, None, now))
            .unwrap();
    }
    for i in 0..3 {
        let d: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
        within(rx.accept(&d)).await.unwrap();
        let cid = d
            .message()
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone());
        assert_eq!(cid, None, "desired deltas carry no correlation id");
        let b = body_json(&d);
        assert_eq!(b["n"], json!(i));
        assert_eq!(b["$version"], json!(i + 2));
    }

    within(tx.send(request(
        "DELETE",
        Some("/notifications/twin/properties/desired"),
        "u1",
        " ",
    )))
    .await
    .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    within(rx.accept(&r)).await.unwrap();
    assert_eq!(annotation(&r, "status"), Some(Value::Int(200)));
    let w = TwinWrite::from_json(&json!({"properties": {"desired": {"late": 1}}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&id, &w, None, now))
        .unwrap();
    within(tx.send(request("GET", None, "g2", " ")))
        .await
        .unwrap();
    let r: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    let props = r.message().properties.as_ref().unwrap();
    assert_eq!(
        props.correlation_id,
        Some(MessageId::String("g2".into())),
        "no delta after DELETE"
    );
    assert_eq!(body_json(&r)["desired"]["$version"], json!(5));

    let _ = tx.close().await;
    let _ = rx.close().await;
    finish(c, emu).await;
}

#[tokio::test]
async fn twin_amqp_links_need_the_device_token() {
    let emu = start().await;
    let key = create_device(&emu, "ta2");
    create_device(&emu, "other");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "ta2", &key)).await;
    let mut rx = within(Receiver::attach(&mut s, "twin-rcv", "/devices/other/twin"))
        .await
        .unwrap();
    let err = receiver_closed_with(&mut rx).await;
    assert!(err.contains("unauthorized"), "{err}");
    finish(c, emu).await;
}
