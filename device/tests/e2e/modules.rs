//! The device client as a module identity (`ModuleId=` in the connection string) over MQTT
//! (TLS and WebSocket): telemetry stamped with the module id, the module's own twin and
//! methods, no C2D, HTTPS refused, and a module's key never standing in for its device.

use std::time::Duration;

use iothub_device::{DeviceClient, Error, Message, MethodResponse, Transport};
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::Identity;
use iothub_emulator::hub::event_log::partition_for_device;
use iothub_protocol::EventPosition;
use iothub_protocol::method::{JsonPayload, MethodCall};
use iothub_protocol::module::Module;
use iothub_protocol::registry::ConnectionState;
use iothub_protocol::sas::build_token;
use iothub_protocol::twin::TwinWrite;
use serde_json::json;

use crate::common::*;

/// Creates the device (if needed) and the module; returns the module's connection string.
fn create_module(emu: &RunningEmulator, device: &str, module: &str) -> String {
    if emu.hub().read(|h| h.get_device(device)).is_err() {
        emu.create_device(device).expect("device created");
    }
    let m = emu
        .hub()
        .run(|h, now| h.create_module(Module::new(device, module), now))
        .expect("module created");
    format!(
        "HostName={};DeviceId={device};ModuleId={module};SharedAccessKey={}",
        emu.config().hostname,
        m.primary_key().expect("generated key")
    )
}

async fn connect_module(
    emu: &RunningEmulator,
    device: &str,
    module: &str,
    transport: Transport,
) -> DeviceClient {
    let cs = create_module(emu, device, module);
    builder(emu, &cs, transport)
        .connect()
        .await
        .expect("the module connects")
}

async fn module_telemetry_twin_and_methods(transport: Transport) {
    let emu = start().await;
    let client = connect_module(&emu, "d1", "m1", transport).await;
    assert_eq!((client.device_id(), client.module_id()), ("d1", Some("m1")));
    // The registry shows the module connected, and not its device.
    until("the module shows connected", || {
        emu.hub()
            .read(|h| h.get_module("d1", "m1").map(|m| m.connection_state))
            == Ok(ConnectionState::Connected)
    })
    .await;
    assert_eq!(
        emu.hub()
            .read(|h| h.get_device("d1").map(|d| d.connection_state)),
        Ok(ConnectionState::Disconnected)
    );

    // Telemetry lands in the event log with the module's id.
    let mut m = Message::new("from m1");
    m.properties.insert("k", "v");
    client.send_event(m).await.expect("acknowledged");
    let partition = partition_for_device("d1", 4).to_string();
    let events = emu.hub().read(|h| {
        let mut c = h
            .cursor(&partition, &EventPosition::Earliest)
            .expect("cursor");
        h.read_events(&mut c, 100)
    });
    let e = events
        .iter()
        .find(|e| e.message.body == b"from m1")
        .expect("the event");
    assert_eq!(e.origin.module_id.as_deref(), Some("m1"));
    assert_eq!(e.message.properties.get("k"), Some("v"));
    assert!(
        e.annotations()
            .iter()
            .any(|(n, _)| *n == "iothub-connection-module-id"),
        "annotated with the module id"
    );

    // The module's twin, not the device's.
    let module = Identity::module("d1", "m1");
    let version = client
        .update_reported(&json!({"fw": "2.0"}))
        .await
        .expect("reported");
    assert!(version >= 2, "{version}");
    let twin = emu.hub().read(|h| h.get_twin(&module)).unwrap();
    assert_eq!(twin.properties.reported["fw"], "2.0");
    let device_twin = emu
        .hub()
        .read(|h| h.get_twin(&Identity::device("d1")))
        .unwrap();
    assert!(device_twin.properties.reported.get("fw").is_none());

    let mut updates = client.desired_updates().unwrap();
    // A GET round trip after subscribing: the SUBSCRIBE is handled before it.
    let props = client.twin().await.unwrap();
    assert_eq!(props.reported["fw"], "2.0");
    let w = TwinWrite::from_json(&json!({"properties": {"desired": {"rate": 5}}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&module, &w, None, now))
        .unwrap();
    let update = tokio::time::timeout(WAIT, updates.next())
        .await
        .expect("a desired patch in time")
        .expect("updates continue");
    assert_eq!(update.patch["rate"], 5);

    // The module's methods.
    client
        .on_method("reset", |req| async move {
            MethodResponse::new(200, &format!(r#"{{"got":{}}}"#, req.payload.as_str()))
        })
        .await
        .expect("subscribed");
    let pending = emu
        .hub()
        .invoke_method(
            &module,
            MethodCall::new("reset", JsonPayload::from_json(r#"{"n":1}"#).unwrap()),
        )
        .expect("invocation accepted");
    let r = tokio::time::timeout(Duration::from_secs(20), pending.outcome())
        .await
        .expect("answered in time")
        .expect("the module answered");
    assert_eq!((r.status, r.payload.as_str()), (200, r#"{"got":{"n":1}}"#));
    // The device itself is not listening: the module's handler is not the device's.
    assert!(
        emu.hub()
            .read(|h| h.method_target(&Identity::device("d1")))
            .is_none()
    );

    // No C2D for modules: a typed error, and the stream ends.
    let err = client.recv().await.unwrap_err();
    assert!(
        matches!(err, Error::NotSupportedForModule { ref module, .. } if module == "d1/m1"),
        "{err}"
    );
    assert!(client.messages().next().await.is_none());
    // The client is still fine after that.
    client
        .send_event(Message::new("still here"))
        .await
        .expect("acknowledged");

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_telemetry_twin_and_methods_over_mqtt() {
    module_telemetry_twin_and_methods(Transport::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_telemetry_twin_and_methods_over_websocket() {
    module_telemetry_twin_and_methods(Transport::MqttWebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_key_cannot_act_as_the_device_nor_the_reverse() {
    let emu = start().await;
    let device_cs = emu.create_device("d1").unwrap();
    let module_cs = create_module(&emu, "d1", "m1");
    let key = |cs: &str| cs.split("SharedAccessKey=").nth(1).unwrap().to_owned();
    let host = &emu.config().hostname;

    let as_device = format!(
        "HostName={host};DeviceId=d1;SharedAccessKey={}",
        key(&module_cs)
    );
    let err = builder(&emu, &as_device, Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    let as_module = format!(
        "HostName={host};DeviceId=d1;ModuleId=m1;SharedAccessKey={}",
        key(&device_cs)
    );
    let err = builder(&emu, &as_module, Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    // Another module of the same device with m1's key.
    create_module(&emu, "d1", "m2");
    let as_m2 = format!(
        "HostName={host};DeviceId=d1;ModuleId=m2;SharedAccessKey={}",
        key(&module_cs)
    );
    let err = builder(&emu, &as_m2, Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    // A ready-made module token does not pass for the device either.
    let se = emu.context().now_unix() + 3600;
    let module_token = build_token(
        &format!("{host}/devices/d1/modules/m1"),
        &key(&module_cs),
        None,
        se,
    )
    .unwrap();
    let as_device = format!("HostName={host};DeviceId=d1;SharedAccessSignature={module_token}");
    let err = builder(&emu, &as_device, Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    // ... while the same token as the module works.
    let as_module =
        format!("HostName={host};DeviceId=d1;ModuleId=m1;SharedAccessSignature={module_token}");
    let m1 = builder(&emu, &as_module, Transport::Mqtt)
        .connect()
        .await
        .expect("the module's own token is accepted");
    m1.send_event(Message::new("ok"))
        .await
        .expect("acknowledged");
    m1.close().await;

    // An unknown module is refused the same way.
    let ghost = format!(
        "HostName={host};DeviceId=d1;ModuleId=ghost;SharedAccessKey={}",
        key(&module_cs)
    );
    assert!(
        builder(&emu, &ghost, Transport::Mqtt)
            .connect()
            .await
            .is_err()
    );

    // HTTPS has no module routes in this client: refused before connecting.
    let err = builder(&emu, &module_cs, Transport::Https)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    emu.shutdown().await;
}
