//! Helpers shared by every end-to-end test: an emulator on OS-picked ports, devices, SAS
//! tokens, and TLS clients that trust the emulator's CA. Protocol clients live beside it in
//! [`amqp`], [`mqtt`] and [`http`].

#![allow(dead_code)]

pub mod amqp;
pub mod http;
pub mod mqtt;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iothub_emulator::credentials::IOTHUBOWNER;
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::sas::build_token;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// Tokens last ten days, so advancing the virtual clock by hours keeps them valid.
const TOKEN_LIFETIME_SECS: u64 = 10 * 86_400;

/// Fails the test if `f` takes longer than [`WAIT`].
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

/// Polls `cond` every 10 ms until it holds, for at most [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An emulator on ports the OS picks (zero feedback window, real clock).
pub async fn start() -> RunningEmulator {
    Emulator::builder().start().await.expect("emulator starts")
}

/// An emulator whose clock tests can move forward.
pub async fn start_virtual() -> RunningEmulator {
    Emulator::builder()
        .virtual_clock(true)
        .start()
        .await
        .expect("emulator starts")
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

/// The primary key of an existing device.
pub fn device_key(emu: &RunningEmulator, id: &str) -> String {
    emu.hub()
        .read(|h| h.get_device(id))
        .expect("device exists")
        .primary_key()
        .expect("device has a key")
        .to_owned()
}

fn expiry(emu: &RunningEmulator) -> u64 {
    emu.context().now_unix() + TOKEN_LIFETIME_SECS
}

/// A token signed with a device key, valid for ten days of the emulator's clock.
pub fn device_token(emu: &RunningEmulator, id: &str, key: &str) -> String {
    device_token_until(id, key, expiry(emu))
}

/// A device token expiring at `se`.
pub fn device_token_until(id: &str, key: &str, se: u64) -> String {
    build_token(&format!("localhost/devices/{id}"), key, None, se).expect("token")
}

/// A token signed with the stored primary key of an existing device.
pub fn stored_device_token(emu: &RunningEmulator, id: &str) -> String {
    device_token(emu, id, &device_key(emu, id))
}

/// A hub-scoped token of `policy` (as the service SDKs make them), valid for ten days.
pub fn policy_token(emu: &RunningEmulator, policy: &str) -> String {
    policy_token_until(emu, policy, expiry(emu))
}

/// A hub-scoped token of `policy` expiring at `se`.
pub fn policy_token_until(emu: &RunningEmulator, policy: &str, se: u64) -> String {
    let p = emu.context().auth.policy(policy).expect("policy exists");
    build_token("localhost", &p.primary_key, Some(&p.name), se).expect("token")
}

/// An `iothubowner` token.
pub fn owner_token(emu: &RunningEmulator) -> String {
    policy_token(emu, IOTHUBOWNER)
}

/// A rustls client configuration (ring) trusting the emulator's CA, without ALPN.
pub fn client_tls(emu: &RunningEmulator) -> Arc<rustls::ClientConfig> {
    Arc::new(client_tls_with_alpn(emu, Vec::new()))
}

/// A rustls client configuration trusting the emulator's CA that offers `alpn`.
pub fn client_tls_with_alpn(emu: &RunningEmulator, alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config
}

/// A TLS connection to `port` on the loopback address, nothing sent yet.
pub async fn tls_to(emu: &RunningEmulator, port: u16) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("server name");
    within(TlsConnector::from(client_tls(emu)).connect(name, tcp))
        .await
        .expect("TLS handshake")
}
