//! The shared accept loop (issue 12): one cap over every listener, probation until a
//! connection authenticates, and room for a real client while idle sockets fill the cap.

use std::time::{Duration, Instant};

use iothub_emulator::Emulator;
use iothub_emulator::accept::ConnectionLimits;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::http::Client;
use crate::support::within;

async fn start_with(max: usize, pre_auth: Duration) -> iothub_emulator::RunningEmulator {
    Emulator::builder()
        .connection_limits(ConnectionLimits { max, pre_auth })
        .start()
        .await
        .expect("emulator starts")
}

/// True once the server closed `s` (EOF or reset).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_sockets_on_every_listener_cannot_keep_a_client_out() {
    let emu = start_with(8, Duration::from_secs(30)).await;
    let ports = [
        emu.endpoints().mqtt,
        emu.endpoints().amqp,
        emu.endpoints().https,
        emu.endpoints().http,
    ];
    let mut idle = Vec::new();
    for i in 0..16 {
        idle.push(
            TcpStream::connect(("127.0.0.1", ports[i % ports.len()]))
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let health = within(Client::new(&emu).plain_get("/health")).await;
    let took = started.elapsed();
    assert_eq!(health.status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    println!("a client connected through 16 idle sockets over a cap of 8 in {took:?}");
    // The first idle sockets made room: they are closed.
    assert!(closed(&mut idle[0]).await);
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed_after_the_deadline() {
    let emu = start_with(100, Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(("127.0.0.1", emu.endpoints().amqp))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed(&mut s).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    within(emu.shutdown()).await;
}

/// A WebSocket connection (AMQP here; MQTT takes the same upgrade path) stays counted under the
/// cap after the HTTP upgrade, for as long as its session lasts.
#[tokio::test]
async fn websocket_connections_stay_counted_after_the_upgrade() {
    use fe2o3_amqp::{Connection, Session};
    use fe2o3_amqp_ws::WebSocketStream;
    use rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    let emu = start_with(100, Duration::from_secs(30)).await;
    let live = || emu.context().admission.live();
    let tcp = TcpStream::connect(("127.0.0.1", emu.endpoints().https))
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(TlsConnector::from(crate::support::client_tls(&emu)).connect(name, tcp))
        .await
        .unwrap();
    let url = format!("ws://localhost:{}/$iothub/websocket", emu.endpoints().https);
    let ws = within(WebSocketStream::connect_with_stream(url, tls))
        .await
        .unwrap();
    let mut conn = within(
        Connection::builder()
            .container_id("ws-count")
            .hostname("localhost")
            .open_with_stream(ws),
    )
    .await
    .expect("AMQP open over WebSocket");
    let session = within(Session::begin(&mut conn)).await.expect("session");
    // The AMQP session is served: the HTTP connection's own task has ended by now.
    assert_eq!(live(), 1, "the WebSocket connection is counted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(live(), 1, "and stays counted");
    drop(session);
    let _ = within(conn.close()).await;
    crate::support::wait_until("the closed WebSocket is no longer counted", || live() == 0).await;
    within(emu.shutdown()).await;
}

/// The same for a device on MQTT over WebSockets.
#[tokio::test]
async fn mqtt_websocket_connections_stay_counted_after_the_upgrade() {
    use crate::support::mqtt::{connect, username};
    use rumqttc::{MqttOptions, TlsConfiguration, Transport};

    let emu = start_with(100, Duration::from_secs(30)).await;
    let live = || emu.context().admission.live();
    let key = crate::support::create_device(&emu, "ws-counted");
    let url = format!(
        "wss://localhost:{}/$iothub/websocket",
        emu.endpoints().https
    );
    let mut o = MqttOptions::new("ws-counted", url, emu.endpoints().https);
    o.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        crate::support::client_tls(&emu),
    )));
    o.set_credentials(
        username("ws-counted"),
        crate::support::device_token(&emu, "ws-counted", &key),
    );
    o.set_keep_alive(Duration::from_secs(30));
    let device = connect(o).await;
    assert_eq!(live(), 1, "the WebSocket connection is counted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(live(), 1, "and stays counted");
    drop(device);
    crate::support::wait_until("the closed WebSocket is no longer counted", || live() == 0).await;
    within(emu.shutdown()).await;
}
