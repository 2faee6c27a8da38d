//! Direct methods end to end: `POST /twins/{id}/methods` over HTTPS, answered by a device over
//! MQTT (and AMQP, in `amqp_*`), with the hub's timeouts on the virtual clock.

use std::time::Duration;

use iothub_emulator::RunningEmulator;
use rumqttc::{Incoming, Publish, QoS};
use serde_json::{Value, json};

use crate::support::http::{Client, Resp, start_http};
use crate::support::mqtt::{Mqtt, connect, device_options};
use crate::support::{create_device, owner_token, wait_until, within};

/// A device connected over MQTT and subscribed to method requests.
async fn listening_device(emu: &RunningEmulator, id: &str) -> Mqtt {
    let key = create_device(emu, id);
    let mut m = connect(device_options(emu, id, &key, true)).await;
    m.client
        .subscribe("$iothub/methods/POST/#", QoS::AtMostOnce)
        .await
        .unwrap();
    m.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    m
}

async fn invoke(c: &Client, emu: &RunningEmulator, id: &str, body: Value) -> Resp {
    c.post(&format!("/twins/{id}/methods?api-version=2021-04-12"))
        .auth(&owner_token(emu))
        .json(&body)
        .send()
        .await
}

/// The next method request: its method name, rid and payload.
async fn next_request(m: &mut Mqtt) -> (String, String, Vec<u8>) {
    let p: Publish = m.next_publish().await;
    let rest = p
        .topic
        .strip_prefix("$iothub/methods/POST/")
        .expect("a method request topic");
    let (name, rid) = rest.split_once("/?$rid=").expect("name and rid");
    (name.to_owned(), rid.to_owned(), p.payload.to_vec())
}

async fn answer(m: &mut Mqtt, rid: &str, status: i32, body: &[u8]) {
    m.client
        .publish(
            format!("$iothub/methods/res/{status}/?$rid={rid}"),
            QoS::AtLeastOnce,
            false,
            body.to_vec(),
        )
        .await
        .unwrap();
}

/// The `errorCode` inside a direct-method error body (`Message` holds a JSON document).
fn method_error_code(r: &Resp) -> i64 {
    let v = r.json();
    let inner: Value = serde_json::from_str(v["Message"].as_str().expect("Message")).unwrap();
    inner["errorCode"].as_i64().expect("errorCode")
}

#[tokio::test]
async fn mqtt_method_round_trips_every_payload_shape() {
    let (emu, c) = start_http().await;
    let mut m = listening_device(&emu, "d1").await;
    let shapes = [
        json!(null),
        json!(""),
        json!("foo"),
        json!({}),
        json!({"k1": "v1"}),
        json!([1, "two", {"three": 3}]),
    ];
    for (i, payload) in shapes.iter().enumerate() {
        let body =
            json!({"methodName": "reboot", "payload": payload, "responseTimeoutInSeconds": 30});
        let device = async {
            let (name, rid, got) = next_request(&mut m).await;
            assert_eq!(name, "reboot");
            assert_eq!(serde_json::from_slice::<Value>(&got).unwrap(), *payload);
            let status = 200 + i as i32;
            answer(&mut m, &rid, status, &got).await;
            // Polls the answer out (and its PUBACK in).
            m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
                .await;
        };
        let (r, ()) = within(async { tokio::join!(invoke(&c, &emu, "d1", body), device) }).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"status": 200 + i, "payload": payload}));
    }
    // No payload at all is `null`, never an empty body.
    let device = async {
        let (_, rid, got) = next_request(&mut m).await;
        assert_eq!(got, b"null");
        answer(&mut m, &rid, -3, b"").await;
        m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
            .await;
    };
    let (r, ()) = tokio::join!(invoke(&c, &emu, "d1", json!({"methodName": "x"})), device);
    assert_eq!(r.json(), json!({"status": -3, "payload": null}));
    emu.shutdown().await;
}

#[tokio::test]
async fn offline_device_is_404103_and_silent_device_is_504101() {
    let (emu, c) = start_http().await;
    create_device(&emu, "off");
    let r = invoke(&c, &emu, "off", json!({"methodName": "m"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("iothub-errorcode"), Some("DeviceNotOnline"));
    assert_eq!(method_error_code(&r), 404103);

    let r = invoke(&c, &emu, "ghost", json!({"methodName": "m"})).await;
    r.assert_hub_error(404, "DeviceNotFound");
    let r = invoke(
        &c,
        &emu,
        "off",
        json!({"methodName": "m", "responseTimeoutInSeconds": 2}),
    )
    .await;
    r.assert_hub_error(400, "ArgumentInvalid");

    // Waiting for a connect that never comes: 404103 when the virtual clock passes it.
    let waiting = invoke(
        &c,
        &emu,
        "off",
        json!({"methodName": "m", "connectTimeoutInSeconds": 20}),
    );
    let hub = emu.hub().clone();
    let advance = async {
        wait_until("invocation pending", || {
            hub.read(|h| h.pending_methods()) == 1
        })
        .await;
        assert!(hub.advance_clock(Duration::from_secs(21)));
    };
    let (r, ()) = within(async { tokio::join!(waiting, advance) }).await;
    assert_eq!(method_error_code(&r), 404103);

    // A device that never answers: 504101 after the response timeout.
    let mut m = listening_device(&emu, "silent").await;
    let call = invoke(
        &c,
        &emu,
        "silent",
        json!({"methodName": "m", "responseTimeoutInSeconds": 5}),
    );
    let late_rid = std::sync::Mutex::new(String::new());
    let device = async {
        let (_, rid, _) = next_request(&mut m).await;
        *late_rid.lock().unwrap() = rid;
        assert!(hub.advance_clock(Duration::from_secs(6)));
    };
    let (r, ()) = within(async { tokio::join!(call, device) }).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("iothub-errorcode"), Some("GatewayTimeout"));
    assert_eq!(method_error_code(&r), 504101);

    // The late answer is dropped and the device stays connected.
    let rid = late_rid.lock().unwrap().clone();
    answer(&mut m, &rid, 200, b"{}").await;
    assert!(m.idle_for(Duration::from_millis(300)).await.is_none());
    assert_eq!(hub.read(|h| h.pending_methods()), 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_device_that_subscribes_later_gets_the_waiting_call_and_a_disconnect_fails_it() {
    let (emu, c) = start_http().await;
    let key = create_device(&emu, "d1");
    let call = invoke(
        &c,
        &emu,
        "d1",
        json!({"methodName": "late", "payload": 1, "connectTimeoutInSeconds": 30}),
    );
    let device = async {
        let mut m = connect(device_options(&emu, "d1", &key, true)).await;
        m.client
            .subscribe("$iothub/methods/POST/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        let (name, rid, got) = next_request(&mut m).await;
        assert_eq!((name.as_str(), got.as_slice()), ("late", b"1".as_slice()));
        answer(&mut m, &rid, 200, b"\"ok\"").await;
        m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
            .await;
        m
    };
    let (r, mut m) = within(async { tokio::join!(call, device) }).await;
    assert_eq!(r.json(), json!({"status": 200, "payload": "ok"}));

    // Unsubscribing stops delivery: the next call with connect timeout 0 is 404103.
    m.client
        .unsubscribe("$iothub/methods/POST/#")
        .await
        .unwrap();
    m.until(|p| matches!(p, Incoming::UnsubAck(_)).then_some(()))
        .await;
    let r = invoke(&c, &emu, "d1", json!({"methodName": "m"})).await;
    assert_eq!(method_error_code(&r), 404103);

    // A connection that closes with a call in flight fails it with the hub's 404104.
    m.client
        .subscribe("$iothub/methods/POST/#", QoS::AtMostOnce)
        .await
        .unwrap();
    m.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    let call = invoke(&c, &emu, "d1", json!({"methodName": "m"}));
    let device = async {
        next_request(&mut m).await;
        m.client.disconnect().await.unwrap();
        let _ = m.idle_for(Duration::from_millis(200)).await;
    };
    let (r, ()) = within(async { tokio::join!(call, device) }).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(method_error_code(&r), 404104);
    emu.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_to_one_device_are_independent() {
    let (emu, c) = start_http().await;
    let mut m = listening_device(&emu, "d1").await;
    let calls = futures_util::future::join_all((0..5).map(|i| {
        invoke(
            &c,
            &emu,
            "d1",
            json!({"methodName": format!("m{i}"), "payload": i}),
        )
    }));
    let device = async {
        let mut rids = Vec::new();
        for _ in 0..5 {
            rids.push(next_request(&mut m).await);
        }
        let unique: std::collections::BTreeSet<_> = rids.iter().map(|r| r.1.clone()).collect();
        assert_eq!(unique.len(), 5, "request ids are unique");
        // Answer in reverse order, each with its own payload back.
        for (_, rid, payload) in rids.iter().rev() {
            answer(&mut m, rid, 200, payload).await;
        }
        for _ in 0..5 {
            m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
                .await;
        }
    };
    let (results, ()) = within(async { tokio::join!(calls, device) }).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.json(), json!({"status": 200, "payload": i}));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn module_methods_answer_module_not_found() {
    let (emu, c) = start_http().await;
    create_device(&emu, "d1");
    let r = c
        .post("/twins/d1/modules/m1/methods")
        .auth(&owner_token(&emu))
        .json(&json!({"methodName": "m"}))
        .send()
        .await;
    r.assert_hub_error(404, "ModuleNotFound");
    emu.shutdown().await;
}

mod amqp_device {
    //! The device side over AMQP, as the Node and C# SDKs attach it.

    use fe2o3_amqp::types::messaging::{
        ApplicationProperties, Body, Message, MessageId, Properties,
    };
    use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
    use fe2o3_amqp::{Receiver, Sender};
    use serde_json::json;

    use super::{invoke, method_error_code};
    use crate::support::amqp::{authorized, finish};
    use crate::support::http::start_http;
    use crate::support::{create_device, device_token, wait_until, within};

    #[tokio::test]
    async fn amqp_method_links_take_requests_and_answers() {
        let (emu, c) = start_http().await;
        let key = create_device(&emu, "d1");
        let (conn, mut s, _cbs) = authorized(&emu, &device_token(&emu, "d1", &key)).await;
        // Node's spelling for one link, C#'s for the other.
        let mut requests = within(Receiver::attach(
            &mut s,
            "methods-rx",
            "/devices/d1/methods/devicebound",
        ))
        .await
        .unwrap();
        let mut answers = within(Sender::attach(
            &mut s,
            "methods-tx",
            "amqps://localhost/devices/d1/methods/deviceBound",
        ))
        .await
        .unwrap();
        let hub = emu.hub().clone();
        wait_until("listening", || {
            hub.read(|h| h.method_target(&iothub_emulator::hub::Identity::device("d1")))
                .is_some()
        })
        .await;

        for (i, payload) in [json!(null), json!(""), json!({"k1": "v1"}), json!([1])]
            .into_iter()
            .enumerate()
        {
            let call = invoke(
                &c,
                &emu,
                "d1",
                json!({"methodName": "reboot", "payload": payload}),
            );
            let device = async {
                let d = within(requests.recv::<Body<Value>>()).await.unwrap();
                within(requests.accept(&d)).await.unwrap();
                let m = d.into_message();
                let props = m.properties.clone().unwrap();
                let Some(MessageId::Uuid(cid)) = props.correlation_id else {
                    panic!("correlation id is not a uuid: {props:?}");
                };
                let app = m.application_properties.clone().unwrap();
                assert_eq!(
                    app.0.get("IoThub-methodname"),
                    Some(&SimpleValue::String("reboot".into()))
                );
                let Body::Data(data) = m.body else {
                    panic!("body is not data")
                };
                let body: Vec<u8> = data.iter().flat_map(|d| d.0.to_vec()).collect();
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                    payload
                );
                // Node answers with the uuid as a string on the even calls, C# as a uuid.
                let correlation_id = if i % 2 == 0 {
                    MessageId::String(uuid::Uuid::from_bytes(cid.into_inner()).to_string())
                } else {
                    MessageId::Uuid(cid)
                };
                let answer = Message::builder()
                    .properties(Properties {
                        correlation_id: Some(correlation_id),
                        ..Properties::default()
                    })
                    .application_properties(
                        ApplicationProperties::builder()
                            .insert("IoThub-status", 200 + i as i32)
                            .build(),
                    )
                    .data(Binary::from(body))
                    .build();
                within(answers.send(answer)).await.unwrap();
            };
            let (r, ()) = within(async { tokio::join!(call, device) }).await;
            assert_eq!(r.json(), json!({"status": 200 + i, "payload": payload}));
        }

        // Detaching the request link stops delivery.
        within(requests.close()).await.unwrap();
        wait_until("not listening", || {
            hub.read(|h| h.method_target(&iothub_emulator::hub::Identity::device("d1")))
                .is_none()
        })
        .await;
        let r = invoke(&c, &emu, "d1", json!({"methodName": "m"})).await;
        assert_eq!(method_error_code(&r), 404103);
        let _ = answers.close().await;
        finish(conn, emu).await;
    }
}
