//! Bytes hyper cannot parse in a header value: a control character in `Authorization` gets the
//! hub's 401 body (as a missing token does), not hyper's bare 400, and the connection serves on.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http::*;
use crate::support::*;

/// Sends one raw HTTP/1.1 request with `authorization` as the header's bytes; the response
/// head and body as text.
async fn raw_request(c: &Client, authorization: &[u8]) -> String {
    let mut s = c.connect(false).await;
    let mut req =
        b"GET /devices/d1?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    req.extend_from_slice(b"Authorization: ");
    req.extend_from_slice(authorization);
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let _ = within(s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_in_authorization_gets_the_hubs_401() {
    let (emu, c) = start_http().await;
    create_device(&emu, "d1");
    let good = owner_token(&emu);
    for bad in [
        format!("{}\x01", &good[..20]),
        "SharedAccessSignature sr=localhost\x7f&sig=x&se=1".to_owned(),
        format!("{good}\x1b"),
        "\x08".to_owned(),
    ] {
        let resp = raw_request(&c, bad.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 401"), "{bad:?}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("iothub-errorcode: iothubunauthorizedaccess"),
            "{resp}"
        );
        assert!(
            resp.contains("\"Message\":\"ErrorCode:IotHubUnauthorizedAccess;"),
            "{resp}"
        );
    }
    // The same connection kind still serves a good token.
    let resp = raw_request(&c, good.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    emu.shutdown().await;
}
