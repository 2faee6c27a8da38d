//! Durable state: an emulator started on a data directory continues where the last one on it
//! stopped (devices and their keys, twins, queued C2D), and a second one on the same directory
//! refuses to start.

use std::path::PathBuf;

use crate::support::mqtt::*;
use crate::support::*;
use iothub_emulator::hub::Identity;
use iothub_emulator::{Emulator, RunningEmulator, StartError};
use iothub_protocol::Message;
use iothub_protocol::twin::TwinWrite;
use rumqttc::{Incoming, QoS};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iothub-emulator-durable-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn start_on(dir: &PathBuf) -> Result<RunningEmulator, StartError> {
    Emulator::builder().durable(dir).start().await
}

#[tokio::test]
async fn a_restart_keeps_devices_keys_twins_and_queued_messages() {
    let dir = temp_dir("restart");
    let emu = start_on(&dir).await.expect("starts");
    let key = create_device(&emu, "dev1");
    let body = serde_json::json!({"tags": {"site": "lab"}});
    let write = TwinWrite::from_json(&body).expect("twin write");
    emu.hub()
        .run(|h, now| h.update_twin(&Identity::device("dev1"), &write, None, now))
        .expect("twin updated");
    emu.hub()
        .run(|h, now| h.enqueue_c2d("dev1", Message::new("kept"), now))
        .expect("enqueued");
    emu.hub().synced().await.expect("on disk");
    emu.shutdown().await;

    let emu = start_on(&dir)
        .await
        .expect("restarts on the same directory");
    let twin = emu
        .hub()
        .read(|h| h.get_twin(&Identity::device("dev1")))
        .expect("twin kept");
    assert_eq!(twin.tags.get("site"), Some(&serde_json::json!("lab")));
    // The old key still connects, and the queued message is delivered.
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    d.client
        .subscribe("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    d.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
    let p = d.next_publish().await;
    assert_eq!(&p.payload[..], b"kept");
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_second_emulator_on_the_same_directory_refuses_to_start() {
    let dir = temp_dir("twice");
    let first = start_on(&dir).await.expect("starts");
    let second = start_on(&dir).await.err().expect("refused");
    assert!(second.to_string().contains("in use"), "{second}");
    first.shutdown().await;
    // A clean stop releases the directory.
    start_on(&dir)
        .await
        .expect("starts after the first stopped")
        .shutdown()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn many_qos1_publishes_in_flight_are_acked_in_order_and_survive_a_restart() {
    const N: usize = 40;
    let dir = temp_dir("pipelined");
    let emu = start_on(&dir).await.expect("starts");
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    // Published without waiting for any PUBACK: the connection reads on while the disk syncs.
    let client = d.client.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            client
                .publish(
                    "devices/dev1/messages/events/",
                    QoS::AtLeastOnce,
                    false,
                    format!("m{i}"),
                )
                .await
                .expect("publish queued");
        }
    });
    let mut sent = Vec::new();
    let mut acked = Vec::new();
    while acked.len() < N {
        let (out, pkid) = d
            .until_event(|e| match e {
                rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(id)) => Some((true, *id)),
                rumqttc::Event::Incoming(Incoming::PubAck(a)) => Some((false, a.pkid)),
                _ => None,
            })
            .await;
        if out {
            sent.push(pkid)
        } else {
            acked.push(pkid)
        }
    }
    publisher.await.expect("publisher");
    assert_eq!(acked, sent, "PUBACKs in the order of the PUBLISHes");
    emu.shutdown().await;

    let emu = start_on(&dir).await.expect("restarts");
    let bodies: Vec<String> = emu.hub().read(|h| {
        let mut all = Vec::new();
        for p in h.event_hub_info().partition_ids {
            let mut c = h
                .cursor(&p, &iothub_protocol::EventPosition::Earliest)
                .expect("cursor");
            all.extend(
                h.read_events(&mut c, 10 * N)
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.message.body).into_owned()),
            );
        }
        all
    });
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(
        bodies, expected,
        "every acknowledged message, once, in order"
    );
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
