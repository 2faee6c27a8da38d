//! MQTT over TLS, messages: C2D topic encoding, completion and feedback, redelivery with DUP,
//! offline queueing with a persisted session, and D2C telemetry.

use std::time::Duration;

use crate::support::mqtt::*;
use crate::support::*;
use iothub_protocol::feedback::FeedbackStatus;
use iothub_protocol::{AckMode, Message, MessageId};
use rumqttc::{Incoming, QoS};

const C2D: &str = "devices/dev1/messages/devicebound/#";

async fn subscribe(d: &mut Mqtt) {
    d.client
        .subscribe(C2D, QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    d.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;
}

fn enqueue(emu: &iothub_emulator::RunningEmulator, m: Message) {
    emu.hub()
        .run(|h, now| h.enqueue_c2d("dev1", m, now))
        .expect("enqueued");
}

fn pending(emu: &iothub_emulator::RunningEmulator) -> usize {
    emu.hub().read(|h| h.peek_c2d("dev1").expect("dev1").len())
}

#[tokio::test]
async fn c2d_properties_arrive_with_the_exact_topic_encoding() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    subscribe(&mut d).await;

    let mut m = Message::new("payload");
    m.system.message_id = Some(MessageId::String("mid-1".into()));
    m.system.correlation_id = Some(MessageId::String("c/1".into()));
    m.system.content_type = Some("application/json".into());
    m.system.absolute_expiry = Some(time::macros::datetime!(2030-01-02 03:04:05.5 UTC));
    m.properties.insert("plain", "a b&c=d/e%f");
    m.properties.insert("amp&pct%", "ünïcødé ☃ €");
    m.properties.insert("empty", "");
    enqueue(&emu, m);

    let p = d.next_publish().await;
    assert_eq!(
        p.topic,
        "devices/dev1/messages/devicebound/\
         %24.mid=mid-1\
         &%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound\
         &%24.cid=c%2F1\
         &%24.exp=2030-01-02T03%3A04%3A05.5000000Z\
         &%24.ct=application%2Fjson\
         &plain=a%20b%26c%3Dd%2Fe%25f\
         &amp%26pct%25=%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E2%98%83%20%E2%82%AC\
         &empty="
    );
    assert_eq!(&p.payload[..], b"payload");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(!p.dup);
    // The shared decoder reads the same properties back.
    let (id, decoded) = iothub_protocol::property_bag::decode_c2d_topic(&p.topic).expect("decodes");
    assert_eq!(id, "dev1");
    assert_eq!(decoded.properties.get("amp&pct%"), Some("ünïcødé ☃ €"));
    emu.shutdown().await;
}

#[tokio::test]
async fn puback_completes_and_produces_feedback() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    subscribe(&mut d).await;
    let mut m = Message::new("ack me");
    m.system.message_id = Some(MessageId::String("fb-1".into()));
    m.system.ack = AckMode::Full;
    enqueue(&emu, m);

    let p = d.next_publish().await;
    assert_eq!(pending(&emu), 1);
    d.ack(&p).await;
    wait_until("message completed", || pending(&emu) == 0).await;
    let mut records = Vec::new();
    wait_until("feedback", || {
        if let Some(fb) = emu.hub().run(|h, now| h.receive_feedback(now)) {
            records.extend(fb.batch.records);
        }
        !records.is_empty()
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].original_message_id, "fb-1");
    assert_eq!(records[0].device_id, "dev1");
    assert_eq!(records[0].status_code, FeedbackStatus::Success);
    emu.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_message_is_redelivered_with_dup_on_reconnect() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, false)).await;
    subscribe(&mut d).await;
    enqueue(&emu, Message::new("again"));
    let first = d.next_publish().await;
    assert!(!first.dup);
    // No PUBACK; the connection drops.
    drop(d);
    wait_until("connection gone", || emu.hub().connection_count() == 0).await;
    assert_eq!(pending(&emu), 1);

    // Reconnect with the persisted session and no SUBSCRIBE.
    let mut d = connect(device_options(&emu, "dev1", &key, false)).await;
    assert!(d.connack.session_present);
    let again = d.next_publish().await;
    assert!(again.dup);
    assert_eq!(&again.payload[..], b"again");
    d.ack(&again).await;
    wait_until("message completed", || pending(&emu) == 0).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn offline_messages_are_delivered_on_reconnect_with_persisted_session() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, false)).await;
    assert!(!d.connack.session_present);
    subscribe(&mut d).await;
    d.client.disconnect().await.expect("disconnect queued");
    let _ = d.idle_for(Duration::from_millis(300)).await;
    wait_until("offline", || emu.hub().connection_count() == 0).await;

    for body in ["one", "two", "three"] {
        enqueue(&emu, Message::new(body));
    }
    let mut d = connect(device_options(&emu, "dev1", &key, false)).await;
    assert!(d.connack.session_present);
    for body in ["one", "two", "three"] {
        let p = d.next_publish().await;
        assert_eq!(&p.payload[..], body.as_bytes());
        assert!(!p.dup);
        d.ack(&p).await;
    }
    wait_until("all completed", || pending(&emu) == 0).await;

    // A clean session starts fresh: nothing is delivered without a SUBSCRIBE.
    drop(d);
    enqueue(&emu, Message::new("withheld"));
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    assert!(!d.connack.session_present);
    assert!(d.idle_for(Duration::from_millis(300)).await.is_none());
    assert_eq!(pending(&emu), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn telemetry_is_recorded_with_its_properties() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    d.client
        .publish(
            "devices/dev1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20w&x%26y=%E2%82%AC",
            QoS::AtLeastOnce,
            false,
            r#"{"t":21}"#,
        )
        .await
        .expect("publish queued");
    d.until(|p| matches!(p, Incoming::PubAck(_)).then_some(()))
        .await;
    // PUBACK comes after the message is recorded.
    let recorded = emu.hub().read(|h| h.d2c_messages("dev1").expect("dev1"));
    assert_eq!(recorded.len(), 1);
    let m = recorded[0].message();
    assert_eq!(m.body, br#"{"t":21}"#);
    assert_eq!(m.system.message_id, Some(MessageId::String("m-1".into())));
    assert_eq!(m.system.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.system.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(m.properties.get("k"), Some("v w"));
    assert_eq!(m.properties.get("x&y"), Some("€"));

    // QoS 0 and the C# SDK's trailing '/' work too.
    d.client
        .publish(
            "devices/dev1/messages/events/a=1/",
            QoS::AtMostOnce,
            false,
            "q0",
        )
        .await
        .expect("publish queued");
    assert!(d.idle_for(Duration::from_millis(200)).await.is_none());
    wait_until("second message", || {
        emu.hub()
            .read(|h| h.d2c_messages("dev1").expect("dev1").len() == 2)
    })
    .await;
    emu.shutdown().await;
}
