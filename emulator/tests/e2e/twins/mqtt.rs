//! Twins over MQTT: GET, reported PATCH, errors, desired notifications in order, and a
//! reconnect that converges on the latest desired version.

use crate::support::mqtt::*;
use crate::support::*;
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::Identity;
use iothub_protocol::twin::TwinWrite;
use rumqttc::{Incoming, Publish, QoS};
use serde_json::{Value, json};

const RES: &str = "$iothub/twin/res/#";
const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";

async fn subscribe(d: &mut Mqtt, filter: &str) {
    d.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    d.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
}

/// Publishes a twin request and waits for the response with the same `$rid`.
async fn request(d: &mut Mqtt, topic: &str, rid: &str, body: &[u8]) -> Publish {
    d.client
        .publish(
            format!("{topic}?$rid={rid}"),
            QoS::AtLeastOnce,
            false,
            body.to_vec(),
        )
        .await
        .expect("publish queued");
    let needle = format!("?$rid={rid}");
    d.until(|p| match p {
        Incoming::Publish(p)
            if p.topic.starts_with("$iothub/twin/res/") && p.topic.contains(&needle) =>
        {
            Some(p.clone())
        }
        _ => None,
    })
    .await
}

/// Waits for the next desired notification.
async fn next_desired(d: &mut Mqtt) -> Publish {
    if let Some(i) = d.received.iter().position(|p| {
        p.topic
            .starts_with("$iothub/twin/PATCH/properties/desired/")
    }) {
        return d.received.remove(i).expect("present");
    }
    d.until(|p| match p {
        Incoming::Publish(p)
            if p.topic
                .starts_with("$iothub/twin/PATCH/properties/desired/") =>
        {
            Some(p.clone())
        }
        _ => None,
    })
    .await
}

fn set_desired(emu: &RunningEmulator, id: &str, desired: Value) {
    let w = TwinWrite::from_json(&json!({"properties": {"desired": desired}})).expect("write");
    emu.hub()
        .run(|h, now| h.update_twin(&Identity::device(id), &w, None, now))
        .expect("twin updated");
}

fn body(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).expect("JSON body")
}

#[tokio::test]
async fn twin_mqtt_get_and_reported_patch_answer_with_rid_and_version() {
    let emu = start().await;
    let key = create_device(&emu, "tw1");
    let mut d = connect(device_options(&emu, "tw1", &key, true)).await;
    subscribe(&mut d, RES).await;

    let r = request(&mut d, "$iothub/twin/GET/", "1a", b" ").await;
    assert_eq!(r.topic, "$iothub/twin/res/200/?$rid=1a");
    let twin = body(&r);
    assert_eq!(twin["desired"]["$version"], json!(1));
    assert_eq!(twin["reported"]["$version"], json!(1));
    assert!(twin.get("tags").is_none(), "devices never see tags");

    let r = request(
        &mut d,
        "$iothub/twin/PATCH/properties/reported/",
        "b-2",
        br#"{"battery":55,"fw":{"v":"1.0"}}"#,
    )
    .await;
    assert_eq!(r.topic, "$iothub/twin/res/204/?$rid=b-2&$version=2");
    assert!(r.payload.is_empty());

    let r = request(
        &mut d,
        "$iothub/twin/PATCH/properties/reported/",
        "3",
        br#"{"fw":null}"#,
    )
    .await;
    assert_eq!(r.topic, "$iothub/twin/res/204/?$rid=3&$version=3");
    let twin = emu
        .hub()
        .read(|h| h.get_twin(&Identity::device("tw1")))
        .expect("twin");
    let reported = &twin.properties.reported;
    assert_eq!(reported["battery"], json!(55));
    assert!(reported.get("fw").is_none());

    // Errors: a 400 with a JSON body naming the code (Node reads only the body).
    let r = request(
        &mut d,
        "$iothub/twin/PATCH/properties/reported/",
        "4",
        b"not json",
    )
    .await;
    assert_eq!(r.topic, "$iothub/twin/res/400/?$rid=4");
    assert_eq!(body(&r)["errorCode"], json!(400004));
    let r = request(
        &mut d,
        "$iothub/twin/PATCH/properties/reported/",
        "5",
        br#"{"bad key":1}"#,
    )
    .await;
    assert!(r.topic.starts_with("$iothub/twin/res/400/"), "{}", r.topic);
    assert!(body(&r)["message"].as_str().is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn twin_mqtt_desired_changes_arrive_in_version_order_only_while_subscribed() {
    let emu = start().await;
    let key = create_device(&emu, "tw2");
    let mut d = connect(device_options(&emu, "tw2", &key, true)).await;
    // Not subscribed yet: nothing is sent for this one.
    set_desired(&emu, "tw2", json!({"early": 1}));
    subscribe(&mut d, DESIRED).await;
    for i in 0..20 {
        set_desired(
            &emu,
            "tw2",
            json!({"n": i, "gone": if i % 2 == 0 { json!(1) } else { Value::Null }}),
        );
    }
    for i in 0..20 {
        let p = next_desired(&mut d).await;
        let v = i + 3;
        assert_eq!(
            p.topic,
            format!("$iothub/twin/PATCH/properties/desired/?$version={v}")
        );
        let b = body(&p);
        assert_eq!(b["$version"], json!(v));
        assert_eq!(b["n"], json!(i));
        let gone = if i % 2 == 0 { json!(1) } else { Value::Null };
        assert_eq!(b.get("gone"), Some(&gone));
    }
    d.client
        .unsubscribe(DESIRED)
        .await
        .expect("unsubscribe queued");
    d.until(|p| matches!(p, Incoming::UnsubAck(_)).then_some(()))
        .await;
    set_desired(&emu, "tw2", json!({"late": 1}));
    subscribe(&mut d, RES).await;
    // A GET round trip after the change: a notification would have come before its answer.
    let r = request(&mut d, "$iothub/twin/GET/", "9", b"").await;
    assert_eq!(body(&r)["desired"]["$version"], json!(23));
    assert!(
        !d.received
            .iter()
            .any(|p| p.topic.starts_with("$iothub/twin/PATCH/")),
        "no notification after UNSUBSCRIBE"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn twin_mqtt_a_reconnecting_device_converges_on_the_latest_desired_version() {
    let emu = start().await;
    let key = create_device(&emu, "tw3");
    let mut d = connect(device_options(&emu, "tw3", &key, false)).await;
    subscribe(&mut d, DESIRED).await;
    subscribe(&mut d, RES).await;
    set_desired(&emu, "tw3", json!({"a": 1}));
    assert_eq!(body(&next_desired(&mut d).await)["$version"], json!(2));
    d.client.disconnect().await.expect("disconnect queued");
    let _ = d.until_closed().await;
    wait_until("disconnected", || emu.hub().connection_count() == 0).await;

    // Changes while offline are not queued; the full twin has them.
    set_desired(&emu, "tw3", json!({"b": 2}));
    set_desired(&emu, "tw3", json!({"a": null}));
    let mut d = connect(device_options(&emu, "tw3", &key, false)).await;
    assert!(d.connack.session_present);
    let r = request(&mut d, "$iothub/twin/GET/", "r", b" ").await;
    let desired = &body(&r)["desired"];
    assert_eq!(desired["$version"], json!(4));
    assert_eq!(desired["b"], json!(2));
    assert!(desired.get("a").is_none());
    // The persisted session still holds the desired filter: new changes arrive.
    set_desired(&emu, "tw3", json!({"c": 3}));
    let p = next_desired(&mut d).await;
    assert_eq!(body(&p)["$version"], json!(5));
    emu.shutdown().await;
}
