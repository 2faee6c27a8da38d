//! Hostile or broken AMQP peers: each gets a clean answer or close for its own connection, and a
//! second, well-behaved connection is never harmed. Nothing the hub handed out is lost.

use std::time::Duration;

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::messaging::{Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Receiver, Sender};
use iothub_emulator::RunningEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";

/// A well-behaved service connection still sends C2D.
async fn assert_healthy(emu: &RunningEmulator) {
    let (c, mut s, _cbs) = authorized(emu, &owner_token(emu)).await;
    let mut sender = within(Sender::attach(&mut s, "c2d", "/messages/devicebound"))
        .await
        .unwrap();
    let m = Message::builder()
        .properties(Properties {
            to: Some(to("dev1")),
            ..Properties::default()
        })
        .data(b"still fine".to_vec())
        .build();
    let outcome = within(sender.send(m)).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let mut c = c;
    let _ = within(c.close()).await;
}

/// Everything the server sends until it closes.
async fn read_until_closed(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within(s.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn garbage_or_a_wrong_header_gets_the_amqp_header_and_a_close() {
    let emu = start().await;
    create_device(&emu, "dev1");
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"AMQP\x02\x01\x00\x00",
        b"AMQP\x00\x02\x00\x00",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        let mut s = tls(&emu).await;
        s.write_all(garbage).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(read_until_closed(&mut s).await, AMQP_HEADER, "{garbage:?}");
        assert_healthy(&emu).await;
    }
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn garbage_frames_after_a_good_header_close_only_that_connection() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let frames: [&[u8]; 3] = [
        // A frame whose body is not a performative.
        b"\x00\x00\x00\x10\x02\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
        // A frame size far beyond any limit.
        b"\xff\xff\xff\xf0\x02\x00\x00\x00",
        // A frame size smaller than a frame header.
        b"\x00\x00\x00\x02",
    ];
    for frame in frames {
        let mut s = tls(&emu).await;
        s.write_all(AMQP_HEADER).await.unwrap();
        s.write_all(frame).await.unwrap();
        s.flush().await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert!(got.starts_with(AMQP_HEADER), "{frame:?}: {got:?}");
        assert_healthy(&emu).await;
    }
    // SASL with a garbage frame instead of sasl-init.
    let mut s = tls(&emu).await;
    s.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    s.write_all(b"\x00\x00\x00\x0c\x02\x01\x00\x00garb")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(got.starts_with(b"AMQP\x03\x01\x00\x00"), "{got:?}");
    assert_healthy(&emu).await;
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn silent_peers_do_not_block_anyone_and_shutdown_ends_them() {
    let emu = start().await;
    create_device(&emu, "dev1");
    // No TLS handshake at all, and TLS without a protocol header.
    let _tcp = TcpStream::connect(("127.0.0.1", emu.endpoints().amqp))
        .await
        .unwrap();
    let _tls = tls(&emu).await;
    // An open connection with a session that never does anything.
    let (_idle, _idle_session) = session(&emu).await;
    assert_healthy(&emu).await;
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn a_receiver_that_never_grants_credit_loses_nothing() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;
    let mut stingy = within(
        Receiver::builder()
            .name("stingy")
            .source("/devices/dev1/messages/devicebound")
            .credit_mode(CreditMode::Manual)
            .attach(&mut s),
    )
    .await
    .unwrap();
    let mut m = iothub_protocol::Message::new("waiting");
    m.system.message_id = Some("m1".into());
    emu.hub()
        .run(|h, now| h.enqueue_c2d("dev1", m, now))
        .unwrap();
    let nothing =
        tokio::time::timeout(Duration::from_millis(200), stingy.recv::<Body<Value>>()).await;
    assert!(nothing.is_err(), "no credit, no delivery");
    assert_healthy(&emu).await;

    let mut c = c;
    let _ = within(c.close()).await;
    let (c, mut s, _cbs) = authorized(&emu, &device_token(&emu, "dev1", &key)).await;
    let mut rx = within(Receiver::attach(
        &mut s,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    let d: Delivery<Body<Value>> = within(rx.recv()).await.unwrap();
    let Body::Data(data) = d.body() else {
        panic!("data body")
    };
    assert_eq!(data[0].0.to_vec(), b"waiting");
    within(rx.accept(&d)).await.unwrap();
    finish(c, emu).await;
}
