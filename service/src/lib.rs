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
//!   ([`ServiceClientBuilder::token_lifetime`], [`ServiceClientBuilder::token_renewal_margin`]).
//!   Over TLS on 5671, or over a WebSocket on 443 ([`AmqpTransport::WebSocket`]) for networks
//!   that only let HTTPS through.
//! * **One C2D sender link**, owned by a task that only hands each transfer to the link and
//!   gives the pending outcome back to the caller, so thousands of [`ServiceClient::send_c2d`]
//!   calls can be in flight at once. A link or connection that failed is reopened on the next
//!   send. See the `amqp` module notes in the source for the details.
//! * **Feedback** arrives as batches on a receiver link ([`ServiceClient::feedback`]); each
//!   batch must be completed or abandoned explicitly ([`feedback`] explains what dropping does).
//! * **Modules**: [`ServiceClient::create_module`], [`ServiceClient::get_module`],
//!   [`ServiceClient::list_modules`], [`ServiceClient::update_module`],
//!   [`ServiceClient::delete_module`], module twins ([`ServiceClient::get_module_twin`],
//!   [`ServiceClient::update_module_twin`], [`ServiceClient::replace_module_twin`]) and
//!   [`ServiceClient::invoke_module_method`], with the device calls' [`IfMatch`] rules and
//!   errors ([`Error::ModuleNotFound`], [`Error::ModuleAlreadyExistsOnDevice`]).
//! * **Registry** calls ([`ServiceClient::create_device`] and friends) use a pooled HTTPS
//!   client with the same token source; every REST route goes through one request helper, so
//!   new routes (twins, direct methods) are added the same way.
//! * **TLS** is rustls with the ring provider only (aws-lc-rs is never built). Trusted roots are
//!   the platform's, plus the CA named by the `IOTHUB_CA_CERT` environment variable (a PEM
//!   file, or PEM text), plus any given with [`ServiceClientBuilder::trust_ca_pem`] or
//!   [`ServiceClientBuilder::trust_ca_file`]. The trust code is the device client's
//!   (`iothub_protocol::tls`), and the AMQP message mapping is the emulator's
//!   (`iothub_protocol::amqp`).
//! * **Errors** are one enum, [`Error`], with a variant for each case a caller can act on:
//!   [`Error::DeviceNotFound`], [`Error::DeviceMaximumQueueDepthExceeded`] (403004),
//!   [`Error::MessageTooLarge`], [`Error::Unauthorized`], [`Error::Throttled`],
//!   [`Error::PreconditionFailed`], ...
//!
//! # One vocabulary with the device client
//!
//! `iothub-device` and this crate are one library: the same option means the same thing under
//! the same name, with the same default (the defaults live in [`iothub_protocol::client`]).
//!
//! | what | option (both builders) | default |
//! |---|---|---|
//! | extra CA, PEM text / file | `trust_ca_pem(pem)`, `trust_ca_file(path)` | none |
//! | CA from the environment | `trust_ca_from_env(bool)`, variable [`CA_CERT_ENV`] (`IOTHUB_CA_CERT`, a path or PEM text) | on |
//! | the platform's roots | `platform_roots(bool)` | on |
//! | tests against your own server | `dangerous().accept_any_server_certificate()` | off |
//! | SAS token lifetime | `token_lifetime(d)`, at least [`MIN_TOKEN_LIFETIME`] | one hour |
//! | renew a token before expiry by | `token_renewal_margin(d)` | 2 min, at most half the lifetime |
//! | opening a connection | `connect_timeout(d)` | 10 s |
//! | one request, until the hub's answer | `request_timeout(d)` | 60 s |
//! | another port | device `port(p)`; here `amqp_port(p)`, `https_port(p)` | the hub's standard ports |
//!
//! `HostName=host:port` is read the same way by both: the port written there is used by the
//! client's main connection (the device client's transport; here AMQP, as the Node service
//! SDK does) unless a port option overrides it; tokens keep `HostName` as written. Both
//! builders are made with `Client::builder(connection_string)?` (or
//! `ClientBuilder::new(..)?`, or `from_parsed(..)` for a parsed string).
//!
//! Both [`Error`] types follow one scheme: variants named after the hub's error codes
//! ([`Error::DeviceNotFound`], [`Error::MessageTooLarge`], [`Error::ArgumentInvalid`], and
//! [`Error::Unauthorized`] / [`Error::Throttled`] for the 401 / 429 families, carrying the exact
//! [`ErrorCode`]), [`Error::Hub`] for any other hub error, the client's own failures named for
//! what happened ([`Error::Connection`], [`Error::Tls`], [`Error::Timeout`],
//! [`Error::Protocol`], [`Error::InvalidConnectionString`], [`Error::InvalidOption`],
//! [`Error::Closed`]), the underlying error kept as `source()` (print the whole chain with
//! [`display_chain`]), and [`Error::code`] and
//! [`Error::is_transient`] on both.
//!
//! # Connecting: lazily here, eagerly in the device client
//!
//! [`ServiceClientBuilder::build`] connects nothing; each connection opens on first use and the
//! credentials are checked by the first call. The device client connects in
//! `connect()` / `from_connection_string()` instead. The difference is deliberate: a device
//! client is one long-lived connection that *is* the device (it receives C2D messages and
//! reports its connection state, so a wrong key should fail at once), while a service client is
//! a set of independent operations over two protocols, and most programs use only some of them
//! (a provisioning script never opens AMQP; a sender never calls the registry). Opening only
//! what is used also lets a service client be built outside a Tokio runtime.
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
mod client;
mod config;
pub mod error;
pub mod events;
pub mod feedback;
mod https;
pub mod methods;
mod modules;
pub mod registry;
mod token;
mod twins;

pub use amqp::socket::AmqpTransport;
pub use client::ServiceClient;
pub use config::{
    DEFAULT_AMQP_PORT, DEFAULT_HTTPS_PORT, DangerousServiceClientBuilder, ServiceClientBuilder,
};
pub use error::Error;
pub use events::{EventConsumer, EventConsumerBuilder, EventPosition, EventStream};
pub use feedback::{FeedbackBatch, FeedbackReceiver};
pub use iothub_protocol::bulk::{BulkRegistryOperationResult, ExportImportDevice, ImportMode};
pub use iothub_protocol::client::{
    CA_CERT_ENV, Cause, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RENEWAL_MARGIN, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME, display_chain,
};
pub use iothub_protocol::connection_string::{self, ConnectionStringError};
pub use iothub_protocol::module::Module;
pub use iothub_protocol::query::{QueryItemType, QueryPage};
pub use iothub_protocol::registry::{Device, DeviceStatus, PurgeMessageQueueResult};
pub use iothub_protocol::twin::{Twin, TwinProperties};
pub use iothub_protocol::{AckMode, ErrorCode, FeedbackRecord, FeedbackStatus, Message, MessageId};
pub use methods::{MethodRequest, MethodResponse};
pub use registry::IfMatch;
