//! MQTT rules a hostile client tests: a token `se` near `u64::MAX`, token expiry on the hub's
//! (virtual) clock, wildcards in a PUBLISH topic, SUBSCRIBE with the wrong fixed-header flags,
//! and CONNECT for a protocol level other than 4.

use std::time::Duration;

use crate::support::mqtt::*;
use crate::support::*;
use bytes::BytesMut;
use iothub_emulator::RunningEmulator;
use iothub_protocol::{Message, MessageId};
use rumqttc::{Connect, ConnectReturnCode, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Everything the server sends until it closes the stream; `None` if it stays open past
/// [`WAIT`].
async fn read_until_closed(s: &mut TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

fn encode(p: Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.write(&mut buf, 1 << 20).expect("encodes");
    buf.to_vec()
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// A raw connection with an accepted CONNECT for `id`.
async fn connected_raw(emu: &RunningEmulator, id: &str, key: &str) -> TlsStream<TcpStream> {
    let mut c = Connect::new(id);
    c.keep_alive = 60;
    c.set_login(username(id), device_token(emu, id, key));
    let mut raw = raw_tls(emu).await;
    raw.write_all(&encode(Packet::Connect(c))).await.unwrap();
    let mut ack = [0u8; 4];
    within(raw.read_exact(&mut ack)).await.unwrap();
    assert_eq!(ack, CONNACK_OK);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_valid_until_the_end_of_time_does_not_panic_the_connection() {
    let emu = start().await;
    let key = create_device(&emu, "d1");
    for se in [u64::MAX, u64::MAX - 1, i64::MAX as u64 + 1] {
        let token = device_token_until("d1", &key, se);
        let mut m = connect(options(&emu, "d1", &username("d1"), &token, false)).await;
        assert_eq!(m.connack.code, ConnectReturnCode::Success);
        m.client
            .subscribe("devices/d1/messages/devicebound/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        emu.hub()
            .run(|hub, now| {
                let mut msg = Message::new("x");
                msg.system.message_id = Some(MessageId::from(format!("m{se}")));
                hub.enqueue_c2d("d1", msg, now)
            })
            .unwrap();
        let p = m.next_publish().await;
        m.ack(&p).await;
        assert!(
            m.idle_for(Duration::from_millis(300)).await.is_none(),
            "se {se}"
        );
        let _ = m.client.disconnect().await;
    }
    within(emu.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_the_virtual_clock_expires_an_mqtt_session() {
    let emu = start_virtual().await;
    let key = create_device(&emu, "d1");
    let se = emu.context().now_unix() + 600;
    let token = device_token_until("d1", &key, se);
    let mut m = connect(options(&emu, "d1", &username("d1"), &token, true)).await;
    assert!(m.idle_for(Duration::from_millis(1500)).await.is_none());
    assert!(emu.hub().advance_clock(Duration::from_secs(601)));
    m.until_closed().await;
    within(emu.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_in_a_publish_topic_and_bad_subscribe_flags_close_the_connection() {
    let emu = start().await;
    let key = create_device(&emu, "d1");
    for topic in [
        "devices/d1/messages/events/#",
        "devices/d1/messages/events/+",
        "devices/+/messages/events/",
    ] {
        let mut raw = connected_raw(&emu, "d1", &key).await;
        let name = topic.as_bytes();
        let mut p = vec![0x30, (2 + name.len() + 1) as u8, 0, name.len() as u8];
        p.extend_from_slice(name);
        p.push(b'x');
        raw.write_all(&p).await.unwrap();
        assert_eq!(
            read_until_closed(&mut raw).await,
            Some(Vec::new()),
            "{topic}"
        );
    }
    // SUBSCRIBE (pkid 1, "devices/d1/messages/devicebound/#", QoS 1) with flags 0000 and 0011.
    let filter = b"devices/d1/messages/devicebound/#";
    for first in [0x80u8, 0x83] {
        let mut raw = connected_raw(&emu, "d1", &key).await;
        let mut p = vec![
            first,
            (2 + 2 + filter.len() + 1) as u8,
            0,
            1,
            0,
            filter.len() as u8,
        ];
        p.extend_from_slice(filter);
        p.push(1);
        raw.write_all(&p).await.unwrap();
        assert_eq!(
            read_until_closed(&mut raw).await,
            Some(Vec::new()),
            "{first:#x}"
        );
    }
    // The same SUBSCRIBE with the right flags gets its SUBACK.
    let mut raw = connected_raw(&emu, "d1", &key).await;
    let mut p = vec![
        0x82,
        (2 + 2 + filter.len() + 1) as u8,
        0,
        1,
        0,
        filter.len() as u8,
    ];
    p.extend_from_slice(filter);
    p.push(1);
    raw.write_all(&p).await.unwrap();
    let mut ack = [0u8; 5];
    within(raw.read_exact(&mut ack)).await.unwrap();
    assert_eq!(ack, [0x90, 0x03, 0x00, 0x01, 0x01]);
    // A device whose id holds `#` and `+` (the hub allows both) still sends telemetry.
    let key = create_device(&emu, "a#b+c");
    let mut raw = connected_raw(&emu, "a#b+c", &key).await;
    let name = b"devices/a#b+c/messages/events/";
    let mut p = vec![0x32, (2 + name.len() + 2 + 1) as u8, 0, name.len() as u8];
    p.extend_from_slice(name);
    p.extend_from_slice(&[0, 7, b'x']);
    raw.write_all(&p).await.unwrap();
    let mut ack = [0u8; 4];
    within(raw.read_exact(&mut ack)).await.unwrap();
    assert_eq!(ack, [0x40, 0x02, 0x00, 0x07]);
    within(emu.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_for_another_protocol_level_gets_connack_1_then_the_close() {
    let emu = start().await;
    let key = create_device(&emu, "d1");
    let mut c = Connect::new("d1");
    c.keep_alive = 60;
    c.set_login(username("d1"), device_token(&emu, "d1", &key));
    let good = encode(Packet::Connect(c));
    // The protocol level follows the protocol name "\x00\x04MQTT".
    let at = good
        .windows(6)
        .position(|w| w == b"\x00\x04MQTT")
        .expect("protocol name")
        + 6;
    assert_eq!(good[at], 4);
    for level in [3u8, 5, 6, 0, 255] {
        let mut bytes = good.clone();
        bytes[at] = level;
        let mut raw = raw_tls(&emu).await;
        raw.write_all(&bytes).await.unwrap();
        let got = read_until_closed(&mut raw).await;
        assert_eq!(got, Some(vec![0x20, 0x02, 0x00, 0x01]), "level {level}");
    }
    within(emu.shutdown()).await;
}
