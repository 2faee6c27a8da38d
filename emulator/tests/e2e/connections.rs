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
