//! [`serve_connection_with`] over in-memory streams: the same loop as over TLS or WebSockets.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iothub_protocol::Message;
use iothub_protocol::registry::Device;
use iothub_protocol::sas::build_token;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Codec, ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe,
};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use super::{Limits, MqttState, serve_connection_with};
use crate::context::Context;
use crate::hub::HubSettings;

type Client = Framed<DuplexStream, Codec>;

const WAIT: Duration = Duration::from_secs(5);

/// The shared context plus the MQTT adapter's own state, as the server would pass them.
struct Fixture {
    ctx: Context,
    mqtt: MqttState,
}

impl std::ops::Deref for Fixture {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

fn context() -> (Fixture, String) {
    let ctx = Context::for_tests(HubSettings {
        feedback_window: Duration::ZERO,
        ..HubSettings::default()
    });
    let d = ctx
        .hub
        .run(|hub, now| hub.create_device(Device::new("d1"), now))
        .unwrap();
    let key = d.primary_key().unwrap().to_owned();
    let mqtt = MqttState::default();
    (Fixture { ctx, mqtt }, key)
}

fn token(ctx: &Context, key: &str) -> String {
    build_token("localhost/devices/d1", key, None, ctx.now_unix() + 3600).unwrap()
}

fn codec() -> Codec {
    Codec {
        max_incoming_size: 1 << 20,
        max_outgoing_size: 1 << 20,
    }
}

fn open(f: &Fixture, limits: Limits, buffer: usize) -> (Client, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(buffer);
    let task = tokio::spawn(serve_connection_with(
        server,
        "duplex".into(),
        f.ctx.clone(),
        f.mqtt.clone(),
        limits,
    ));
    (Framed::new(client, codec()), task)
}

fn connect_packet(password: &str, clean: bool, keep_alive: u16) -> Packet {
    let mut c = Connect::new("d1");
    c.clean_session = clean;
    c.keep_alive = keep_alive;
    c.set_login("localhost/d1/?api-version=2021-04-12", password);
    Packet::Connect(c)
}

async fn next(c: &mut Client) -> Option<Packet> {
    match tokio::time::timeout(WAIT, c.next()).await {
        Ok(Some(Ok(p))) => Some(p),
        Ok(_) => None,
        Err(_) => panic!("no packet and no close within {WAIT:?}"),
    }
}

async fn connect(
    ctx: &Fixture,
    key: &str,
    clean: bool,
    limits: Limits,
) -> (Client, JoinHandle<()>, ConnAck) {
    let (mut c, task) = open(ctx, limits, 64 * 1024);
    c.send(connect_packet(&token(ctx, key), clean, 60))
        .await
        .unwrap();
    match next(&mut c).await {
        Some(Packet::ConnAck(a)) => (c, task, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn subscribe_c2d(c: &mut Client) {
    c.send(Packet::Subscribe(Subscribe::new(
        "devices/d1/messages/devicebound/#",
        QoS::AtLeastOnce,
    )))
    .await
    .unwrap();
    assert!(matches!(next(c).await, Some(Packet::SubAck(_))));
}

async fn next_publish(c: &mut Client) -> Publish {
    loop {
        match next(c).await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => continue,
            None => panic!("closed before a PUBLISH"),
        }
    }
}

fn enqueue(ctx: &Context, body: &str) {
    ctx.hub
        .run(|hub, now| hub.enqueue_c2d("d1", Message::new(body), now))
        .unwrap();
}

#[tokio::test]
async fn c2d_is_published_after_subscribe_and_completed_by_puback() {
    let (ctx, key) = context();
    enqueue(&ctx, "early");
    let (mut c, task, ack) = connect(&ctx, &key, true, Limits::default()).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    subscribe_c2d(&mut c).await;
    let p = next_publish(&mut c).await;
    assert_eq!(&p.payload[..], b"early");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(!p.dup);
    assert!(ctx.hub.read(|h| h.peek_c2d("d1").unwrap()[0].is_locked()));
    c.send(Packet::PubAck(PubAck::new(p.pkid))).await.unwrap();
    c.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PingResp));
    assert!(ctx.hub.read(|h| h.peek_c2d("d1").unwrap().is_empty()));
    c.send(Packet::Disconnect).await.unwrap();
    assert_eq!(next(&mut c).await, None);
    task.await.unwrap();
    assert_eq!(ctx.hub.connection_count(), 0);
}

#[tokio::test]
async fn a_burst_of_pubacks_then_a_dropped_connection_completes_every_delivery() {
    let (ctx, key) = context();
    for b in ["1", "2", "3"] {
        enqueue(&ctx, b);
    }
    let (mut c, task, _) = connect(&ctx, &key, true, Limits::default()).await;
    subscribe_c2d(&mut c).await;
    let mut pkids = Vec::new();
    for _ in 0..3 {
        pkids.push(next_publish(&mut c).await.pkid);
    }
    // All three PUBACKs in one write, then the socket goes away without a DISCONNECT: the
    // completions the connection had gathered must still reach the hub at teardown, or the
    // messages would be redelivered when their locks expire.
    for pkid in pkids {
        c.feed(Packet::PubAck(PubAck::new(pkid))).await.unwrap();
    }
    c.flush().await.unwrap();
    drop(c);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(ctx.hub.read(|h| h.peek_c2d("d1").unwrap().is_empty()));
}

#[tokio::test]
async fn window_limits_unacknowledged_deliveries() {
    let (mut ctx, key) = context();
    ctx.mqtt.settings.max_inflight = 2;
    for b in ["1", "2", "3"] {
        enqueue(&ctx, b);
    }
    let (mut c, _task, _) = connect(&ctx, &key, true, Limits::default()).await;
    subscribe_c2d(&mut c).await;
    let p1 = next_publish(&mut c).await;
    let p2 = next_publish(&mut c).await;
    assert_eq!((&p1.payload[..], &p2.payload[..]), (&b"1"[..], &b"2"[..]));
    c.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PingResp));
    c.send(Packet::PubAck(PubAck::new(p1.pkid))).await.unwrap();
    let p3 = next_publish(&mut c).await;
    assert_eq!(&p3.payload[..], b"3");
}

#[tokio::test]
async fn a_dropped_connection_releases_its_locks_and_keeps_the_session() {
    let (ctx, key) = context();
    let (mut c, task, _) = connect(&ctx, &key, false, Limits::default()).await;
    subscribe_c2d(&mut c).await;
    enqueue(&ctx, "x");
    let first = next_publish(&mut c).await;
    assert!(!first.dup);
    drop(c);
    task.await.unwrap();
    assert!(ctx.hub.read(|h| !h.peek_c2d("d1").unwrap()[0].is_locked()));
    assert!(ctx.mqtt.sessions.has_stored("d1"));

    let (mut c, _task, ack) = connect(&ctx, &key, false, Limits::default()).await;
    assert!(ack.session_present);
    let again = next_publish(&mut c).await;
    assert!(again.dup);
    assert_eq!(&again.payload[..], b"x");
}

#[tokio::test]
async fn clean_session_forgets_the_subscription() {
    let (ctx, key) = context();
    let (mut c, task, _) = connect(&ctx, &key, false, Limits::default()).await;
    subscribe_c2d(&mut c).await;
    c.send(Packet::Disconnect).await.unwrap();
    task.await.unwrap();
    let (mut c, _task, ack) = connect(&ctx, &key, true, Limits::default()).await;
    assert!(!ack.session_present);
    enqueue(&ctx, "x");
    c.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PingResp));
    assert!(ctx.hub.read(|h| !h.peek_c2d("d1").unwrap()[0].is_locked()));
}

#[tokio::test]
async fn refusals_get_their_connack_then_close() {
    let (ctx, _key) = context();
    let (mut c, task) = open(&ctx, Limits::default(), 4096);
    c.send(connect_packet(
        "SharedAccessSignature sr=localhost%2Fdevices%2Fd1&sig=AAAA&se=99999999999",
        true,
        60,
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut c).await,
        Some(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::NotAuthorized,
            false
        )))
    );
    assert_eq!(next(&mut c).await, None);
    task.await.unwrap();
    assert_eq!(ctx.hub.connection_count(), 0);
}

#[tokio::test]
async fn first_packet_must_be_connect() {
    let (ctx, _key) = context();
    let (mut c, task) = open(&ctx, Limits::default(), 4096);
    c.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut c).await, None);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_closes() {
    let (ctx, _key) = context();
    let (mut c, task) = open(&ctx, Limits::default(), 4096);
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(30), c.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(started.elapsed() >= Limits::default().connect_timeout);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn keep_alive_closes_after_one_and_a_half_times() {
    let (ctx, key) = context();
    let (mut c, task) = open(&ctx, Limits::default(), 4096);
    c.send(connect_packet(&token(&ctx, &key), true, 2))
        .await
        .unwrap();
    assert!(matches!(next(&mut c).await, Some(Packet::ConnAck(_))));
    let started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PingResp));
    assert_eq!(next(&mut c).await, None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    task.await.unwrap();
}

/// Expiry follows the hub's clock (virtual here), not the socket's: moving the clock past `se`
/// closes the connection within a second, and before that nothing happens.
#[tokio::test(start_paused = true)]
async fn the_connection_closes_when_its_token_expires() {
    let (ctx, key) = context();
    let (mut c, task) = open(&ctx, Limits::default(), 4096);
    let sas = build_token("localhost/devices/d1", &key, None, ctx.now_unix() + 120).unwrap();
    c.send(connect_packet(&sas, true, 0)).await.unwrap();
    assert!(matches!(next(&mut c).await, Some(Packet::ConnAck(_))));
    ctx.hub.advance_clock(Duration::from_secs(119));
    let early = tokio::time::timeout(Duration::from_secs(5), c.next()).await;
    assert!(early.is_err(), "closed before the token expired: {early:?}");
    ctx.hub.advance_clock(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(300), c.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_its_message_requeued() {
    let (ctx, key) = context();
    let limits = Limits {
        write_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    // A tiny pipe: the client never reads, so the big PUBLISH cannot be written.
    let (mut c, task) = open(&ctx, limits, 256);
    c.send(connect_packet(&token(&ctx, &key), true, 60))
        .await
        .unwrap();
    assert!(matches!(next(&mut c).await, Some(Packet::ConnAck(_))));
    subscribe_c2d(&mut c).await;
    enqueue(&ctx, &"x".repeat(8 * 1024));
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(ctx.hub.read(|h| !h.peek_c2d("d1").unwrap()[0].is_locked()));
}

#[tokio::test]
async fn shutdown_and_device_deletion_end_connections() {
    let (ctx, key) = context();
    let (mut c, task, _) = connect(&ctx, &key, true, Limits::default()).await;
    ctx.shutdown.cancel();
    assert_eq!(next(&mut c).await, None);
    task.await.unwrap();

    let (ctx, key) = context();
    let (mut c, task, _) = connect(&ctx, &key, true, Limits::default()).await;
    ctx.hub
        .run(|hub, now| hub.delete_device("d1", None, now))
        .unwrap();
    assert_eq!(next(&mut c).await, None);
    task.await.unwrap();
}

#[tokio::test]
async fn a_second_connection_takes_over() {
    let (ctx, key) = context();
    let (mut first, first_task, _) = connect(&ctx, &key, false, Limits::default()).await;
    subscribe_c2d(&mut first).await;
    let (mut second, _task, ack) = connect(&ctx, &key, false, Limits::default()).await;
    assert!(ack.session_present);
    assert_eq!(next(&mut first).await, None);
    first_task.await.unwrap();
    enqueue(&ctx, "to the second");
    assert_eq!(
        &next_publish(&mut second).await.payload[..],
        b"to the second"
    );
    assert_eq!(ctx.hub.connection_count(), 1);
}

#[tokio::test]
async fn violations_close_the_connection() {
    let bad: Vec<Packet> = vec![
        Packet::Publish(Publish::new(
            "devices/d2/messages/events/",
            QoS::AtLeastOnce,
            "x",
        )),
        Packet::Publish({
            let mut p = Publish::new("devices/d1/messages/events/", QoS::ExactlyOnce, "x");
            p.pkid = 1;
            p
        }),
        Packet::Publish(Publish::new("random/topic", QoS::AtMostOnce, "x")),
        connect_packet("x", true, 60),
        Packet::PingResp,
    ];
    for packet in bad {
        let (ctx, key) = context();
        let (mut c, task, _) = connect(&ctx, &key, true, Limits::default()).await;
        let shown = format!("{packet:?}");
        let packet = match packet {
            Packet::Publish(mut p) if p.qos == QoS::AtLeastOnce => {
                p.pkid = 9;
                Packet::Publish(p)
            }
            p => p,
        };
        c.send(packet).await.unwrap();
        assert_eq!(next(&mut c).await, None, "{shown}");
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_flood_of_packets_closes_the_connection() {
    let (ctx, key) = context();
    let limits = Limits {
        max_packets_per_second: 50,
        ..Limits::default()
    };
    let (mut c, task, _) = connect(&ctx, &key, true, limits).await;
    for _ in 0..40 {
        c.send(Packet::PingReq).await.unwrap();
        assert_eq!(next(&mut c).await, Some(Packet::PingResp));
    }
    for _ in 0..20 {
        let _ = c.feed(Packet::PingReq).await;
    }
    let _ = c.flush().await;
    loop {
        match next(&mut c).await {
            Some(Packet::PingResp) => continue,
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    task.await.unwrap();
}

#[tokio::test]
async fn telemetry_is_recorded_before_puback_and_twin_requests_are_answered_after_it() {
    let (ctx, key) = context();
    let (mut c, _task, _) = connect(&ctx, &key, true, Limits::default()).await;
    let mut twin = Publish::new("$iothub/twin/GET/?$rid=1", QoS::AtLeastOnce, "");
    twin.pkid = 4;
    c.send(Packet::Publish(twin)).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PubAck(PubAck::new(4))));
    match next(&mut c).await {
        Some(Packet::Publish(r)) => assert_eq!(r.topic, "$iothub/twin/res/200/?$rid=1"),
        other => panic!("expected the twin response, got {other:?}"),
    }
    let mut p = Publish::new(
        "devices/d1/messages/events/%24.mid=m1&k=v%20w",
        QoS::AtLeastOnce,
        "hello",
    );
    p.pkid = 5;
    c.send(Packet::Publish(p)).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Packet::PubAck(PubAck::new(5))));
    let recorded = ctx.hub.read(|h| h.d2c_messages("d1").unwrap());
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message().body, b"hello");
    assert_eq!(recorded[0].message().properties.get("k"), Some("v w"));
    // ... and lands in the event log, stamped with the device's own-key authentication.
    let partition = crate::hub::event_log::partition_for_device("d1", 4).to_string();
    let events = ctx.hub.read(|h| {
        let mut c = h.cursor(&partition, &iothub_protocol::EventPosition::Earliest)?;
        Ok::<_, crate::hub::EventLogError>(h.read_events(&mut c, 10))
    });
    let events = events.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message.body, b"hello");
    let auth = events[0].connection.as_ref().map(|c| c.auth);
    assert_eq!(auth, Some(crate::hub::AuthMethod::DEVICE_SAS));
}
