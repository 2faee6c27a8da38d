//! The HTTP side of the end-to-end tests: a small HTTPS client over tokio-rustls that trusts
//! the emulator's CA (HTTP/1.1 and h2), and a plain-HTTP GET.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use iothub_emulator::RunningEmulator;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client_tls_with_alpn;

/// Starts an emulator with a virtual clock on free ports, and a client for it.
pub async fn start_http() -> (RunningEmulator, Client) {
    let emu = super::start_virtual().await;
    let client = Client::new(&emu);
    (emu, client)
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the hub's error shape and returns the code name.
    pub fn assert_hub_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("iothub-errorcode"), Some(code));
        let v = self.json();
        let msg = v["Message"].as_str().expect("Message is a string");
        assert!(
            msg.starts_with(&format!("ErrorCode:{code};")),
            "Message: {msg}"
        );
        assert!(
            v["ExceptionMessage"]
                .as_str()
                .unwrap()
                .starts_with("Tracking ID:")
        );
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request being built.
pub struct Req<'a> {
    client: &'a Client,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req<'_> {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `Authorization`.
    pub fn auth(self, token: &str) -> Self {
        self.header("authorization", token)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body with its content type.
    pub fn json(self, v: &Value) -> Self {
        self.header("content-type", "application/json; charset=utf-8")
            .body(serde_json::to_vec(v).unwrap())
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header("host", "localhost");
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(Bytes::from(self.body.clone()))).unwrap()
    }

    /// Sends over a fresh HTTP/1.1 connection.
    pub async fn send(self) -> Resp {
        let tls = self.client.connect(false).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        collect(sender.send_request(self.build()).await.unwrap()).await
    }

    /// Sends over a fresh h2 connection (ALPN `h2`).
    pub async fn send_h2(self) -> Resp {
        let tls = self.client.connect(true).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = self.build();
        req.headers_mut().remove("host");
        *req.uri_mut() = format!("https://localhost{}", self.path).parse().unwrap();
        collect(sender.send_request(req).await.unwrap()).await
    }
}

async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// An HTTPS client for one emulator.
#[derive(Clone)]
pub struct Client {
    pub https_port: u16,
    pub http_port: u16,
    http1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client trusting the emulator's CA.
    pub fn new(emu: &RunningEmulator) -> Self {
        Client {
            https_port: emu.endpoints().https,
            http_port: emu.endpoints().http,
            http1: Arc::new(client_tls_with_alpn(emu, vec![b"http/1.1".to_vec()])),
            h2: Arc::new(client_tls_with_alpn(emu, vec![b"h2".to_vec()])),
        }
    }

    /// A TLS connection to the HTTPS port.
    pub async fn connect(&self, h2: bool) -> TlsStream<TcpStream> {
        let config = if h2 { &self.h2 } else { &self.http1 };
        let tcp = TcpStream::connect(("127.0.0.1", self.https_port))
            .await
            .unwrap();
        TlsConnector::from(config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// A request to the HTTPS port.
    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            client: self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.req(Method::GET, path)
    }

    pub fn put(&self, path: &str) -> Req<'_> {
        self.req(Method::PUT, path)
    }

    pub fn post(&self, path: &str) -> Req<'_> {
        self.req(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> Req<'_> {
        self.req(Method::DELETE, path)
    }

    /// A GET on the plain-HTTP port.
    pub async fn plain_get(&self, path: &str) -> Resp {
        let tcp = TcpStream::connect(("127.0.0.1", self.http_port))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        collect(sender.send_request(req).await.unwrap()).await
    }
}
