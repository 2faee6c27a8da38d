//! The built-in Event Hubs-compatible endpoint end to end, with fe2o3-amqp as an Event Hubs
//! client: `$management` entity and partition information, partition receivers from each start
//! position, credit, epoch takeover, refusals, the redirect from `messages/events`, the plain
//! `UseDevelopmentEmulator` port, and `sb://` tokens signed the Event Hubs way.

use crate::support::amqp::*;
use crate::support::*;
use base64::Engine as _;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::{LinkStateError, RecvError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::event_log::{Origin, partition_for_device};
use iothub_protocol::sas::build_token;
use iothub_protocol::{EventPosition, Message as HubMessage};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

const HUB: &str = "localhost";

fn send(emu: &RunningEmulator, device: &str, body: &str) {
    let mut m = HubMessage::new(body);
    m.system.message_id = Some(format!("id-{body}").as_str().into());
    m.properties.insert("k", "v");
    if emu.hub().read(|hub| hub.get_device(device)).is_err() {
        create_device(emu, device);
    }
    emu.hub()
        .run(|hub, now| hub.send_telemetry(&Origin::device(device), m, now))
        .expect("telemetry accepted");
}

fn partition_address(group: &str, partition: u32) -> String {
    format!("amqps://localhost/{HUB}/ConsumerGroups/{group}/Partitions/{partition}")
}

/// A partition receiver with the selector for `position` (JS descriptor) and an optional epoch.
async fn receiver(
    s: &mut SessionHandle<()>,
    name: &str,
    address: &str,
    position: &EventPosition,
    epoch: Option<i64>,
    credit: u32,
) -> Receiver {
    let mut filter = OrderedMap::new();
    filter.insert(
        Symbol::from("apache.org:selector-filter:string"),
        Value::Described(Box::new(Described {
            descriptor: Descriptor::Code(0x0000_468C_0000_0004),
            value: Value::String(position.to_selector()),
        })),
    );
    let source = Source::builder().address(address).filter(filter).build();
    let mut builder = Receiver::builder()
        .name(name)
        .source(source)
        .target("rust-consumer")
        .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual);
    if let Some(e) = epoch {
        let mut props = Fields::new();
        props.insert(Symbol::from("com.microsoft:epoch"), Value::Long(e));
        builder = builder.properties(props);
    }
    let mut r = within(builder.attach(s)).await.expect("receiver attached");
    if credit > 0 {
        within(r.set_credit(credit)).await.expect("credit");
    }
    r
}

async fn next(r: &mut Receiver) -> Delivery<Body<Value>> {
    within(r.recv::<Body<Value>>()).await.expect("an event")
}

fn annotation(d: &Delivery<Body<Value>>, name: &str) -> Value {
    d.message()
        .message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&OwnedKey::from(Symbol::from(name))).cloned())
        .unwrap_or(Value::Null)
}

fn body(d: &Delivery<Body<Value>>) -> Vec<u8> {
    match &d.message().body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("telemetry must be data sections, got {other:?}"),
    }
}

/// Sends a management request and returns the reply.
async fn management(
    sender: &mut Sender,
    replies: &mut Receiver,
    kind: &str,
    name: &str,
    partition: Option<&str>,
) -> Message<Body<Value>> {
    let mut app = ApplicationProperties::builder()
        .insert("operation", "READ")
        .insert("type", kind)
        .insert("name", name);
    if let Some(p) = partition {
        app = app.insert("partition", p);
    }
    let request = Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String("req-1".into())),
            reply_to: Some("mgmt-replies".into()),
            ..Properties::default()
        })
        .application_properties(app.build())
        .value(Value::List(Vec::new()))
        .build();
    within(sender.send(request)).await.expect("request sent");
    let reply: Delivery<Body<Value>> = within(replies.recv()).await.expect("reply");
    within(replies.accept(&reply)).await.expect("accept");
    reply.into_message()
}

fn map_get<'a>(reply: &'a Message<Body<Value>>, key: &str) -> &'a Value {
    let Body::Value(v) = &reply.body else {
        panic!("reply body must be an amqp-value")
    };
    let Value::Map(m) = &v.0 else {
        panic!("reply body must be a map")
    };
    m.get(&Value::String(key.into())).expect(key)
}

#[tokio::test]
async fn management_reports_the_entity_and_partitions() {
    let emu = start().await;
    send(&emu, "d1", "a");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = within(Sender::attach(&mut s, "mgmt", format!("{HUB}/$management")))
        .await
        .unwrap();
    let mut replies = within(
        Receiver::builder()
            .name("mgmt-r")
            .source(format!("{HUB}/$management"))
            .target("mgmt-replies")
            .attach(&mut s),
    )
    .await
    .unwrap();
    let r = management(
        &mut sender,
        &mut replies,
        "com.microsoft:eventhub",
        HUB,
        None,
    )
    .await;
    assert_eq!(status_code(&r), 200);
    assert_eq!(
        r.properties.as_ref().unwrap().correlation_id,
        Some(MessageId::String("req-1".into()))
    );
    assert_eq!(map_get(&r, "partition_count"), &Value::Int(4));
    assert_eq!(map_get(&r, "name"), &Value::String(HUB.into()));

    let p = partition_for_device("d1", 4).to_string();
    let r = management(
        &mut sender,
        &mut replies,
        "com.microsoft:partition",
        HUB,
        Some(&p),
    )
    .await;
    assert_eq!(status_code(&r), 200);
    assert_eq!(
        map_get(&r, "last_enqueued_sequence_number"),
        &Value::Long(0)
    );
    assert!(matches!(
        map_get(&r, "last_enqueued_offset"),
        Value::String(_)
    ));
    assert_eq!(map_get(&r, "is_partition_empty"), &Value::Bool(false));

    let r = management(
        &mut sender,
        &mut replies,
        "com.microsoft:partition",
        HUB,
        Some("9"),
    )
    .await;
    assert_eq!(status_code(&r), 400);
    let r = management(
        &mut sender,
        &mut replies,
        "com.microsoft:eventhub",
        "otherhub",
        None,
    )
    .await;
    assert_eq!(status_code(&r), 404);
    finish(c, emu).await;
}

#[tokio::test]
async fn receivers_read_from_each_start_position_with_typed_annotations() {
    let emu = start().await;
    let p = partition_for_device("dev", 4);
    for b in ["0", "1", "2"] {
        send(&emu, "dev", b);
    }
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let address = partition_address("$Default", p);

    let mut r = receiver(
        &mut s,
        "earliest",
        &address,
        &EventPosition::Earliest,
        None,
        10,
    )
    .await;
    let first = next(&mut r).await;
    assert_eq!(body(&first), b"0");
    assert_eq!(annotation(&first, "x-opt-sequence-number"), Value::Long(0));
    assert_eq!(
        annotation(&first, "x-opt-offset"),
        Value::String("0".into())
    );
    assert!(matches!(
        annotation(&first, "x-opt-enqueued-time"),
        Value::Timestamp(_)
    ));
    assert_eq!(
        annotation(&first, "iothub-connection-device-id"),
        Value::String("dev".into())
    );
    let props = first.message().properties.as_ref().expect("properties");
    assert_eq!(props.message_id, Some(MessageId::String("id-0".into())));
    let app = first.message().application_properties.as_ref().unwrap();
    assert_eq!(app.0.get("k"), Some(&SimpleValue::String("v".into())));
    let second = next(&mut r).await;
    let Value::String(offset) = annotation(&second, "x-opt-offset") else {
        panic!("offset must be a string")
    };
    assert_eq!(body(&next(&mut r).await), b"2");

    let mut by_seq = receiver(
        &mut s,
        "seq",
        &address,
        &EventPosition::SequenceNumber {
            sequence_number: 1,
            inclusive: false,
        },
        None,
        10,
    )
    .await;
    assert_eq!(body(&next(&mut by_seq).await), b"2");
    let mut by_offset = receiver(
        &mut s,
        "offset",
        &address,
        &EventPosition::Offset {
            offset,
            inclusive: true,
        },
        None,
        10,
    )
    .await;
    assert_eq!(body(&next(&mut by_offset).await), b"1");

    // @latest sees only what comes after it attached; an idle receiver wakes up for it.
    let mut latest = receiver(&mut s, "latest", &address, &EventPosition::Latest, None, 10).await;
    send(&emu, "dev", "3");
    assert_eq!(body(&next(&mut latest).await), b"3");
    assert_eq!(body(&next(&mut r).await), b"3");
    finish(c, emu).await;
}

#[tokio::test]
async fn events_go_out_only_against_credit() {
    let emu = start().await;
    let p = partition_for_device("dev", 4);
    send(&emu, "dev", "a");
    send(&emu, "dev", "b");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut r = receiver(
        &mut s,
        "no-credit",
        &partition_address("$default", p),
        &EventPosition::Earliest,
        None,
        0,
    )
    .await;
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        r.recv::<Body<Value>>(),
    )
    .await;
    assert!(early.is_err(), "nothing may arrive without credit");
    within(r.set_credit(1)).await.unwrap();
    assert_eq!(body(&next(&mut r).await), b"a");
    finish(c, emu).await;
}

#[tokio::test]
async fn a_higher_epoch_steals_the_partition_and_bad_requests_are_refused() {
    let emu = start().await;
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let address = partition_address("$Default", 0);
    let mut low = receiver(&mut s, "low", &address, &EventPosition::Latest, Some(1), 5).await;
    let _high = receiver(&mut s, "high", &address, &EventPosition::Latest, Some(2), 5).await;
    assert_eq!(receiver_closed_with(&mut low).await, "amqp:link:stolen");
    let mut lower = receiver(
        &mut s,
        "lower",
        &address,
        &EventPosition::Latest,
        Some(0),
        5,
    )
    .await;
    assert_eq!(receiver_closed_with(&mut lower).await, "amqp:link:stolen");

    let mut unknown_group = receiver(
        &mut s,
        "cg",
        &partition_address("nope", 0),
        &EventPosition::Latest,
        None,
        5,
    )
    .await;
    assert_eq!(
        receiver_closed_with(&mut unknown_group).await,
        "amqp:not-found"
    );
    let mut bad_partition = receiver(
        &mut s,
        "p9",
        &partition_address("$Default", 9),
        &EventPosition::Latest,
        None,
        5,
    )
    .await;
    assert_eq!(
        receiver_closed_with(&mut bad_partition).await,
        "com.microsoft:argument-out-of-range"
    );
    finish(c, emu).await;
}

#[tokio::test]
async fn receivers_need_a_service_token() {
    let emu = start().await;
    let (c, mut s) = session(&emu).await;
    let mut r = receiver(
        &mut s,
        "anon",
        &partition_address("$Default", 0),
        &EventPosition::Latest,
        None,
        5,
    )
    .await;
    assert_eq!(
        receiver_closed_with(&mut r).await,
        "amqp:unauthorized-access"
    );
    finish(c, emu).await;
}

#[tokio::test]
async fn messages_events_on_the_hub_host_redirects_to_the_event_hub() {
    let emu = start().await;
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut r = within(
        Receiver::builder()
            .name("redirect")
            .source("amqps://localhost/messages/events/ConsumerGroups/$Default/Partitions/0")
            .target("t")
            .attach(&mut s),
    )
    .await
    .unwrap();
    let error = match within(r.recv::<Body<Value>>()).await {
        Err(RecvError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        )) => e,
        other => panic!("expected a redirect, got {other:?}"),
    };
    assert_eq!(condition(&error), "amqp:link:redirect");
    let info = error.info.expect("redirect info");
    let port = emu.endpoints().amqp;
    let expected = format!("amqps://localhost:{port}/{HUB}/ConsumerGroups/$Default/Partitions/0");
    assert_eq!(
        info.get(&Symbol::from("address")),
        Some(&Value::String(expected))
    );
    assert_eq!(
        info.get(&Symbol::from("hostname")),
        Some(&Value::String("localhost".into()))
    );
    finish(c, emu).await;
}

#[tokio::test]
async fn the_development_port_serves_plain_amqp_with_event_hubs_tokens() {
    let emu = start().await;
    send(&emu, "dev", "plain");
    let p = partition_for_device("dev", 4);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", emu.endpoints().eventhubs))
        .await
        .unwrap();
    let mut c = within(
        Connection::builder()
            .container_id("eh-dev")
            .hostname("localhost")
            .open_with_stream(tcp),
    )
    .await
    .unwrap();
    let mut s = within(Session::begin(&mut c)).await.unwrap();
    let mut cbs = Cbs::attach(&mut s).await;
    // Signed as azure-eventhub and @azure/event-hubs sign: the key text is the HMAC key, which
    // is what a base64 key decodes to when it is the base64 of that text.
    let policy = emu.context().auth.policy("service").unwrap().clone();
    let text_key = base64::engine::general_purpose::STANDARD.encode(policy.primary_key.as_bytes());
    let se = emu.context().now_unix() + 3600;
    let token = build_token(
        &format!("sb://localhost/{HUB}"),
        &text_key,
        Some("service"),
        se,
    )
    .unwrap();
    let reply = cbs.put_token(MessageId::String("t".into()), &token).await;
    assert_eq!(
        status_code(&reply),
        200,
        "{:?}",
        app_string(&reply, "status-description")
    );
    let mut r = receiver(
        &mut s,
        "dev",
        &partition_address("$Default", p),
        &EventPosition::Earliest,
        None,
        5,
    )
    .await;
    assert_eq!(body(&next(&mut r).await), b"plain");
    // The same signing for an IoT Hub audience is not accepted.
    let token = build_token("localhost", &text_key, Some("service"), se).unwrap();
    let reply = cbs.put_token(MessageId::String("u".into()), &token).await;
    assert_eq!(status_code(&reply), 401);
    let _ = c.close().await;
    emu.shutdown().await;
}
