//! A Rust service client for Azure IoT Hub and the local emulator: cloud-to-device (C2D)
//! messages and their feedback over AMQP 1.0, the device registry over HTTPS.
//!
//! The same code talks to a real hub and to the emulator; only the connection string changes
//! (and, for the emulator, trusting its CA and, when it runs on non-standard ports, the ports).
//!
//! # Design overview
//!
//! * **One AMQP connection** per [`ServiceClient`] (and its clones), opened on first use: TLS
//!   from byte 0, no SASL layer, a CBS put-token of a hub-scoped SAS token, as the Node service
//!   SDK does. The token is put again on the same connection before it expires
//!   ([`ServiceClientBuilder::sas_token_lifetime`]).
//! * **One C2D sender link**, owned by a task that only hands each transfer to the link and
//!   gives the pending outcome back to the caller, so thousands of [`ServiceClient::send_c2d`]
//!   calls can be in flight at once. A link or connection that failed is reopened on the next
//!   send. See the `amqp` module notes in the source for the details.
//! * **Feedback** arrives as batches on a receiver link ([`ServiceClient::feedback`]); each
//!   batch must be completed or abandoned explicitly ([`feedback`] explains what dropping does).
//! * **Registry** calls ([`ServiceClient::create_device`] and friends) use a pooled HTTPS
//!   client with the same token source.
//! * **TLS** is rustls with the ring provider only (aws-lc-rs is never built). Trusted roots are
//!   the platform's, plus the CA named by the `IOTHUB_CA_CERT` environment variable (a PEM
//!   file, or PEM text), plus any given with [`ServiceClientBuilder::trust_ca_pem`] or
//!   [`ServiceClientBuilder::trust_ca_file`].
//! * **Errors** are one enum, [`Error`], with a variant for each case a caller can act on:
//!   [`Error::DeviceNotFound`], [`Error::QueueFull`] (403004), [`Error::MessageTooLarge`],
//!   [`Error::Unauthorized`], [`Error::Throttled`], [`Error::PreconditionFailed`], ...
//!
//! # Example
//!
//! Send a message that asks for full feedback, then wait for the feedback. Here the emulator
//! runs in-process (a device completes the message through the emulator's own API); against a
//! real hub only the builder lines change: `ServiceClient::from_connection_string(cs)?`.
//!
//! ```
//! use std::time::Duration;
//! use iothub_service::{AckMode, FeedbackStatus, Message, ServiceClient};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emulator = iothub_emulator::Emulator::builder().start().await?;
//! # let connection_string = emulator.service_connection_string();
//! # let ports = emulator.endpoints();
//! let client = ServiceClient::builder(&connection_string)?
//!     .trust_ca_pem(emulator.ca_pem())      // the emulator's CA (or set IOTHUB_CA_CERT)
//!     .amqp_port(ports.amqp)                // a real hub listens on 5671 ...
//!     .https_port(ports.https)              // ... and 443
//!     .build()?;
//!
//! client.create_device(&iothub_service::Device::new("thermostat")).await?;
//!
//! let mut message = Message::new(r#"{"service client sent a message": 13.5}"#);
//! message.system.message_id = Some("message_0".into());
//! message.system.ack = AckMode::Full;
//! message.properties.insert("Property", "PropMsg_0");
//! client.send_c2d("thermostat", &message).await?;
//!
//! # emulator.hub().run(|hub, now| {
//! #     let m = hub.receive_c2d("thermostat", now).unwrap().unwrap();
//! #     hub.complete_c2d("thermostat", m.system.lock_token.as_deref().unwrap(), now)
//! # })?;
//! let mut feedback = client.feedback().await?;
//! let batch = tokio::time::timeout(Duration::from_secs(30), feedback.recv()).await??;
//! for record in batch.records() {
//!     println!("{} -> {}", record.original_message_id, record.status_code);
//! }
//! assert_eq!(batch.records()[0].status_code, FeedbackStatus::Success);
//! batch.complete().await?;
//! client.close().await;
//! # emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod amqp;
pub mod error;
pub mod feedback;
pub mod registry;
mod tls;
mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iothub_protocol::connection_string::ServiceConnectionString;

pub use error::Error;
pub use feedback::{FeedbackBatch, FeedbackReceiver};
pub use iothub_protocol::connection_string::{self, ConnectionStringError};
pub use iothub_protocol::registry::{Device, DeviceStatus, PurgeMessageQueueResult};
pub use iothub_protocol::{AckMode, ErrorCode, FeedbackRecord, FeedbackStatus, Message, MessageId};
pub use registry::IfMatch;
pub use tls::CA_CERT_ENV;
pub use token::MIN_TOKEN_LIFETIME;

use amqp::{AmqpHandle, AmqpSettings};
use registry::Registry;
use tls::{CaSource, Trust};
use token::TokenSource;

/// The AMQP port of a real hub (AMQP over TLS).
pub const DEFAULT_AMQP_PORT: u16 = 5671;
/// The HTTPS port of a real hub.
pub const DEFAULT_HTTPS_PORT: u16 = 443;
/// Default lifetime of the SAS tokens the client makes (renewed after about four fifths).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Default limit for one operation (a send, a registry call, opening a connection).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Configures a [`ServiceClient`]; from [`ServiceClient::builder`].
///
/// Nothing is connected by [`build`](Self::build): the AMQP connection opens on the first
/// send or feedback call, HTTPS connections on the first registry call.
#[derive(Debug, Clone)]
pub struct ServiceClientBuilder {
    connection_string: ServiceConnectionString,
    trust: Trust,
    amqp_port: Option<u16>,
    https_port: Option<u16>,
    token_lifetime: Duration,
    timeout: Duration,
}

impl ServiceClientBuilder {
    /// A builder for this (already parsed) connection string.
    pub fn new(connection_string: ServiceConnectionString) -> Self {
        ServiceClientBuilder {
            connection_string,
            trust: Trust::default(),
            amqp_port: None,
            https_port: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Also trusts the CA certificate(s) in this PEM text (for example the emulator's CA).
    /// The text is checked by [`build`](Self::build).
    pub fn trust_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.trust.extra.push(CaSource::Pem(pem.as_ref().to_vec()));
        self
    }

    /// Also trusts the CA certificate(s) in this PEM file, read by [`build`](Self::build).
    pub fn trust_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust.extra.push(CaSource::File(path.into()));
        self
    }

    /// Whether to trust the platform's root certificates (default `true`).
    pub fn platform_roots(mut self, on: bool) -> Self {
        self.trust.platform_roots = on;
        self
    }

    /// Whether to trust the CA named by the environment variable [`CA_CERT_ENV`]
    /// (`IOTHUB_CA_CERT`: a PEM file path, or PEM text) when it is set (default `true`).
    pub fn ca_from_env(mut self, on: bool) -> Self {
        self.trust.ca_from_env = on;
        self
    }

    /// The AMQP port. A real hub uses [`DEFAULT_AMQP_PORT`] (5671), the default; set this for
    /// an emulator on another port. A `:port` in `HostName` is not used for connecting.
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// The HTTPS port. A real hub uses [`DEFAULT_HTTPS_PORT`] (443), the default; set this for
    /// an emulator on another port.
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// How long each SAS token is valid (default [`DEFAULT_TOKEN_LIFETIME`], one hour; at
    /// least [`MIN_TOKEN_LIFETIME`]). A new token is put on the AMQP connection, and used for
    /// HTTPS, after about four fifths of it.
    pub fn sas_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Limit for each operation: a send (from the call until the hub's outcome), a registry
    /// call, opening the AMQP connection (default [`DEFAULT_OPERATION_TIMEOUT`], 60 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings, loads the trusted roots and returns the client (not connected).
    ///
    /// Errors: [`Error::Config`] for unreadable or invalid CA certificates, no trusted roots
    /// at all, or a token lifetime below [`MIN_TOKEN_LIFETIME`].
    pub fn build(self) -> Result<ServiceClient, Error> {
        if self.token_lifetime < MIN_TOKEN_LIFETIME {
            return Err(Error::config(format!(
                "the SAS token lifetime {:?} is too short; use at least {MIN_TOKEN_LIFETIME:?}",
                self.token_lifetime
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("the operation timeout must not be zero"));
        }
        let tls = self.trust.client_config()?;
        let cs = self.connection_string;
        let host = connect_host(&cs.host_name).to_owned();
        let tokens = Arc::new(TokenSource::new(&cs, self.token_lifetime));
        let amqp = AmqpHandle::new(AmqpSettings {
            host: host.clone(),
            port: self.amqp_port.unwrap_or(DEFAULT_AMQP_PORT),
            tls: Arc::new(tls.clone()),
            tokens: tokens.clone(),
            timeout: self.timeout,
        });
        let registry = Registry::new(
            &host,
            self.https_port.unwrap_or(DEFAULT_HTTPS_PORT),
            tls,
            tokens,
            self.timeout,
        );
        Ok(ServiceClient {
            inner: Arc::new(Inner {
                connection_string: cs,
                amqp,
                registry,
                timeout: self.timeout,
            }),
        })
    }
}

/// The host part of `HostName` (without a `:port`).
fn connect_host(host_name: &str) -> &str {
    host_name
        .split_once(':')
        .map_or(host_name, |(host, _)| host)
}

/// A client for a hub's service side: C2D messages, feedback and the device registry.
///
/// Cheap to clone; clones share one AMQP connection and one HTTPS pool. Needs a Tokio runtime
/// for its async methods (it can be built outside one). The connection closes when the last
/// clone (and the last [`FeedbackReceiver`]) is dropped, or on [`close`](Self::close).
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

struct Inner {
    connection_string: ServiceConnectionString,
    amqp: AmqpHandle,
    registry: Registry,
    timeout: Duration,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("host_name", &self.inner.connection_string.host_name)
            .field("key_name", &self.inner.connection_string.key_name)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client with the default settings for this connection string
    /// (`HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`): platform roots plus
    /// `IOTHUB_CA_CERT`, ports 5671 and 443, one-hour tokens.
    pub fn from_connection_string(connection_string: &str) -> Result<ServiceClient, Error> {
        Self::builder(connection_string)?.build()
    }

    /// A builder for this connection string.
    pub fn builder(connection_string: &str) -> Result<ServiceClientBuilder, Error> {
        let cs: ServiceConnectionString = connection_string.parse()?;
        Ok(ServiceClientBuilder::new(cs))
    }

    /// The connection string's `HostName`.
    pub fn host_name(&self) -> &str {
        &self.inner.connection_string.host_name
    }

    /// The hub name: the first label of the host name.
    pub fn hub_name(&self) -> &str {
        self.inner.connection_string.hub_name()
    }

    /// Sends a C2D message to a device and returns once the hub has enqueued it.
    ///
    /// Everything set in `message` is sent: body, message id, correlation id, user id,
    /// absolute expiry, content type and encoding, application properties, and the ack mode
    /// (as `iothub-ack`; [`AckMode::None`] sends none). `to` is always set by the client to
    /// the device's endpoint (any `to` in `message` is ignored). Give the message an id when
    /// asking for feedback: records refer to it as `originalMessageId`.
    ///
    /// Calls may run concurrently (for example `join_all` over thousands of sends): they share
    /// one link and are pipelined.
    ///
    /// Errors: [`Error::DeviceNotFound`], [`Error::QueueFull`] (403004),
    /// [`Error::MessageTooLarge`], [`Error::Unauthorized`], [`Error::Throttled`],
    /// [`Error::InvalidArgument`], other [`Error::Hub`] rejections, [`Error::Connection`],
    /// [`Error::Timeout`]. After a connection or timeout error the message may or may not have
    /// been enqueued.
    pub async fn send_c2d(&self, device_id: &str, message: &Message) -> Result<(), Error> {
        let amqp_message = amqp::convert::c2d_message(device_id, message);
        tokio::time::timeout(self.inner.timeout, self.inner.amqp.send(amqp_message))
            .await
            .map_err(|_| Error::Timeout {
                operation: "sending a C2D message",
                after: self.inner.timeout,
            })?
    }

    /// Opens a receiver of feedback batches (a new link on the client's AMQP connection).
    ///
    /// Usually one receiver per application: the hub hands each batch to one receiver.
    pub async fn feedback(&self) -> Result<FeedbackReceiver, Error> {
        let link = self.inner.amqp.open_feedback().await?;
        Ok(FeedbackReceiver::new(self.inner.amqp.clone(), link))
    }

    /// Registers a device and returns it as stored, with the keys the hub generated when
    /// `device` has none (`PUT /devices/{id}` without `If-Match`).
    ///
    /// Errors: [`Error::DeviceAlreadyExists`], [`Error::InvalidArgument`],
    /// [`Error::Unauthorized`], ...
    pub async fn create_device(&self, device: &Device) -> Result<Device, Error> {
        self.inner.registry.create_device(device).await
    }

    /// Reads a device (`GET /devices/{id}`). Errors: [`Error::DeviceNotFound`], ...
    pub async fn get_device(&self, device_id: &str) -> Result<Device, Error> {
        self.inner.registry.get_device(device_id).await
    }

    /// Replaces a device (`PUT /devices/{id}` with `If-Match`) and returns it as stored, with
    /// its new etag. Use [`IfMatch::from_device`] for an update that fails with
    /// [`Error::PreconditionFailed`] when someone else changed the device since it was read,
    /// or [`IfMatch::Any`] to force it.
    pub async fn update_device(&self, device: &Device, if_match: IfMatch) -> Result<Device, Error> {
        self.inner.registry.update_device(device, &if_match).await
    }

    /// Deletes a device (`DELETE /devices/{id}` with `If-Match`), its C2D queue and its pending
    /// feedback. Errors: [`Error::DeviceNotFound`], [`Error::PreconditionFailed`], ...
    pub async fn delete_device(&self, device_id: &str, if_match: IfMatch) -> Result<(), Error> {
        self.inner
            .registry
            .delete_device(device_id, &if_match)
            .await
    }

    /// Lists devices (`GET /devices?top=N`): at most `top`, which the hub takes from 1 to
    /// 1000 (other values mean 1000).
    pub async fn list_devices(&self, top: usize) -> Result<Vec<Device>, Error> {
        self.inner.registry.list_devices(top).await
    }

    /// Deletes every pending C2D message of a device (`DELETE /devices/{id}/commands`) and says
    /// how many there were. Errors: [`Error::DeviceNotFound`], ...
    pub async fn purge_c2d(&self, device_id: &str) -> Result<PurgeMessageQueueResult, Error> {
        self.inner.registry.purge_c2d(device_id).await
    }

    /// Closes the AMQP connection (for every clone and feedback receiver). Later sends and
    /// feedback calls fail with [`Error::Closed`]; registry calls still work.
    pub async fn close(&self) {
        self.inner.amqp.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn builder() -> ServiceClientBuilder {
        ServiceClient::builder(CS)
            .unwrap()
            .platform_roots(false)
            .ca_from_env(false)
    }

    #[test]
    fn bad_connection_strings_are_typed() {
        let e =
            ServiceClient::from_connection_string("HostName=h;SharedAccessKey=AA==").unwrap_err();
        assert!(matches!(e, Error::InvalidConnectionString(_)), "{e:?}");
    }

    #[test]
    fn a_client_needs_roots_and_a_sane_lifetime() {
        let e = builder().build().unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
        let e = builder()
            .trust_ca_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
        let e = ServiceClient::builder(CS)
            .unwrap()
            .sas_token_lifetime(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
    }

    #[test]
    fn host_without_port_is_dialled() {
        assert_eq!(connect_host("localhost:5671"), "localhost");
        assert_eq!(connect_host("h.example"), "h.example");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let b = builder();
        let debug = format!("{b:?}");
        assert!(
            !debug.contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            "{debug}"
        );
    }
}
