//! The device side of the AMQP endpoint end to end (the Node AMQP device transport's links):
//! C2D receive with complete / reject / abandon and the feedback each produces, redelivery,
//! lock release when a receiver goes away, and telemetry.

use std::time::Duration;

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Receiver, Sender};
use iothub_emulator::RunningEmulator;
use iothub_protocol::{AckMode, FeedbackStatus, MessageId as HubId};

fn enqueue(emu: &RunningEmulator, device: &str, id: &str) {
    let mut m = iothub_protocol::Message::new(format!("body of {id}"));
    m.system.message_id = Some(HubId::from(id));
    m.system.ack = AckMode::Full;
    emu.hub()
        .run(|h, now| h.enqueue_c2d(device, m, now))
        .expect("enqueued");
}

fn annotation(d: &Delivery<Body<Value>>, key: &str) -> Option<Value> {
    d.message()
        .message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::from(Symbol::from(key)))
        .cloned()
}

fn message_id(d: &Delivery<Body<Value>>) -> Option<MessageId> {
    d.message().properties.as_ref()?.message_id.clone()
}

/// Feedback records released so far, as (original message id, status).
fn feedback(emu: &RunningEmulator) -> Vec<(String, FeedbackStatus)> {
    let mut out = Vec::new();
    while let Some(d) = emu.hub().run(|h, now| h.receive_feedback(now)) {
        for r in &d.batch.records {
            out.push((r.original_message_id.clone(), r.status_code));
        }
        emu.hub()
            .run(|h, now| h.complete_feedback(&d.lock_token, now))
            .unwrap();
    }
    out
}

async fn eventually(mut check: impl FnMut() -> bool) {
    within(async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn device_receives_and_settles_with_feedback_for_each_outcome() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "amqps://localhost/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();

    for id in ["m1", "m2", "m3"] {
        enqueue(&emu, "dev1", id);
    }
    let m1: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert_eq!(message_id(&m1), Some(MessageId::String("m1".into())));
    let Some(Value::String(lock)) = annotation(&m1, "x-opt-lock-token") else {
        panic!("lock token annotation")
    };
    let tag = m1.delivery_tag().to_vec();
    assert_eq!(uuid::Uuid::from_slice_le(&tag).unwrap().to_string(), lock);
    assert_eq!(
        annotation(&m1, "x-opt-sequence-number"),
        Some(Value::Ulong(1))
    );
    assert_eq!(
        annotation(&m1, "iothub-deliverycount"),
        Some(Value::Ubyte(0))
    );
    assert!(matches!(
        annotation(&m1, "iothub-enqueuedtime"),
        Some(Value::Timestamp(_))
    ));
    let props = m1.message().properties.as_ref().unwrap();
    assert_eq!(
        props.to.as_deref(),
        Some("/devices/dev1/messages/devicebound")
    );
    let m2: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    let m3: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert_eq!(message_id(&m3), Some(MessageId::String("m3".into())));

    within(rx.accept(&m1)).await.unwrap();
    within(rx.reject(&m2, None)).await.unwrap();
    within(rx.release(&m3)).await.unwrap();

    let again: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert_eq!(message_id(&again), Some(MessageId::String("m3".into())));
    assert_eq!(
        annotation(&again, "iothub-deliverycount"),
        Some(Value::Ubyte(1))
    );
    assert_ne!(again.delivery_tag().to_vec(), m3.delivery_tag().to_vec());
    within(rx.accept(&again)).await.unwrap();

    eventually(|| emu.hub().read(|h| h.peek_c2d("dev1")).unwrap().is_empty()).await;
    let mut records = feedback(&emu);
    records.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        records,
        vec![
            ("m1".into(), FeedbackStatus::Success),
            ("m2".into(), FeedbackStatus::Rejected),
            ("m3".into(), FeedbackStatus::Success),
        ]
    );
    finish(c, emu).await;
}

#[tokio::test]
async fn a_receiver_that_goes_away_hands_its_locked_messages_back() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    enqueue(&emu, "dev1", "m1");
    let _held: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert!(
        emu.hub()
            .read(|h| h.peek_c2d("dev1"))
            .unwrap()
            .iter()
            .all(|q| q.is_locked())
    );
    let mut c = c;
    let _ = within(c.close()).await;
    eventually(|| {
        emu.hub()
            .read(|h| h.peek_c2d("dev1"))
            .unwrap()
            .iter()
            .all(|q| !q.is_locked())
    })
    .await;
    let queued = emu.hub().read(|h| h.peek_c2d("dev1")).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].delivery_count, 0, "a lost link is not an abandon");

    // The next receiver gets it.
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    let d: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert_eq!(message_id(&d), Some(MessageId::String("m1".into())));
    within(rx.accept(&d)).await.unwrap();
    eventually(|| emu.hub().read(|h| h.peek_c2d("dev1")).unwrap().is_empty()).await;
    finish(c, emu).await;
}

#[tokio::test]
async fn telemetry_is_recorded_and_device_links_are_scoped_to_their_device() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    create_device(&emu, "dev2");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;

    let mut tx = within(Sender::attach(
        &mut s,
        "d2c",
        "/devices/dev1/messages/events",
    ))
    .await
    .unwrap();
    let m = Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String("t-1".into())),
            ..Properties::default()
        })
        .data(b"{\"temp\":21}".to_vec())
        .build();
    let outcome = within(tx.send(m)).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let recorded = emu.hub().read(|h| h.d2c_messages("dev1")).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message().body, b"{\"temp\":21}");
    assert_eq!(
        recorded[0].message().system.message_id,
        Some(HubId::from("t-1"))
    );

    let mut other = within(Receiver::attach(
        &mut s,
        "c2d-other",
        "/devices/dev2/messages/devicebound",
    ))
    .await
    .unwrap();
    assert_eq!(
        receiver_closed_with(&mut other).await,
        "amqp:unauthorized-access"
    );
    let mut service = within(Sender::attach(&mut s, "svc", "/messages/devicebound"))
        .await
        .unwrap();
    assert_eq!(
        sender_closed_with(&mut service).await,
        "amqp:unauthorized-access"
    );

    // Disabling the device ends its links (or refuses them, if the attach is still in flight).
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    disable_device(&emu, "dev1");
    assert_eq!(
        receiver_closed_with(&mut rx).await,
        "amqp:unauthorized-access"
    );
    finish(c, emu).await;
}

#[tokio::test]
async fn guid_tags_fit_a_peer_with_small_frames() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut c = within(
        fe2o3_amqp::Connection::builder()
            .container_id("small-frames")
            .max_frame_size(1024)
            .open_with_stream(tls(&emu).await),
    )
    .await
    .expect("open");
    let mut s = within(fe2o3_amqp::Session::begin(&mut c)).await.unwrap();
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs
        .put_token(MessageId::Ulong(1), &device_token(&emu, "dev1", &key))
        .await;
    assert_eq!(status_code(&reply), 200);
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let mut m = iothub_protocol::Message::new(body.clone());
    m.system.message_id = Some(HubId::from("big"));
    emu.hub()
        .run(|h, now| h.enqueue_c2d("dev1", m, now))
        .unwrap();
    let d: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    assert_eq!(d.delivery_tag().len(), 16);
    let Body::Data(data) = d.body() else {
        panic!("data body")
    };
    let got: Vec<u8> = data.iter().flat_map(|x| x.0.to_vec()).collect();
    assert_eq!(got, body);
    within(rx.accept(&d)).await.unwrap();
    finish(c, emu).await;
}
