//! Durable state: an emulator started on a data directory continues where the last one on it
//! stopped (devices and their keys, twins, queued C2D, the Event Hubs-compatible event log
//! with its numbering), and a second one on the same directory refuses to start.

use std::path::PathBuf;

use crate::support::mqtt::*;
use crate::support::*;
use iothub_emulator::hub::Identity;
use iothub_emulator::{Emulator, RunningEmulator, StartError};
use iothub_protocol::Message;
use iothub_protocol::twin::TwinWrite;
use iothub_service::events::{Event, EventConsumer, EventPosition};
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

#[tokio::test]
async fn many_c2d_sends_in_flight_on_one_amqp_link_are_accepted_and_survive_a_restart() {
    use crate::support::amqp::{authorized, to};
    use fe2o3_amqp::Sender;
    use fe2o3_amqp::types::messaging::{Message as AmqpMessage, Outcome, Properties};

    const N: usize = 40;
    let dir = temp_dir("amqp-pipelined");
    let emu = start_on(&dir).await.expect("starts");
    create_device(&emu, "dev1");
    let (mut c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = within(Sender::attach(&mut s, "c2d", "/messages/devicebound"))
        .await
        .expect("sender attached");
    // All sent before any outcome is awaited: the link takes them on while the disk syncs.
    let mut outcomes = Vec::new();
    for i in 0..N {
        let m = AmqpMessage::builder()
            .properties(Properties {
                to: Some(to("dev1")),
                ..Properties::default()
            })
            .data(format!("c{i}").into_bytes())
            .build();
        outcomes.push(within(sender.send_batchable(m)).await.expect("sent"));
    }
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = within(outcome).await.expect("settled");
        assert!(matches!(outcome, Outcome::Accepted(_)), "{i}: {outcome:?}");
    }
    let _ = within(c.close()).await;
    emu.shutdown().await;

    let emu = start_on(&dir).await.expect("restarts");
    let queued: Vec<String> = emu.hub().read(|h| {
        h.peek_c2d("dev1")
            .expect("device kept")
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
            .collect()
    });
    let expected: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    assert_eq!(queued, expected, "every accepted message, once, in order");
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn events_consumer(emu: &RunningEmulator) -> EventConsumer {
    let s = emu
        .config()
        .eventhub_connection_string(Some(emu.endpoints().eventhubs))
        .expect("service policy");
    EventConsumer::from_connection_string(&s).expect("consumer")
}

/// Reads `n` events of every partition from the earliest on.
async fn read_from_earliest(emu: &RunningEmulator, n: usize) -> Vec<Event> {
    use futures_util::StreamExt;
    let consumer = events_consumer(emu);
    let mut events = within(consumer.receive_all(EventPosition::Earliest))
        .await
        .expect("receiving");
    let mut out = Vec::new();
    for _ in 0..n {
        let e = within(events.next()).await.expect("the stream goes on");
        out.push(e.expect("an event"));
    }
    drop(events);
    consumer.close().await;
    out.sort_by_key(|e| (e.partition_id.clone(), e.sequence_number));
    out
}

fn numbering(events: &[Event]) -> Vec<(String, i64, String, Option<time::OffsetDateTime>, String)> {
    events
        .iter()
        .map(|e| {
            let body = e.body_str().unwrap_or_default().to_owned();
            (
                e.partition_id.clone(),
                e.sequence_number,
                e.offset.clone(),
                e.enqueued_time,
                body,
            )
        })
        .collect()
}

/// Telemetry acknowledged before a restart (PUBACK) is read afterwards by an Event Hubs
/// consumer with the same sequence numbers, offsets and enqueued times, and new telemetry
/// continues the numbering instead of starting from 0.
#[tokio::test]
async fn a_restart_keeps_the_event_log_and_its_sequence_numbers() {
    let dir = temp_dir("events");
    let emu = start_on(&dir).await.expect("starts");
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    for i in 0..3 {
        d.client
            .publish(
                "devices/dev1/messages/events/k=v",
                QoS::AtLeastOnce,
                false,
                format!("before-{i}"),
            )
            .await
            .expect("publish queued");
        d.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
            .await;
    }
    drop(d);
    let before = read_from_earliest(&emu, 3).await;
    assert_eq!(
        before.iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    emu.shutdown().await;

    let emu = start_on(&dir)
        .await
        .expect("restarts on the same directory");
    let after = read_from_earliest(&emu, 3).await;
    assert_eq!(numbering(&after), numbering(&before));
    assert_eq!(after[0].device_id.as_deref(), Some("dev1"));
    assert_eq!(after[0].message.properties.get("k"), Some("v"));
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    d.client
        .publish(
            "devices/dev1/messages/events/",
            QoS::AtLeastOnce,
            false,
            "after",
        )
        .await
        .expect("publish queued");
    d.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
        .await;
    let all = read_from_earliest(&emu, 4).await;
    let last = &all[3];
    assert_eq!(last.body_str(), Some("after"));
    assert_eq!(
        last.sequence_number, 3,
        "numbering continues after the restart"
    );
    let offset = |e: &Event| e.offset.parse::<u64>().expect("decimal offset");
    assert!(offset(last) > offset(&all[2]));
    assert!(last.enqueued_time >= all[2].enqueued_time);
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
