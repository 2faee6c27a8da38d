//! Helpers for the MQTT end-to-end tests: an emulator on OS-picked ports, devices, SAS tokens,
//! and rumqttc (manual acks) over real TLS trusting the emulator's CA.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iothub_emulator::{Emulator, RunningEmulator};
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::sas::build_token;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Publish,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// An emulator on ports the OS picks.
pub async fn start() -> RunningEmulator {
    Emulator::builder().start().await.expect("emulator starts")
}

/// Creates a device and returns its primary key.
pub fn create_device(emu: &RunningEmulator, id: &str) -> String {
    let d = emu
        .hub()
        .run(|hub, now| hub.create_device(Device::new(id), now))
        .expect("device created");
    d.primary_key().expect("generated key").to_owned()
}

/// Sets a device's status to disabled.
pub fn disable_device(emu: &RunningEmulator, id: &str) {
    emu.hub()
        .run(|hub, now| {
            let mut d = hub.get_device(id)?;
            d.status = DeviceStatus::Disabled;
            hub.put_device(d, Some("*"), now)
        })
        .expect("device disabled");
}

/// A device SAS token valid for an hour (of the emulator's clock).
pub fn token(emu: &RunningEmulator, id: &str, key: &str) -> String {
    token_until(id, key, emu.context().now_unix() + 3600)
}

/// A device SAS token expiring at `se`.
pub fn token_until(id: &str, key: &str, se: u64) -> String {
    build_token(&format!("localhost/devices/{id}"), key, None, se).expect("token")
}

/// The SDKs' user name for a device.
pub fn username(id: &str) -> String {
    format!("localhost/{id}/?api-version=2021-04-12&DeviceClientType=rust-test%2F1.0")
}

/// A rustls client configuration (ring) trusting the emulator's CA.
pub fn client_tls(emu: &RunningEmulator) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// rumqttc options for `client_id` over TLS, manual acks, keep-alive 30 s.
pub fn options(
    emu: &RunningEmulator,
    client_id: &str,
    username: &str,
    password: &str,
    clean_session: bool,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "localhost", emu.endpoints().mqtt);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_tls(emu),
    )));
    o.set_credentials(username, password);
    o.set_clean_session(clean_session);
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(512 * 1024, 512 * 1024);
    o
}

/// Options for a registered device with a valid token.
pub fn device_options(
    emu: &RunningEmulator,
    id: &str,
    key: &str,
    clean_session: bool,
) -> MqttOptions {
    options(emu, id, &username(id), &token(emu, id, key), clean_session)
}

/// A connected device.
pub struct Mqtt {
    pub client: AsyncClient,
    pub events: EventLoop,
    pub connack: ConnAck,
    /// C2D PUBLISHes received while waiting for something else.
    pub received: VecDeque<Publish>,
}

/// The result of the first poll: the CONNACK or the error.
pub async fn try_connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
    let (client, mut events) = AsyncClient::new(opts, 16);
    loop {
        match within(events.poll()).await? {
            Event::Incoming(Incoming::ConnAck(connack)) => {
                return Ok(Mqtt {
                    client,
                    events,
                    connack,
                    received: VecDeque::new(),
                });
            }
            _ => continue,
        }
    }
}

/// Connects or panics.
pub async fn connect(opts: MqttOptions) -> Mqtt {
    try_connect(opts).await.expect("CONNACK")
}

/// `f` within [`WAIT`], or a panic.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

impl Mqtt {
    /// Polls until an incoming packet satisfies `pick`; PUBLISHes not picked are kept for
    /// [`Mqtt::next_publish`].
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            match within(self.events.poll()).await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                    if let Incoming::Publish(p) = p {
                        self.received.push_back(p);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// The next C2D PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        if let Some(p) = self.received.pop_front() {
            return p;
        }
        self.until(|p| match p {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Polls until the connection fails (the server closed it); the error.
    pub async fn until_closed(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = within(self.events.poll()).await {
                return e;
            }
        }
    }

    /// Polls for `d` and returns the first error, if any (the connection must stay up).
    pub async fn idle_for(&mut self, d: Duration) -> Option<ConnectionError> {
        let end = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(end, self.events.poll()).await {
                Err(_) => return None,
                Ok(Err(e)) => return Some(e),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends PUBACK for `p` and polls until it is written.
    pub async fn ack(&mut self, p: &Publish) {
        self.client.ack(p).await.expect("ack queued");
        let pkid = p.pkid;
        loop {
            match within(self.events.poll()).await {
                Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(id))) if id == pkid => return,
                Ok(Event::Incoming(Incoming::Publish(p))) => self.received.push_back(p),
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }
}

/// Polls `cond` every 10 ms until it holds, for at most [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw TLS connection to the MQTT port.
pub async fn raw_tls(emu: &RunningEmulator) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", emu.endpoints().mqtt))
        .await
        .expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(client_tls(emu))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}
