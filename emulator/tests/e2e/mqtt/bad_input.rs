//! MQTT over TLS, hostile input: malformed bytes, a first packet that is not CONNECT and
//! oversize packets each close only their own connection; a connected device keeps working and
//! no message is lost. (Floods and clients that stop reading are covered over in-memory streams
//! in `src/mqtt/tests.rs`.)

use std::time::Duration;

use crate::support::mqtt::*;
use crate::support::*;
use bytes::BytesMut;
use iothub_protocol::Message;
use rumqttc::{Connect, Incoming, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Reads until EOF or error; true if the server closed the stream within [`WAIT`].
async fn closed_by_server(s: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn encode(p: Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.write(&mut buf, 1 << 20).expect("encodes");
    buf.to_vec()
}

fn connect_bytes(emu: &iothub_emulator::RunningEmulator, id: &str, key: &str) -> Vec<u8> {
    let mut c = Connect::new(id);
    c.keep_alive = 60;
    c.set_login(username(id), device_token(emu, id, key));
    encode(Packet::Connect(c))
}

#[tokio::test]
async fn bad_input_closes_only_its_own_connection() {
    let emu = start().await;
    let good_key = create_device(&emu, "good");
    let bad_key = create_device(&emu, "bad");

    let mut good = connect(device_options(&emu, "good", &good_key, true)).await;
    good.client
        .subscribe("devices/good/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    good.until(|p| matches!(p, Incoming::SubAck(_)).then_some(()))
        .await;

    // 1. Bytes that are not MQTT.
    let mut raw = raw_tls(&emu).await;
    raw.write_all(b"\xff\xff\xff\xff\xff garbage")
        .await
        .expect("write");
    raw.flush().await.expect("flush");
    assert!(closed_by_server(&mut raw).await, "garbage");

    // 2. A first packet that is not CONNECT.
    let mut raw = raw_tls(&emu).await;
    raw.write_all(&encode(Packet::PingReq))
        .await
        .expect("write");
    raw.flush().await.expect("flush");
    assert!(closed_by_server(&mut raw).await, "not CONNECT");

    // 3. After a good CONNECT: a malformed PUBLISH (topic length beyond the packet).
    let mut raw = raw_tls(&emu).await;
    raw.write_all(&connect_bytes(&emu, "bad", &bad_key))
        .await
        .expect("write");
    let _ = raw.write_all(&[0x30, 0x03, 0x00, 0xff, b'a']).await;
    let _ = raw.flush().await;
    assert!(closed_by_server(&mut raw).await, "malformed PUBLISH");

    // 4. An oversize PUBLISH: the header announces 10 MB; refused before it is buffered.
    let mut raw = raw_tls(&emu).await;
    raw.write_all(&connect_bytes(&emu, "bad", &bad_key))
        .await
        .expect("write");
    let _ = raw.write_all(&[0x30, 0x80, 0x80, 0x80, 0x05]).await;
    let _ = raw.write_all(&[0u8; 4096]).await;
    let _ = raw.flush().await;
    assert!(closed_by_server(&mut raw).await, "oversize header");

    // 5. A telemetry payload over 256 KB inside the packet limit.
    let mut raw = raw_tls(&emu).await;
    raw.write_all(&connect_bytes(&emu, "bad", &bad_key))
        .await
        .expect("write");
    let mut big = rumqttc::Publish::new(
        "devices/bad/messages/events/",
        QoS::AtMostOnce,
        vec![b'x'; 256 * 1024 + 1],
    );
    big.retain = true;
    let _ = raw.write_all(&encode(Packet::Publish(big))).await;
    let _ = raw.flush().await;
    assert!(closed_by_server(&mut raw).await, "oversize payload");

    assert!(
        emu.hub()
            .read(|h| h.d2c_messages("bad").expect("bad"))
            .is_empty()
    );

    // The good device was never disturbed and still gets its messages.
    assert!(good.idle_for(Duration::from_millis(100)).await.is_none());
    emu.hub()
        .run(|h, now| h.enqueue_c2d("good", Message::new("still here"), now))
        .expect("enqueued");
    let p = good.next_publish().await;
    assert_eq!(&p.payload[..], b"still here");
    good.ack(&p).await;
    wait_until("completed", || {
        emu.hub()
            .read(|h| h.peek_c2d("good").expect("good").is_empty())
    })
    .await;
    emu.shutdown().await;
}
