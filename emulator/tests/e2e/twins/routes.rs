//! Routes: with `[routes]` switched on, twin changes, lifecycle and connection-state events
//! land in the event log behind the Event Hubs-compatible endpoint; without, nothing does.

use crate::support::mqtt::*;
use crate::support::*;
use iothub_emulator::hub::event_log::{Event, partition_for_device};
use iothub_emulator::hub::{EventRoutes, HubSettings, Identity};
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_protocol::EventPosition;
use iothub_protocol::registry::Device;
use iothub_protocol::twin::TwinWrite;
use rumqttc::{Incoming, QoS};
use serde_json::{Value, json};
use std::sync::Arc;

fn events(emu: &RunningEmulator, device: &str) -> Vec<Arc<Event>> {
    let partition = partition_for_device(device, 4).to_string();
    emu.hub().read(|h| {
        let mut c = h
            .cursor(&partition, &EventPosition::Earliest)
            .expect("cursor");
        h.read_events(&mut c, 1000)
    })
}

fn kinds(events: &[Arc<Event>], device: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.origin.device_id == device)
        .map(|e| {
            (
                e.source.as_str().to_owned(),
                e.message.properties.get("opType").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn twin_routes_put_change_lifecycle_and_connection_events_in_the_log() {
    let settings = HubSettings {
        routes: EventRoutes {
            twin_change_events: true,
            device_lifecycle_events: true,
            device_connection_state_events: true,
        },
        ..HubSettings::default()
    };
    let emu = Emulator::builder()
        .hub_settings(settings)
        .start()
        .await
        .expect("emulator starts");
    let key = create_device(&emu, "r1");
    let mut d = connect(device_options(&emu, "r1", &key, true)).await;
    d.client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    d.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    d.client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            QoS::AtLeastOnce,
            false,
            br#"{"t":null,"u":1}"#.to_vec(),
        )
        .await
        .unwrap();
    d.until(|p| match p {
        Incoming::Publish(p) if p.topic.starts_with("$iothub/twin/res/204/") => Some(()),
        _ => None,
    })
    .await;
    let w = TwinWrite::from_json(&json!({"properties": {"desired": {"x": 1}}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&Identity::device("r1"), &w, None, now))
        .unwrap();
    d.client.disconnect().await.unwrap();
    let _ = d.until_closed().await;
    wait_until("disconnected event", || {
        kinds(&events(&emu, "r1"), "r1").len() >= 5
    })
    .await;
    let all = events(&emu, "r1");
    assert_eq!(
        kinds(&all, "r1"),
        [
            (
                "deviceLifecycleEvents".into(),
                "createDeviceIdentity".into()
            ),
            (
                "deviceConnectionStateEvents".into(),
                "deviceConnected".into()
            ),
            ("twinChangeEvents".into(), "updateTwin".into()),
            ("twinChangeEvents".into(), "updateTwin".into()),
            (
                "deviceConnectionStateEvents".into(),
                "deviceDisconnected".into()
            ),
        ]
    );
    let reported = all
        .iter()
        .find(|e| e.message.properties.get("opType") == Some("updateTwin"))
        .unwrap();
    let body: Value = serde_json::from_slice(&reported.message.body).unwrap();
    // The patch as sent, nulls kept (the Python e2e helper checks exactly this).
    assert_eq!(body["properties"]["reported"]["t"], Value::Null);
    assert_eq!(body["properties"]["reported"]["u"], json!(1));
    assert_eq!(
        reported.message.system.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(reported.message.properties.get("deviceId"), Some("r1"));
    emu.shutdown().await;
}

#[tokio::test]
async fn twin_routes_are_off_by_default() {
    let emu = start().await;
    emu.hub()
        .run(|h, now| h.create_device(Device::new("r2"), now))
        .unwrap();
    let w = TwinWrite::from_json(&json!({"tags": {"a": 1}})).unwrap();
    emu.hub()
        .run(|h, now| h.update_twin(&Identity::device("r2"), &w, None, now))
        .unwrap();
    assert!(events(&emu, "r2").is_empty());
    emu.shutdown().await;
}
