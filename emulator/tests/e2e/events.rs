//! The Rust service client's events consumer (`iothub_service::events`) against the built-in
//! Event Hubs-compatible endpoint: devices send over MQTT, AMQP and HTTPS, the consumer reads
//! with every start position, over the plain development listener, over TLS, over a WebSocket,
//! and after the redirect from the IoT Hub connection string; `$management` information; owner
//! levels; and `iothub-emulator monitor`'s output.

use std::collections::BTreeMap;
use std::time::Duration;

use fe2o3_amqp::Sender;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::Symbol;
use futures_util::StreamExt;
use iothub_emulator::hub::event_log::{Origin, partition_for_device};
use iothub_emulator::hub::{EventLogSettings, HubSettings};
use iothub_emulator::{Emulator, RunningEmulator, monitor};
use iothub_protocol::Message as HubMessage;
use iothub_service::events::{Event, EventConsumer, EventPosition, EventStream};
use iothub_service::{AmqpTransport, Error};
use rumqttc::{Incoming, QoS};

use crate::support::amqp::authorized;
use crate::support::http::Client;
use crate::support::mqtt::{connect, device_options};
use crate::support::*;

/// The `UseDevelopmentEmulator=true` connection string: plain AMQP, no CA.
fn development_string(emu: &RunningEmulator) -> String {
    emu.config()
        .eventhub_connection_string(Some(emu.endpoints().eventhubs))
        .expect("service policy")
}

fn consumer(emu: &RunningEmulator) -> EventConsumer {
    EventConsumer::from_connection_string(&development_string(emu)).expect("consumer")
}

/// Sends telemetry through the hub itself (the transports are covered by their own test).
fn send(emu: &RunningEmulator, device: &str, body: &str) {
    if emu.hub().read(|hub| hub.get_device(device)).is_err() {
        create_device(emu, device);
    }
    let mut m = HubMessage::new(body);
    m.system.message_id = Some(format!("id-{body}").as_str().into());
    m.properties.insert("k", body);
    emu.hub()
        .run(|hub, now| hub.send_telemetry(&Origin::device(device), m, now))
        .expect("telemetry accepted");
}

async fn next(events: &mut EventStream) -> Event {
    within(events.next())
        .await
        .expect("the stream goes on")
        .expect("an event")
}

/// Asserts that nothing arrives for a moment.
async fn quiet(events: &mut EventStream) {
    let got = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(got.is_err(), "expected no event, got {got:?}");
}

fn bodies(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.body_str().unwrap_or_default().to_owned())
        .collect()
}

async fn take(events: &mut EventStream, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(events).await);
    }
    out
}

#[tokio::test]
async fn events_consumer_reads_what_devices_send_over_mqtt_amqp_and_https() {
    let emu = start().await;
    let consumer = consumer(&emu);
    // Latest: only what is sent once the links are attached.
    send(&emu, "before", "old");
    let mut events = within(consumer.receive_all(EventPosition::Latest))
        .await
        .expect("receive_all");
    assert_eq!(events.partition_ids(), ["0", "1", "2", "3"]);

    let key = create_device(&emu, "d-mqtt");
    let mut d = connect(device_options(&emu, "d-mqtt", &key, true)).await;
    d.client
        .publish(
            "devices/d-mqtt/messages/events/%24.mid=m-mqtt&%24.ct=application%2Fjson&%24.ce=utf-8&via=mqtt",
            QoS::AtLeastOnce,
            false,
            r#"{"t":1}"#,
        )
        .await
        .expect("publish queued");
    d.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
        .await;

    let key = create_device(&emu, "d-amqp");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "d-amqp", &key)).await;
    let mut tx = within(Sender::attach(
        &mut s,
        "d2c",
        "/devices/d-amqp/messages/events",
    ))
    .await
    .expect("sender");
    let m = Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String("m-amqp".into())),
            correlation_id: Some(MessageId::String("c-amqp".into())),
            content_type: Some(Symbol::from("text/plain")),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("via", "amqp")
                .build(),
        )
        .data(b"over amqp".to_vec())
        .build();
    within(tx.send(m)).await.expect("accepted");

    let key = create_device(&emu, "d-http");
    let r = Client::new(&emu)
        .post("/devices/d-http/messages/events?api-version=2021-04-12")
        .auth(&device_token(&emu, "d-http", &key))
        .header("IoTHub-MessageId", "m-http")
        .header("iothub-app-via", "https")
        .body("")
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    let got: BTreeMap<String, Event> = take(&mut events, 3)
        .await
        .into_iter()
        .map(|e| (e.device_id.clone().expect("device id"), e))
        .collect();
    let e = &got["d-mqtt"];
    assert_eq!(e.body(), br#"{"t":1}"#);
    assert_eq!(e.message_id().as_deref(), Some("m-mqtt"));
    assert_eq!(e.content_type(), Some("application/json"));
    assert_eq!(e.content_encoding(), Some("utf-8"));
    assert_eq!(e.properties().get("via"), Some("mqtt"));
    assert_eq!(e.message_source.as_deref(), Some("Telemetry"));
    assert_eq!(
        e.partition_id,
        partition_for_device("d-mqtt", 4).to_string()
    );
    assert!(e.enqueued_time.is_some());
    assert!(e.sequence_number >= 0 && !e.offset.is_empty());
    assert!(
        e.system_properties
            .contains_key("iothub-connection-auth-method")
    );

    let e = &got["d-amqp"];
    assert_eq!(e.body_str(), Some("over amqp"));
    assert_eq!(e.message_id().as_deref(), Some("m-amqp"));
    assert_eq!(e.correlation_id().as_deref(), Some("c-amqp"));
    assert_eq!(e.content_type(), Some("text/plain"));
    assert_eq!(e.properties().get("via"), Some("amqp"));

    let e = &got["d-http"];
    assert!(e.body().is_empty(), "a zero-length body stays empty");
    assert_eq!(e.message_id().as_deref(), Some("m-http"));
    assert_eq!(e.properties().get("via"), Some("https"));
    quiet(&mut events).await;

    drop(events);
    consumer.close().await;
    assert!(matches!(
        consumer.receive("0", EventPosition::Earliest).await,
        Err(Error::Closed)
    ));
    drop(d);
    let _ = c;
    emu.shutdown().await;
}

#[tokio::test]
async fn events_consumer_starts_at_each_position() {
    // A second consumer group: a group takes at most five readers per partition.
    let emu = Emulator::builder()
        .hub_settings(HubSettings {
            event_log: EventLogSettings {
                consumer_groups: vec!["Second".into()],
                ..EventLogSettings::default()
            },
            ..HubSettings::default()
        })
        .start()
        .await
        .expect("emulator starts");
    let consumer = consumer(&emu);
    let second = EventConsumer::builder(&development_string(&emu))
        .unwrap()
        .consumer_group("second")
        .build()
        .unwrap();
    for body in ["a", "b", "c"] {
        send(&emu, "pos", body);
        // Distinct enqueued times (milliseconds) for the enqueued-time positions.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let partition = partition_for_device("pos", 4).to_string();

    let mut earliest = within(consumer.receive(&partition, EventPosition::Earliest))
        .await
        .unwrap();
    let first = take(&mut earliest, 3).await;
    assert_eq!(bodies(&first), ["a", "b", "c"]);
    assert!(
        first
            .windows(2)
            .all(|w| w[1].sequence_number == w[0].sequence_number + 1)
    );
    let b = &first[1];

    let mut latest = within(consumer.receive(&partition, EventPosition::Latest))
        .await
        .unwrap();
    let mut by_seq = within(consumer.receive(
        &partition,
        EventPosition::SequenceNumber {
            sequence_number: b.sequence_number,
            inclusive: true,
        },
    ))
    .await
    .unwrap();
    let mut after_seq = within(consumer.receive(
        &partition,
        EventPosition::SequenceNumber {
            sequence_number: b.sequence_number,
            inclusive: false,
        },
    ))
    .await
    .unwrap();
    let mut by_offset = within(second.receive(
        &partition,
        EventPosition::Offset {
            offset: b.offset.clone(),
            inclusive: false,
        },
    ))
    .await
    .unwrap();
    let b_ms = (b
        .enqueued_time
        .expect("enqueued time")
        .unix_timestamp_nanos()
        / 1_000_000) as i64;
    let mut by_time = within(second.receive(
        &partition,
        EventPosition::EnqueuedTime {
            unix_ms: b_ms,
            inclusive: true,
        },
    ))
    .await
    .unwrap();
    quiet(&mut latest).await;
    send(&emu, "pos", "d");

    assert_eq!(bodies(&take(&mut latest, 1).await), ["d"]);
    assert_eq!(bodies(&take(&mut by_seq, 3).await), ["b", "c", "d"]);
    assert_eq!(bodies(&take(&mut after_seq, 2).await), ["c", "d"]);
    assert_eq!(bodies(&take(&mut by_offset, 2).await), ["c", "d"]);
    assert_eq!(bodies(&take(&mut by_time, 3).await), ["b", "c", "d"]);
    assert_eq!(bodies(&take(&mut earliest, 1).await), ["d"]);
    consumer.close().await;
    second.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn events_consumer_reads_every_partition_and_the_management_information() {
    let emu = start().await;
    let consumer = consumer(&emu);
    let devices: Vec<String> = (0..12).map(|i| format!("dev-{i}")).collect();
    for d in &devices {
        send(&emu, d, d);
    }
    let info = within(consumer.event_hub_properties()).await.unwrap();
    assert_eq!(info.name, emu.config().hub_name());
    assert_eq!(info.partition_ids, ["0", "1", "2", "3"]);
    assert!(info.created_at.is_some());

    let p = partition_for_device("dev-0", 4).to_string();
    let props = within(consumer.partition_properties(&p)).await.unwrap();
    let in_p = devices
        .iter()
        .filter(|d| partition_for_device(d, 4).to_string() == p)
        .count() as i64;
    assert_eq!(props.id, p);
    assert_eq!(props.begin_sequence_number, 0);
    assert_eq!(props.last_enqueued_sequence_number, in_p - 1);
    assert!(!props.is_empty && props.last_enqueued_time.is_some());
    assert!(matches!(
        within(consumer.partition_properties("9")).await,
        Err(Error::ArgumentInvalid { .. })
    ));

    let mut events = within(consumer.receive_all(EventPosition::Earliest))
        .await
        .unwrap();
    let mut seen: Vec<String> = take(&mut events, devices.len())
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(
                e.partition_id,
                partition_for_device(e.device_id.as_deref().unwrap(), 4).to_string()
            );
            e.body_str().unwrap().to_owned()
        })
        .collect();
    seen.sort();
    let mut expected = devices.clone();
    expected.sort();
    assert_eq!(seen, expected);
    quiet(&mut events).await;
    consumer.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn events_consumer_follows_the_redirect_from_the_iot_hub_connection_string() {
    let emu = start().await;
    send(&emu, "redirected", "hello");
    let consumer = EventConsumer::builder(&emu.service_connection_string())
        .unwrap()
        .trust_ca_pem(emu.ca_pem())
        .trust_ca_from_env(false)
        .amqp_port(emu.endpoints().amqp)
        .build()
        .unwrap();
    let mut events = within(consumer.receive_all(EventPosition::Earliest))
        .await
        .expect("redirected and attached");
    let e = next(&mut events).await;
    assert_eq!(e.device_id.as_deref(), Some("redirected"));
    assert_eq!(e.body_str(), Some("hello"));
    consumer.close().await;

    // The TLS form of the Event Hubs-compatible string, on the hub's AMQP port.
    let tls = emu.config().eventhub_connection_string(None).unwrap();
    assert!(!tls.contains("UseDevelopmentEmulator"));
    let consumer = EventConsumer::builder(&tls)
        .unwrap()
        .trust_ca_pem(emu.ca_pem())
        .amqp_port(emu.endpoints().amqp)
        .build()
        .unwrap();
    let mut events = within(consumer.receive_all(EventPosition::Earliest))
        .await
        .unwrap();
    assert_eq!(next(&mut events).await.body_str(), Some("hello"));
    consumer.close().await;

    // A wrong key is refused by the hub host, before any redirect.
    let wrong = emu
        .service_connection_string()
        .replace("SharedAccessKey=", "SharedAccessKey=AAAA");
    let consumer = EventConsumer::builder(&wrong)
        .unwrap()
        .trust_ca_pem(emu.ca_pem())
        .amqp_port(emu.endpoints().amqp)
        .build()
        .unwrap();
    let e = within(consumer.partition_ids()).await.unwrap_err();
    assert!(
        matches!(e, Error::Connection { .. } | Error::Unauthorized { .. }),
        "{e:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn events_consumer_reads_over_a_websocket_with_either_connection_string() {
    let emu = start().await;
    send(&emu, "over-ws", "hello");
    let https = emu.endpoints().https;
    // The Event Hubs-compatible string: /$servicebus/websocket on the HTTPS port.
    let tls = emu.config().eventhub_connection_string(None).unwrap();
    // The IoT Hub string: /$iothub/websocket on the hub host, then the redirect; over
    // WebSockets the consumer stays on the port it reached the hub on.
    for cs in [tls.clone(), emu.service_connection_string()] {
        let consumer = EventConsumer::builder(&cs)
            .unwrap()
            .trust_ca_pem(emu.ca_pem())
            .trust_ca_from_env(false)
            .amqp_transport(AmqpTransport::WebSocket)
            .amqp_port(https)
            .build()
            .unwrap();
        assert_eq!(
            within(consumer.partition_ids()).await.unwrap().len(),
            4,
            "{cs}"
        );
        let mut events = within(consumer.receive_all(EventPosition::Earliest))
            .await
            .expect("attached over a WebSocket");
        let e = next(&mut events).await;
        assert_eq!(e.device_id.as_deref(), Some("over-ws"));
        assert_eq!(e.body_str(), Some("hello"));
        consumer.close().await;
    }
    // The development form is plain AMQP only.
    let e = EventConsumer::builder(&development_string(&emu))
        .unwrap()
        .amqp_transport(AmqpTransport::WebSocket)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn events_consumer_refusals_are_typed() {
    let emu = start().await;
    send(&emu, "x", "x");
    let wrong_group = EventConsumer::builder(&development_string(&emu))
        .unwrap()
        .consumer_group("no-such-group")
        .build()
        .unwrap();
    // The endpoint attaches, then detaches with the error, as Event Hubs does.
    let mut refused = within(wrong_group.receive("0", EventPosition::Earliest))
        .await
        .unwrap();
    let e = within(refused.next()).await.expect("an item").unwrap_err();
    assert!(
        matches!(&e, Error::Hub { condition: Some(c), .. } if c == "amqp:not-found"),
        "{e:?}"
    );

    let wrong_key = development_string(&emu).replace("SharedAccessKey=", "SharedAccessKey=x");
    let e = within(
        EventConsumer::from_connection_string(&wrong_key)
            .unwrap()
            .partition_ids(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");

    // A reader with a higher owner level takes the partition; the other stream says so.
    let p = partition_for_device("x", 4).to_string();
    let low = EventConsumer::builder(&development_string(&emu))
        .unwrap()
        .owner_level(1)
        .build()
        .unwrap();
    let mut low_events = within(low.receive(&p, EventPosition::Latest))
        .await
        .unwrap();
    let high = EventConsumer::builder(&development_string(&emu))
        .unwrap()
        .owner_level(2)
        .build()
        .unwrap();
    let _high_events = within(high.receive(&p, EventPosition::Latest))
        .await
        .unwrap();
    let e = within(low_events.next())
        .await
        .expect("an item")
        .expect_err("taken over");
    assert!(
        matches!(&e, Error::Hub { condition: Some(c), .. } if c == "amqp:link:stolen"),
        "{e:?}"
    );
    assert!(within(low_events.next()).await.is_none(), "the stream ends");
    emu.shutdown().await;
}

#[tokio::test]
async fn monitor_formats_events_like_az_monitor_events() {
    let emu = start().await;
    let mut m = HubMessage::new(r#"{"temperature":21.5}"#);
    m.system.message_id = Some("m1".into());
    m.system.content_type = Some("application/json".into());
    m.properties.insert("alert", "false");
    create_device(&emu, "thermostat");
    emu.hub()
        .run(|hub, now| hub.send_telemetry(&Origin::device("thermostat"), m, now))
        .unwrap();
    send(&emu, "raw", "not-json");
    let consumer = consumer(&emu);
    let mut events = within(consumer.receive_all(EventPosition::Earliest))
        .await
        .unwrap();
    let got: BTreeMap<String, Event> = take(&mut events, 2)
        .await
        .into_iter()
        .map(|e| (e.device_id.clone().unwrap(), e))
        .collect();

    let json: serde_json::Value =
        serde_json::from_str(&monitor::format_event(&got["thermostat"], false, false)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": {
            "origin": "thermostat", "module": "", "interface": "", "component": "",
            "payload": {"temperature": 21.5},
            "properties": {
                "system": {"message_id": "m1", "content_type": "application/json"},
                "application": {"alert": "false"}
            }
        }})
    );
    let line = monitor::format_event(&got["raw"], true, true);
    assert!(!line.contains('\n'), "{line}");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["event"]["payload"], "not-json");
    assert_eq!(
        json["event"]["annotations"]["iothub-connection-device-id"],
        "raw"
    );
    assert_eq!(
        json["event"]["annotations"]["iothub-message-source"],
        "Telemetry"
    );
    assert!(monitor::selected(&got["raw"], Some("raw"), None));
    assert!(!monitor::selected(&got["raw"], Some("thermostat"), None));
    assert!(!monitor::selected(&got["raw"], None, Some("m")));
    consumer.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn monitor_device_prints_only_that_devices_telemetry() {
    let emu = start().await;
    send(&emu, "other", "ignored");
    send(&emu, "watched", "seen-1");
    send(&emu, "watched", "seen-2");
    // The default source: the emulator the flags describe, over the development listener.
    let eventhubs_port = emu.endpoints().eventhubs.to_string();
    let out = run_monitor(&[
        "--eventhubs-port",
        &eventhubs_port,
        "monitor",
        "--device",
        "watched",
        "--from",
        "earliest",
        "--compact",
        "--count",
        "2",
        "--timeout",
        "10",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, body) in lines.iter().zip(["seen-1", "seen-2"]) {
        assert_eq!(line["event"]["origin"], "watched");
        assert_eq!(line["event"]["payload"], body);
        assert_eq!(line["event"]["properties"]["application"]["k"], body);
    }

    // Another hub's connection string, with a wrong key: a one-line error and exit 1.
    let wrong = development_string(&emu).replace("SharedAccessKey=", "SharedAccessKey=x");
    let out = run_monitor(&["monitor", "--connection-string", &wrong, "--timeout", "5"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    emu.shutdown().await;
}

/// Runs the binary to its end (each call passes `--timeout` or `--count`, so it ends).
async fn run_monitor(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_iothub-emulator"))
            .args(&args)
            .env_remove("IOTHUB_EMULATOR_CONFIG")
            .output()
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("monitor ends")
        .expect("joined")
        .expect("monitor runs")
}
