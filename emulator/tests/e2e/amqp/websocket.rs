//! AMQP over WebSockets on the HTTPS port: a service sends C2D through `wss://.../$iothub/websocket`
//! and the message lands in the device's queue, exactly as over 5671.

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::types::messaging::{Message, MessageId, Properties};
use fe2o3_amqp::{Connection, Sender, Session};
use fe2o3_amqp_ws::WebSocketStream;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

async fn over_websocket(emu: &iothub_emulator::RunningEmulator, path: &str) {
    let tcp = TcpStream::connect(("127.0.0.1", emu.endpoints().https))
        .await
        .expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = within(TlsConnector::from(client_tls(emu)).connect(name, tcp))
        .await
        .expect("TLS handshake");
    let url = format!("ws://localhost:{}{path}", emu.endpoints().https);
    let ws = within(WebSocketStream::connect_with_stream(url, tls))
        .await
        .expect("WebSocket upgrade");
    let mut conn = within(
        Connection::builder()
            .container_id("ws-test")
            .hostname("localhost")
            .open_with_stream(ws),
    )
    .await
    .expect("AMQP open over WebSocket");
    let mut session = within(Session::begin(&mut conn)).await.expect("session");
    let mut cbs = Cbs::attach(&mut session).await;
    let reply = cbs.put_token(MessageId::Ulong(7), &owner_token(emu)).await;
    assert_eq!(status_code(&reply), 200);
    let mut sender = within(Sender::attach(&mut session, "c2d", "/messages/devicebound"))
        .await
        .expect("c2d sender");
    let msg = Message::builder()
        .properties(Properties {
            to: Some(to("ws-dev")),
            message_id: Some(format!("over-ws-{}", path.len()).into()),
            ..Properties::default()
        })
        .data(b"over a websocket".to_vec())
        .build();
    let outcome = within(sender.send(msg)).await.expect("send");
    assert!(outcome.is_accepted(), "{outcome:?}");
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = conn.close().await;
}

#[tokio::test]
async fn a_service_sends_c2d_over_both_websocket_paths() {
    let emu = start().await;
    create_device(&emu, "ws-dev");
    over_websocket(&emu, "/$iothub/websocket").await;
    over_websocket(&emu, "/$servicebus/websocket/").await;
    let queued = emu
        .hub()
        .read(|h| h.peek_c2d("ws-dev"))
        .expect("device exists");
    let bodies: Vec<&[u8]> = queued.iter().map(|m| m.message.body.as_slice()).collect();
    assert_eq!(
        bodies,
        vec![&b"over a websocket"[..], &b"over a websocket"[..]]
    );
    emu.shutdown().await;
}
