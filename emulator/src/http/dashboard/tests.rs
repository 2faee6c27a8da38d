//! The dashboard's routes over a real socket: the token exchange, refusals, a change through
//! the hub, and the live event stream.

use std::sync::Arc;
use std::time::Duration;

use iothub_protocol::Message;
use iothub_protocol::registry::Device;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Dashboard;
use crate::context::Context;
use crate::http::{AppState, Limits, plain_app, server};
use crate::hub::{HubSettings, Origin};

struct Served {
    ctx: Context,
    port: u16,
    dash: Arc<Dashboard>,
}

async fn start() -> Served {
    let ctx = Context::for_tests(HubSettings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dash = Arc::new(Dashboard::new("localhost", port).unwrap());
    let limits = Limits::default();
    let app = plain_app(AppState::new(ctx.clone()), limits, Some(dash.clone()));
    ctx.tasks
        .spawn(server::serve(listener, None, app, ctx.clone(), limits));
    Served { ctx, port, dash }
}

impl Served {
    fn cookie(&self) -> String {
        format!("{}={}", self.dash.cookie, self.dash.token)
    }

    /// Sends one request (`Connection: close`) and returns the whole answer.
    async fn send(&self, head: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let req = format!(
            "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("answer in time")
            .unwrap();
        out
    }

    async fn get(&self, path: &str, extra: &str) -> String {
        self.send(
            &format!(
                "GET {path} HTTP/1.1\r\nHost: localhost:{}{extra}",
                self.port
            ),
            "",
        )
        .await
    }

    async fn post(&self, path: &str, origin: &str, csrf: &str, body: &str) -> String {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\nOrigin: {origin}\r\nx-csrf-token: {csrf}\r\nContent-Type: application/json",
            port = self.port,
            cookie = self.cookie(),
        );
        self.send(&head, body).await
    }

    async fn stop(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
    }
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_banner_token_becomes_a_strict_cookie_and_the_page_needs_it() {
    let s = start().await;
    let without = s.get("/", "").await;
    assert_eq!(status(&without), 401);
    assert!(without.contains("printed when it started"), "{without}");
    assert!(without.contains("content-security-policy: default-src 'none'"));
    assert!(!without.contains(&s.dash.csrf));

    let wrong = s.get("/?token=0123", "").await;
    assert_eq!(status(&wrong), 401);
    assert!(!wrong.to_ascii_lowercase().contains("set-cookie"));

    let url = s.dash.url().to_owned();
    let path = &url[url.find("/?").unwrap()..];
    let exchanged = s.get(path, "").await;
    assert_eq!(status(&exchanged), 303);
    assert!(exchanged.contains("location: /\r\n"), "{exchanged}");
    assert!(exchanged.contains(&format!(
        "set-cookie: {}; HttpOnly; SameSite=Strict; Path=/",
        s.cookie()
    )));

    let page = s.get("/", &format!("\r\nCookie: {}", s.cookie())).await;
    assert_eq!(status(&page), 200);
    assert!(page.contains(&format!(
        r#"<meta name="csrf-token" content="{}">"#,
        s.dash.csrf
    )));

    let health = s.get("/health", "").await;
    assert_eq!(status(&health), 200, "health stays open");
    s.stop().await;
}

#[tokio::test]
async fn reads_need_the_cookie_and_a_local_host_name() {
    let s = start().await;
    assert_eq!(status(&s.get("/dashboard/api/devices", "").await), 401);
    let cookie = format!("\r\nCookie: {}", s.cookie());
    let ok = s.get("/dashboard/api/devices", &cookie).await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains(r#""total":0"#));
    let rebound = s
        .send(
            &format!(
                "GET /dashboard/api/devices HTTP/1.1\r\nHost: evil.example:{}{cookie}",
                s.port
            ),
            "",
        )
        .await;
    assert_eq!(status(&rebound), 421);
    s.stop().await;
}

#[tokio::test]
async fn changes_need_same_origin_and_csrf_and_go_through_the_hub() {
    let s = start().await;
    let origin = format!("http://localhost:{}", s.port);
    let body = r#"{"deviceId":"dash1"}"#;
    let csrf = s.dash.csrf.clone();
    let cross = s
        .post(
            "/dashboard/api/devices/create",
            "http://evil.example",
            &csrf,
            body,
        )
        .await;
    assert_eq!(status(&cross), 403, "{cross}");
    let no_csrf = s
        .post("/dashboard/api/devices/create", &origin, "nope", body)
        .await;
    assert_eq!(status(&no_csrf), 403);
    assert_eq!(s.ctx.hub.read(|h| h.device_count()), 0);

    let ok = s
        .post("/dashboard/api/devices/create", &origin, &csrf, body)
        .await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(s.ctx.hub.read(|h| h.get_device("dash1")).is_ok());
    let dup = s
        .post("/dashboard/api/devices/create", &origin, &csrf, body)
        .await;
    assert_eq!(status(&dup), 409, "the hub's rule answers: {dup}");

    let sent = s
        .post(
            "/dashboard/api/c2d/send",
            &origin,
            &csrf,
            r#"{"deviceId":"dash1","body":"hi","ack":"full","properties":{"k":"v"}}"#,
        )
        .await;
    assert_eq!(status(&sent), 200, "{sent}");
    let queue = s.ctx.hub.read(|h| h.c2d_view("dash1")).unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].message.properties["k"], "v");
    assert_eq!(queue[0].message.ack, "full");
    s.stop().await;
}

#[tokio::test]
async fn the_event_stream_reports_changes_and_telemetry() {
    let s = start().await;
    s.ctx
        .hub
        .run(|h, now| h.create_device(Device::new("d1"), now))
        .unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let req = format!(
        "GET /dashboard/api/events HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {}\r\n\r\n",
        s.port,
        s.cookie()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0_u8; 4096];
    let mut sent = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("telemetry-body") {
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
            .await
            .expect("telemetry arrives in time")
            .unwrap();
        assert!(n > 0, "stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !sent && seen.contains("event: hello") {
            sent = true;
            s.ctx
                .hub
                .run(|h, now| {
                    h.send_telemetry(&Origin::device("d1"), Message::new("telemetry-body"), now)
                })
                .unwrap();
        }
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: changed"));
    assert!(seen.contains("event: telemetry"));
    assert!(seen.contains(r#""deviceId":"d1""#));
    drop(sock);
    s.stop().await;
}
