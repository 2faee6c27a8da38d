//! Connection-level behaviour with short limits, over plain TCP: stalled and silent clients are
//! closed without disturbing others, and shutdown ends every connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{AppState, Limits, https_app, server};
use crate::context::Context;
use crate::hub::HubSettings;

const SHORT: Limits = Limits {
    tls_handshake: Duration::from_millis(300),
    header_read: Duration::from_millis(300),
    request: Duration::from_millis(500),
    idle: Duration::from_millis(800),
    h2_keep_alive: Duration::from_secs(5),
    shutdown_grace: Duration::from_millis(300),
};

async fn start() -> (Context, u16) {
    let ctx = Context::for_tests(HubSettings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = https_app(AppState::new(ctx.clone()), SHORT);
    ctx.tasks
        .spawn(server::serve(listener, None, app, ctx.clone(), SHORT));
    (ctx, port)
}

async fn health(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /Health/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    out
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    (out, start.elapsed())
}

#[tokio::test]
async fn a_stalled_half_request_is_closed_and_others_are_served() {
    let (ctx, port) = start().await;
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let answer = health(port).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"ok""#));
    assert!(answer.contains("x-emulator-version"));
    let (_, took) = until_closed(&mut stalled).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn a_silent_client_and_a_slow_body_are_cut_off() {
    let (ctx, port) = start().await;
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(
        b"POST /devices/d1/messages/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    )
    .await
    .unwrap();
    let (_, took) = until_closed(&mut silent).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (answer, _) = until_closed(&mut slow).await;
    let answer = String::from_utf8_lossy(&answer);
    // Either the request timeout answered, or the connection was cut; it did not hang.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 "),
        "{answer}"
    );
    assert!(health(port).await.starts_with("HTTP/1.1 200"));
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_ends_every_connection() {
    let (ctx, port) = start().await;
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    idle.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    ctx.shutdown.cancel();
    ctx.tasks.close();
    tokio::time::timeout(Duration::from_secs(3), ctx.tasks.wait())
        .await
        .expect("every task ends");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_hub_error() {
    let (ctx, port) = start().await;
    for req in [
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PATCH /devices/d1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (out, _) = until_closed(&mut s).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("iothub-errorcode: InvalidOperation"), "{out}");
        assert!(out.contains("ErrorCode:InvalidOperation;"), "{out}");
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn error_bodies_carry_the_hubs_time_not_the_wall_clock() {
    use tower::ServiceExt as _;
    let ctx = Context::for_tests(HubSettings::default());
    assert!(
        ctx.hub
            .advance_clock(Duration::from_secs(20 * 365 * 86_400))
    );
    let year = ctx.hub.now().year();
    let app = https_app(AppState::new(ctx), SHORT);
    let req = axum::http::Request::get("/no/such/route")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: iothub_protocol::error::ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert!(
        body.exception_message.contains(&format!("/{year} ")),
        "{} should be stamped in {year}",
        body.exception_message
    );
    assert!(body.message.starts_with("ErrorCode:InvalidOperation;"));
}
