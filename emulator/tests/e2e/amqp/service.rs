//! The service side of the AMQP endpoint end to end, with fe2o3-amqp over real TLS: CBS with and
//! without SASL, link authorization, C2D send with every property kind and every error, and
//! feedback batches with their settlement.

use std::time::Duration;

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::ReceiverSettleMode;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_protocol::sas::build_token;
use iothub_protocol::{AckMode, FeedbackBatch, FeedbackStatus, MessageId as HubId};

const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn c2d(to: &str, body: impl Into<Vec<u8>>) -> Message<fe2o3_amqp::types::messaging::Data> {
    Message::builder()
        .properties(Properties {
            to: Some(to.to_owned()),
            ..Properties::default()
        })
        .data(body.into())
        .build()
}

async fn c2d_sender(session: &mut fe2o3_amqp::session::SessionHandle<()>) -> Sender {
    within(Sender::attach(
        session,
        "c2d",
        "amqps://localhost:5671/messages/deviceBound",
    ))
    .await
    .expect("c2d sender")
}

#[tokio::test]
async fn cbs_without_sasl_answers_in_the_request_id_type_with_an_int_status() {
    let emu = start().await;
    let (c, mut s) = session(&emu).await;
    let mut cbs = Cbs::attach(&mut s).await;

    let id = "6b822696-1234-4abc-8def-0123456789ab".to_owned();
    let reply = cbs
        .put_token(MessageId::String(id.clone()), &owner_token(&emu))
        .await;
    assert_eq!(status_code(&reply), 200);
    let props = reply.properties.as_ref().unwrap();
    assert_eq!(props.correlation_id, Some(MessageId::String(id)));
    assert_eq!(props.to.as_deref(), Some("cbs"));

    let forged = build_token(
        "localhost",
        OTHER_KEY,
        Some("iothubowner"),
        emu.context().now_unix() + 60,
    )
    .unwrap();
    let reply = cbs.put_token(MessageId::Ulong(7), &forged).await;
    assert_eq!(status_code(&reply), 401);
    assert!(app_string(&reply, "status-description").is_some_and(|d| d.contains("signature")));
    assert_eq!(
        reply.properties.unwrap().correlation_id,
        Some(MessageId::Ulong(7))
    );

    let expired = policy_token_until(&emu, "iothubowner", emu.context().now_unix() - 1);
    let reply = cbs.put_token(MessageId::Ulong(8), &expired).await;
    assert_eq!(status_code(&reply), 401);
    let reply = cbs.put_token(MessageId::Ulong(9), "garbage").await;
    assert_eq!(status_code(&reply), 401);
    finish(c, emu).await;
}

#[tokio::test]
async fn cbs_after_sasl_anonymous_and_after_a_hand_made_mssbcbs_exchange() {
    let emu = start().await;
    create_device(&emu, "dev1");

    let mut c = connect(&emu, Some(SaslProfile::Anonymous)).await;
    let mut s = within(Session::begin(&mut c)).await.unwrap();
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs.put_token(MessageId::Ulong(0), &owner_token(&emu)).await;
    assert_eq!(status_code(&reply), 200);
    assert_eq!(
        reply.properties.unwrap().correlation_id,
        Some(MessageId::Ulong(0))
    );
    let _ = within(c.close()).await;

    // A client that offers only MSSBCBS, as the C SDK and uamqp do.
    let (stream, offered) = sasl_mssbcbs(&emu).await;
    for m in ["MSSBCBS", "ANONYMOUS", "PLAIN"] {
        assert!(offered.iter().any(|o| o == m), "{m} offered in {offered:?}");
    }
    let mut c = within(
        Connection::builder()
            .container_id("mssbcbs")
            .open_with_stream(stream),
    )
    .await
    .expect("AMQP open after SASL");
    let mut s = within(Session::begin(&mut c)).await.unwrap();
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs.put_token(MessageId::Ulong(0), &owner_token(&emu)).await;
    assert_eq!(status_code(&reply), 200);
    let mut sender = c2d_sender(&mut s).await;
    let outcome = within(sender.send(c2d(&to("dev1"), "hi"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    finish(c, emu).await;
}

#[tokio::test]
async fn sasl_plain_with_a_policy_token_authorizes_the_connection() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let plain = SaslProfile::Plain {
        username: "iothubowner@sas.root.localhost".into(),
        password: owner_token(&emu),
    };
    let mut c = connect(&emu, Some(plain)).await;
    let mut s = within(Session::begin(&mut c)).await.unwrap();
    let mut sender = c2d_sender(&mut s).await;
    let outcome = within(sender.send(c2d(&to("dev1"), "hi"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let _ = within(c.close()).await;

    let wrong = SaslProfile::Plain {
        username: "service@sas.root.localhost".into(),
        password: owner_token(&emu),
    };
    let refused = within(
        Connection::builder()
            .container_id("plain")
            .sasl_profile(wrong)
            .open_with_stream(tls(&emu).await),
    )
    .await;
    assert!(refused.is_err(), "a token for another policy is refused");
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn links_need_a_covering_token_and_a_known_address() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let (c, mut s) = session(&emu).await;

    let mut sender = c2d_sender(&mut s).await;
    assert_eq!(
        sender_closed_with(&mut sender).await,
        "amqp:unauthorized-access"
    );
    let mut nowhere = within(Receiver::attach(&mut s, "x", "/messages/nowhere"))
        .await
        .unwrap();
    assert_eq!(receiver_closed_with(&mut nowhere).await, "amqp:not-found");

    // Valid tokens that do not grant ServiceConnect.
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs
        .put_token(MessageId::Ulong(1), &device_token(&emu, "dev1", &key))
        .await;
    assert_eq!(status_code(&reply), 200);
    let reply = cbs
        .put_token(MessageId::Ulong(2), &policy_token(&emu, "registryRead"))
        .await;
    assert_eq!(status_code(&reply), 200);
    let mut feedback = within(Receiver::attach(
        &mut s,
        "fb",
        "/messages/serviceBound/feedback",
    ))
    .await
    .unwrap();
    assert_eq!(
        receiver_closed_with(&mut feedback).await,
        "amqp:unauthorized-access"
    );

    let reply = cbs
        .put_token(MessageId::Ulong(3), &policy_token(&emu, "service"))
        .await;
    assert_eq!(status_code(&reply), 200);
    let mut sender = within(Sender::attach(&mut s, "c2d-2", "/messages/devicebound"))
        .await
        .unwrap();
    let outcome = within(sender.send(c2d(&to("dev1"), "hi"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    finish(c, emu).await;
}

#[tokio::test]
async fn an_expired_token_ends_its_links_until_renewed() {
    let emu = start_virtual().await;
    create_device(&emu, "dev1");
    let (c, mut s) = session(&emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let short = policy_token_until(&emu, "iothubowner", emu.context().now_unix() + 60);
    assert_eq!(
        status_code(&cbs.put_token(MessageId::Ulong(1), &short).await),
        200
    );
    let mut sender = c2d_sender(&mut s).await;
    let outcome = within(sender.send(c2d(&to("dev1"), "a"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)));

    assert!(emu.hub().advance_clock(Duration::from_secs(120)));
    assert_eq!(
        sender_closed_with(&mut sender).await,
        "amqp:unauthorized-access"
    );

    let renewed = owner_token(&emu);
    assert_eq!(
        status_code(&cbs.put_token(MessageId::Ulong(2), &renewed).await),
        200
    );
    let mut sender = within(Sender::attach(&mut s, "c2d-2", "/messages/devicebound"))
        .await
        .unwrap();
    let outcome = within(sender.send(c2d(&to("dev1"), "b"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)));
    finish(c, emu).await;
}

#[tokio::test]
async fn c2d_send_carries_every_property_and_every_message_id_type() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = c2d_sender(&mut s).await;

    let u = uuid::Uuid::parse_str("6b822696-1234-4abc-8def-0123456789ab").unwrap();
    let ids = [
        (MessageId::String("m-1".into()), "m-1"),
        (
            MessageId::Uuid(u.into_bytes().into()),
            "6b822696-1234-4abc-8def-0123456789ab",
        ),
        (MessageId::Ulong(42), "42"),
        (MessageId::Binary(Binary::from(vec![0xab, 0xcd])), "abcd"),
    ];
    // Read once: the sends below may cross a second boundary.
    let expires_at = emu.context().now_unix() as i64 + 600;
    let expiry = Timestamp::from_milliseconds(expires_at * 1000);
    for (i, (id, _)) in ids.iter().enumerate() {
        let m = Message::builder()
            .properties(Properties {
                message_id: Some(id.clone()),
                correlation_id: Some(id.clone()),
                user_id: Some(Binary::from(b"svc".to_vec())),
                to: Some("/devices/dev1/messages/deviceBound".into()),
                absolute_expiry_time: Some(expiry.clone()),
                content_type: Some(Symbol::from("application/json")),
                content_encoding: Some(Symbol::from("utf-8")),
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("iothub-ack", "full")
                    .insert("text", "a b&c=d/e")
                    .insert("number", 5i32)
                    .insert("flag", true)
                    .build(),
            )
            .data(format!("{{\"n\":{i}}}").into_bytes())
            .build();
        let outcome = within(sender.send(m)).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }

    let queued = emu.hub().read(|h| h.peek_c2d("dev1")).unwrap();
    assert_eq!(queued.len(), 4);
    for (q, (_, canonical)) in queued.iter().zip(ids.iter()) {
        let sys = &q.message.system;
        assert_eq!(
            sys.message_id.as_ref().map(HubId::canonical).as_deref(),
            Some(*canonical)
        );
        assert_eq!(
            sys.correlation_id.as_ref().map(HubId::canonical).as_deref(),
            Some(*canonical)
        );
        assert_eq!(sys.user_id.as_deref(), Some("svc"));
        assert_eq!(
            sys.to.as_deref(),
            Some("/devices/dev1/messages/devicebound")
        );
        assert_eq!(
            sys.absolute_expiry.map(|t| t.unix_timestamp()),
            Some(expires_at)
        );
        assert_eq!(sys.content_type.as_deref(), Some("application/json"));
        assert_eq!(sys.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(sys.ack, AckMode::Full);
        let props: Vec<_> = q.message.properties.iter().collect();
        assert_eq!(
            props,
            vec![("text", "a b&c=d/e"), ("number", "5"), ("flag", "true")]
        );
    }
    assert!(matches!(
        queued[1].message.system.message_id,
        Some(HubId::Uuid(_))
    ));
    assert!(matches!(
        queued[2].message.system.message_id,
        Some(HubId::Ulong(42))
    ));
    finish(c, emu).await;
}

/// Pipelined sends are settled together (accepted runs as range dispositions): each send
/// still gets its own outcome, rejections stay where they were, and every accepted message is
/// queued once, in order.
#[tokio::test]
async fn pipelined_sends_each_get_their_own_outcome() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = c2d_sender(&mut s).await;
    let mut pending = Vec::new();
    for i in 0..40 {
        let device = if i % 7 == 3 { "ghost" } else { "dev1" };
        let m = c2d(&to(device), format!("{i}"));
        pending.push((
            device,
            within(sender.send_batchable(m)).await.expect("sent"),
        ));
    }
    let mut accepted = Vec::new();
    for (i, (device, fut)) in pending.into_iter().enumerate() {
        let outcome = within(fut).await.expect("settled");
        if device == "ghost" {
            assert_eq!(rejected_with(&outcome).0, "amqp:not-found", "send {i}");
        } else {
            assert!(
                matches!(outcome, Outcome::Accepted(_)),
                "send {i}: {outcome:?}"
            );
            accepted.push(format!("{i}"));
        }
    }
    let queued: Vec<String> = emu
        .hub()
        .read(|h| h.peek_c2d("dev1"))
        .unwrap()
        .iter()
        .map(|q| String::from_utf8_lossy(&q.message.body).into_owned())
        .collect();
    assert_eq!(queued, accepted);
    finish(c, emu).await;
}

#[tokio::test]
async fn c2d_send_errors_are_rejections_the_sdks_understand() {
    let emu = start().await;
    create_device(&emu, "dev1");
    create_device(&emu, "off");
    disable_device(&emu, "off");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = c2d_sender(&mut s).await;
    let send = async |sender: &mut Sender, m| within(sender.send(m)).await.unwrap();

    let (cond, _) = rejected_with(&send(&mut sender, c2d(&to("ghost"), "x")).await);
    assert_eq!(cond, "amqp:not-found");

    let big = vec![b'x'; 65 * 1024];
    let (cond, _) = rejected_with(&send(&mut sender, c2d(&to("dev1"), big)).await);
    assert_eq!(cond, "amqp:link:message-size-exceeded");

    for bad in ["/devices/dev1/messages/events", "dev1", ""] {
        let (cond, _) = rejected_with(&send(&mut sender, c2d(bad, "x")).await);
        assert_eq!(cond, "com.microsoft:argument-error", "to = {bad:?}");
    }
    let no_to = Message::builder().data(b"x".to_vec()).build();
    let (cond, _) = rejected_with(&send(&mut sender, no_to).await);
    assert_eq!(cond, "com.microsoft:argument-error");

    let (cond, _) = rejected_with(&send(&mut sender, c2d(&to("off"), "x")).await);
    assert_eq!(cond, "amqp:unauthorized-access");

    for i in 0..50 {
        let outcome = send(&mut sender, c2d(&to("dev1"), format!("{i}"))).await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "message {i}");
    }
    let (cond, text) = rejected_with(&send(&mut sender, c2d(&to("dev1"), "51st")).await);
    assert_eq!(cond, "amqp:resource-limit-exceeded");
    assert!(text.contains("iothub403004"), "{text}");
    assert_eq!(emu.hub().read(|h| h.peek_c2d("dev1")).unwrap().len(), 50);
    finish(c, emu).await;
}

/// Enqueues a message asking for full feedback and completes it on the hub side.
fn completed_with_feedback(emu: &iothub_emulator::RunningEmulator, id: &str) {
    let mut m = iothub_protocol::Message::new("x");
    m.system.message_id = Some(HubId::from(id));
    m.system.ack = AckMode::Full;
    emu.hub()
        .run(|h, now| {
            h.enqueue_c2d("dev1", m, now)?;
            let got = h.receive_c2d("dev1", now)?.expect("message");
            h.complete_c2d("dev1", got.system.lock_token.as_deref().unwrap(), now)
        })
        .unwrap();
}

fn feedback_locks(emu: &iothub_emulator::RunningEmulator) -> Vec<Option<String>> {
    emu.hub().read(|h| {
        h.feedback_view()
            .batches
            .into_iter()
            .map(|b| b.lock_token)
            .collect()
    })
}

#[tokio::test]
async fn feedback_batches_arrive_in_the_hub_envelope_and_settle_by_disposition() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut fb = within(Receiver::attach(
        &mut s,
        "feedback",
        "amqps://localhost:5671/messages/serviceBound/feedback",
    ))
    .await
    .unwrap();

    completed_with_feedback(&emu, "fb-1");
    let d: Delivery<Body<Value>> = within(fb.recv()).await.unwrap();
    let lock = feedback_locks(&emu)[0].clone().expect("batch locked");
    let tag = d.delivery_tag().to_vec();
    assert_eq!(tag.len(), 16);
    assert_eq!(
        uuid::Uuid::from_slice_le(&tag).unwrap().to_string(),
        lock,
        "the delivery tag is the lock token as a .NET GUID"
    );
    let m = d.message();
    let props = m.properties.as_ref().unwrap();
    assert_eq!(
        props.content_type.as_ref().map(|c| c.0.as_str()),
        Some("application/vnd.microsoft.iothub.feedback.json")
    );
    assert_eq!(
        props.user_id.as_ref().map(|u| u.to_vec()),
        Some(b"localhost".to_vec())
    );
    let ann = &m.message_annotations.as_ref().unwrap().0;
    assert!(matches!(
        ann.get(&OwnedKey::from(Symbol::from("iothub-enqueuedtime"))),
        Some(Value::Timestamp(_))
    ));
    let Body::Data(data) = &m.body else {
        panic!("feedback body must be a data section")
    };
    let json: Vec<u8> = data.iter().flat_map(|d| d.0.to_vec()).collect();
    let records = FeedbackBatch::parse_body(&json).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].original_message_id, "fb-1");
    assert_eq!(records[0].status_code, FeedbackStatus::Success);
    assert_eq!(records[0].device_id, "dev1");

    // Released: offered again with a new lock; accepted: gone.
    within(fb.release(&d)).await.unwrap();
    let again: Delivery<Body<Value>> = within(fb.recv()).await.unwrap();
    assert_ne!(again.delivery_tag().to_vec(), tag);
    within(fb.accept(&again)).await.unwrap();
    within(async {
        while !feedback_locks(&emu).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // Rejected: dropped.
    completed_with_feedback(&emu, "fb-2");
    let d: Delivery<Body<Value>> = within(fb.recv()).await.unwrap();
    within(fb.reject(&d, None)).await.unwrap();
    within(async {
        while !feedback_locks(&emu).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // A receiver that goes away with a batch unsettled hands it back.
    completed_with_feedback(&emu, "fb-3");
    let _held: Delivery<Body<Value>> = within(fb.recv()).await.unwrap();
    within(fb.close()).await.unwrap();
    within(async {
        while feedback_locks(&emu) != vec![None] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // C# receives feedback with rcv-settle-mode second.
    let mut fb = within(
        Receiver::builder()
            .name("feedback-2")
            .source("/messages/servicebound/feedback")
            .receiver_settle_mode(ReceiverSettleMode::Second)
            .attach(&mut s),
    )
    .await
    .unwrap();
    let d: Delivery<Body<Value>> = within(fb.recv()).await.unwrap();
    within(fb.accept(&d)).await.unwrap();
    within(async {
        while !feedback_locks(&emu).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    finish(c, emu).await;
}

/// uamqp attaches its C2D sender asking for rcv-settle-mode `second` but completes a send only
/// on a settled disposition; the hub answers `first` and settles at once.
#[tokio::test]
async fn a_sender_asking_for_settle_mode_second_gets_first_and_a_settled_outcome() {
    let emu = start().await;
    create_device(&emu, "settle-dev");
    let (mut c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut sender = within(
        Sender::builder()
            .name("uamqp-like")
            .target("amqps://localhost/messages/devicebound")
            .receiver_settle_mode(ReceiverSettleMode::Second)
            .attach(&mut s),
    )
    .await
    .expect("attach");
    let outcome = within(sender.send(c2d(&to("settle-dev"), "x")))
        .await
        .expect("a settled outcome arrives");
    assert!(outcome.is_accepted(), "{outcome:?}");
    assert_eq!(
        emu.hub().read(|h| h.peek_c2d("settle-dev")).unwrap().len(),
        1
    );
    let _ = sender.close().await;
    let _ = s.end().await;
    let _ = c.close().await;
    emu.shutdown().await;
}
