//! Shared by the `http_*` tests: an emulator on free ports with a virtual clock, a small HTTPS
//! client over tokio-rustls that trusts the emulator's CA, and SAS tokens.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use iothub_emulator::credentials::{IOTHUBOWNER, well_known_policies};
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_protocol::sas::build_token;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Starts an emulator with a virtual clock on free ports.
pub async fn start() -> (RunningEmulator, Client) {
    let emu = Emulator::builder()
        .virtual_clock(true)
        .start()
        .await
        .expect("emulator starts");
    let client = Client::new(&emu);
    (emu, client)
}

/// Tokens last ten days, so advancing the virtual clock by an hour or two keeps them valid.
fn expiry(emu: &RunningEmulator) -> u64 {
    emu.context().now_unix() + 10 * 86_400
}

/// A token of a well-known policy, valid for ten days.
pub fn policy_token(emu: &RunningEmulator, policy: &str) -> String {
    let p = well_known_policies()
        .into_iter()
        .find(|p| p.name == policy)
        .expect("well-known policy");
    build_token("localhost", &p.primary_key, Some(&p.name), expiry(emu)).unwrap()
}

/// An `iothubowner` token.
pub fn owner(emu: &RunningEmulator) -> String {
    policy_token(emu, IOTHUBOWNER)
}

/// A token signed with the device's own primary key.
pub fn device_token(emu: &RunningEmulator, device_id: &str) -> String {
    let key = emu
        .hub()
        .read(|h| h.get_device(device_id))
        .expect("device exists")
        .primary_key()
        .unwrap()
        .to_owned();
    build_token(
        &format!("localhost/devices/{device_id}"),
        &key,
        None,
        expiry(emu),
    )
    .unwrap()
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
    roots: Arc<rustls::RootCertStore>,
}

impl Client {
    /// A client trusting the emulator's CA.
    pub fn new(emu: &RunningEmulator) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Client {
            https_port: emu.endpoints().https,
            http_port: emu.endpoints().http,
            roots: Arc::new(roots),
        }
    }

    /// A TLS connection to the HTTPS port.
    pub async fn connect(&self, h2: bool) -> TlsStream<TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let tcp = TcpStream::connect(("127.0.0.1", self.https_port))
            .await
            .unwrap();
        TlsConnector::from(Arc::new(config))
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
