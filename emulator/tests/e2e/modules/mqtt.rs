//! Module connections over MQTT: client id `{id}/{mid}`, module tokens, telemetry on the
//! module's own topic into the event log, module twins, and the per-connection ACL.

use crate::support::mqtt::*;
use crate::support::*;
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::event_log::partition_for_device;
use iothub_protocol::EventPosition;
use iothub_protocol::module::Module;
use iothub_protocol::registry::ConnectionState;
use iothub_protocol::sas::build_token;
use rumqttc::{ConnectReturnCode, Incoming, QoS};
use serde_json::Value;

/// Creates `device/module` (and the device) and returns the module's primary key.
pub(super) fn create_module(emu: &RunningEmulator, device: &str, module: &str) -> String {
    if emu.hub().read(|h| h.get_device(device)).is_err() {
        create_device(emu, device);
    }
    emu.hub()
        .run(|hub, now| hub.create_module(Module::new(device, module), now))
        .expect("module created")
        .primary_key()
        .expect("generated key")
        .to_owned()
}

pub(super) fn module_token(emu: &RunningEmulator, device: &str, module: &str, key: &str) -> String {
    let se = emu.context().now_unix() + 3600;
    build_token(
        &format!("localhost/devices/{device}/modules/{module}"),
        key,
        None,
        se,
    )
    .expect("token")
}

fn module_options(
    emu: &RunningEmulator,
    device: &str,
    module: &str,
    token: &str,
) -> rumqttc::MqttOptions {
    let client_id = format!("{device}/{module}");
    options(emu, &client_id, &username(&client_id), token, true)
}

#[tokio::test]
async fn a_module_connects_sends_telemetry_and_reads_its_twin() {
    let emu = start().await;
    let key = create_module(&emu, "d1", "m1");
    let token = module_token(&emu, "d1", "m1", &key);
    let mut m = connect(module_options(&emu, "d1", "m1", &token)).await;
    assert_eq!(m.connack.code, ConnectReturnCode::Success);
    wait_until("module connected", || {
        emu.hub()
            .read(|h| h.get_module("d1", "m1").map(|m| m.connection_state))
            == Ok(ConnectionState::Connected)
    })
    .await;
    assert_eq!(
        emu.hub()
            .read(|h| h.get_device("d1").map(|d| d.connection_state)),
        Ok(ConnectionState::Disconnected),
        "the module's connection is not the device's"
    );

    m.client
        .publish(
            "devices/d1/modules/m1/messages/events/k=v",
            QoS::AtLeastOnce,
            false,
            b"t1".to_vec(),
        )
        .await
        .expect("publish queued");
    m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
        .await;
    let partition = partition_for_device("d1", 4).to_string();
    let events = emu.hub().read(|h| {
        let mut c = h
            .cursor(&partition, &EventPosition::Earliest)
            .expect("cursor");
        h.read_events(&mut c, 100)
    });
    let e = events
        .iter()
        .find(|e| e.message.body == b"t1")
        .expect("event");
    assert_eq!(e.origin.module_id.as_deref(), Some("m1"));
    assert_eq!(e.message.properties.get("k"), Some("v"));
    let names: Vec<_> = e.annotations().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"iothub-connection-module-id"), "{names:?}");

    // The module twin over the device's twin topics, scoped by the connection.
    m.client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    m.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    m.client
        .publish(
            "$iothub/twin/GET/?$rid=7",
            QoS::AtLeastOnce,
            false,
            Vec::new(),
        )
        .await
        .expect("publish queued");
    let res = m
        .until(|p| match p {
            Incoming::Publish(p) if p.topic.starts_with("$iothub/twin/res/") => Some(p.clone()),
            _ => None,
        })
        .await;
    assert!(
        res.topic.starts_with("$iothub/twin/res/200/"),
        "{}",
        res.topic
    );
    let body: Value = serde_json::from_slice(&res.payload).expect("json");
    assert_eq!(body["desired"]["$version"], 1);

    // The ACL: a module may not publish on its device's events topic.
    m.client
        .publish(
            "devices/d1/messages/events/",
            QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .expect("publish queued");
    m.until_closed().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn module_and_device_tokens_do_not_grant_each_other() {
    let emu = start().await;
    let mkey = create_module(&emu, "d1", "m1");
    create_module(&emu, "d1", "m2");
    let dkey = device_key(&emu, "d1");
    let refused = |r: Result<Mqtt, rumqttc::ConnectionError>| match r {
        Err(rumqttc::ConnectionError::ConnectionRefused(c)) => c,
        Err(e) => panic!("expected a refusing CONNACK, got {e:?}"),
        Ok(_) => panic!("connected"),
    };
    // The device's token as a module, a module's token as the device or as another module.
    let device = device_token(&emu, "d1", &dkey);
    let c = refused(try_connect(module_options(&emu, "d1", "m1", &device)).await);
    assert_eq!(c, ConnectReturnCode::NotAuthorized);
    let module = module_token(&emu, "d1", "m1", &mkey);
    let c = refused(try_connect(options(&emu, "d1", &username("d1"), &module, true)).await);
    assert_eq!(c, ConnectReturnCode::NotAuthorized);
    let c = refused(try_connect(module_options(&emu, "d1", "m2", &module)).await);
    assert_eq!(c, ConnectReturnCode::NotAuthorized);
    // Deleting the module closes its connection.
    let mut m = connect(module_options(&emu, "d1", "m1", &module)).await;
    emu.hub()
        .run(|hub, now| hub.delete_module("d1", "m1", None, now))
        .expect("deleted");
    m.until_closed().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn a_module_answers_its_own_method_calls_not_the_devices() {
    let (emu, c) = crate::support::http::start_http().await;
    let key = create_module(&emu, "d1", "m1");
    let token = module_token(&emu, "d1", "m1", &key);
    let mut m = connect(module_options(&emu, "d1", "m1", &token)).await;
    m.client
        .subscribe("$iothub/methods/POST/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    m.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    let owner = owner_token(&emu);
    let call = serde_json::json!({"methodName": "blink", "payload": {"n": 2}, "responseTimeoutInSeconds": 30});
    // The device itself is not listening: the module's subscription does not serve it.
    let r = c
        .post("/twins/d1/methods")
        .auth(&owner)
        .json(&call)
        .send()
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let module = async {
        let p = m.next_publish().await;
        let rest = p
            .topic
            .strip_prefix("$iothub/methods/POST/blink/?$rid=")
            .expect("a method request for blink");
        m.client
            .publish(
                format!("$iothub/methods/res/201/?$rid={rest}"),
                QoS::AtLeastOnce,
                false,
                p.payload.to_vec(),
            )
            .await
            .expect("publish queued");
        m.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
            .await;
    };
    let invoke = c
        .post("/twins/d1/modules/m1/methods?api-version=2021-04-12")
        .auth(&owner)
        .json(&call)
        .send();
    let (r, ()) = within(async { tokio::join!(invoke, module) }).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"status": 201, "payload": {"n": 2}})
    );
    emu.shutdown().await;
}
