//! Bad input of every kind gets the hub's answer, and the server goes on serving others.

use std::time::Duration;

use crate::support::http::{Client, start_http};
use crate::support::{owner_token, stored_device_token};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn still_serving(c: &Client, token: &str) {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.get("/devices/d1").auth(token).send(),
    )
    .await
    .expect("the server still answers");
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn bad_requests_leave_the_server_serving() {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    let own = owner_token(&emu);
    let dev = stored_device_token(&emu, "d1");

    // Stalled clients: TCP only, half a TLS handshake, and half an HTTP request over TLS.
    let _silent = TcpStream::connect(("127.0.0.1", c.https_port))
        .await
        .unwrap();
    let mut half_tls = TcpStream::connect(("127.0.0.1", c.https_port))
        .await
        .unwrap();
    half_tls
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut half_http = c.connect(false).await;
    half_http
        .write_all(b"PUT /devices/d9 HTTP/1.1\r\nHost: localhost\r\nContent-Le")
        .await
        .unwrap();
    half_http.flush().await.unwrap();
    still_serving(&c, &own).await;

    // Not TLS at all on the TLS port: the handshake fails and the connection closes.
    let mut plain = TcpStream::connect(("127.0.0.1", c.https_port))
        .await
        .unwrap();
    plain
        .write_all(b"GET /devices HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink))
        .await
        .expect("a non-TLS client is closed");

    // Garbage instead of HTTP inside TLS.
    let mut garbage = c.connect(false).await;
    garbage
        .write_all(b"\x00\x01NOT HTTP\r\n\r\n")
        .await
        .unwrap();
    garbage.flush().await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut sink))
        .await
        .expect("a client speaking garbage is closed");
    still_serving(&c, &own).await;

    // Each bad request gets the hub's error.
    c.put("/devices/d1")
        .auth(&own)
        .header("content-type", "application/json")
        .body("{\"deviceId\":")
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.put("/devices/big")
        .auth(&own)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .assert_hub_error(413, "MessageTooLarge");
    c.get("/no/such/route")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(400, "InvalidOperation");
    c.req(hyper::Method::PATCH, "/devices/d1")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(400, "InvalidOperation");
    c.delete("/devices/d1/messages/deviceBound/%22not-a-lock%22")
        .auth(&dev)
        .send()
        .await
        .assert_hub_error(412, "DeviceMessageLockLost");
    c.get("/devices/%C3%A9/messages/deviceBound")
        .auth(&dev)
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.get("/devices/%FF")
        .auth(&own)
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    c.post("/devices/d1/messages/events")
        .auth(&dev)
        .header("content-type", "application/vnd.microsoft.iothub.json")
        .body(serde_json::to_vec(&json!({"body": "not an array"})).unwrap())
        .send()
        .await
        .assert_hub_error(400, "ArgumentInvalid");
    still_serving(&c, &own).await;

    // The stalled TLS client is still stalled (not served, not crashing anything); dropping
    // everything and shutting down is clean.
    drop(half_http);
    drop(half_tls);
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .expect("shutdown does not wait for stalled clients");
}

#[tokio::test]
async fn many_concurrent_clients() {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    let own = owner_token(&emu);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let c = c.clone();
        let own = own.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.get("/devices/d1").auth(&own).send_h2().await;
            assert_eq!(r.status, 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    emu.shutdown().await;
}
