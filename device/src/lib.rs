//! An Azure IoT Hub device client: telemetry out, cloud-to-device (C2D) messages in, over
//! MQTT, MQTT over WebSockets or HTTPS.
//!
//! The same code works against a real hub and against the local emulator; only the connection
//! string changes, plus trusting the emulator's CA (set `IOTHUB_CA_CERT` to its `ca.pem`, or
//! call [`DeviceClientBuilder::trust_ca_file`]). The options, the environment variable and the
//! errors are the ones of the service client, `iothub-service` (see [One vocabulary with the
//! service client](#one-vocabulary-with-the-service-client)).
//!
//! ```no_run
//! use iothub_device::{DeviceClient, Message};
//!
//! # async fn run() -> Result<(), iothub_device::Error> {
//! let client = DeviceClient::from_connection_string(
//!     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=...",
//! )
//! .await?;
//!
//! // Telemetry: resolves once the hub acknowledged it.
//! let mut reading = Message::new(r#"{"temperature": 21.5}"#);
//! reading.system.content_type = Some("application/json".into());
//! reading.system.content_encoding = Some("utf-8".into());
//! reading.properties.insert("alert", "false");
//! client.send_event(reading).await?;
//!
//! // C2D: wait for messages; each is completed as it is taken (see CompletionMode).
//! let mut messages = client.messages();
//! while let Some(message) = messages.next().await {
//!     println!("{} {:?}", String::from_utf8_lossy(message.body()), message.properties());
//! }
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! # Transports
//!
//! [`Transport::Mqtt`] (port 8883, the default) and [`Transport::MqttWebSocket`] (port 443,
//! `/$iothub/websocket`) behave the same: the hub pushes C2D messages, and a message is
//! completed by its MQTT PUBACK. MQTT cannot reject or abandon a message; those calls return
//! [`Error::NotSupported`], as in the official SDKs. [`Transport::Https`] polls for C2D
//! messages and can complete, reject and abandon them.
//!
//! The client connects like the official SDKs (iothub-protocol.md 3.2, 7): client id = device
//! id, user name `{HostName}/{deviceId}/?api-version=2021-04-12&DeviceClientType=...`, a SAS
//! token as password, clean session 0, C2D subscription at QoS 1. With `GatewayHostName` in
//! the connection string, sockets and TLS (and the HTTP `Host`) go to the gateway on every
//! transport, while the user name and the token keep `HostName`. A `:port` written in
//! `HostName` or `GatewayHostName` is the port to connect to (as in the Node SDK), unless
//! [`DeviceClientBuilder::port`] overrides it. X.509 authentication is not supported
//! ([`Error::Unsupported`]); module identities are (see [Modules](#modules)).
//!
//! # Modules
//!
//! A connection string with `ModuleId=` makes the client that module identity
//! (iothub-beyond-c2d.md 4), over [`Transport::Mqtt`] or [`Transport::MqttWebSocket`]: MQTT
//! client id `{deviceId}/{moduleId}`, user name `{HostName}/{deviceId}/{moduleId}/?...`, tokens
//! for `{HostName}/devices/{deviceId}/modules/{moduleId}` signed with the module's key.
//! Telemetry goes to `devices/{deviceId}/modules/{moduleId}/messages/events/` and reaches the
//! Event Hubs-compatible endpoint with `iothub-connection-module-id`; the twin
//! ([`DeviceClient::twin`], [`DeviceClient::update_reported`],
//! [`DeviceClient::desired_updates`]) and direct methods ([`DeviceClient::on_method`]) are the
//! module's own. IoT Hub has no cloud-to-device messages for modules, so
//! [`DeviceClient::recv`] answers [`Error::NotSupportedForModule`]. Over [`Transport::Https`]
//! a module sends telemetry (`POST /devices/{deviceId}/modules/{moduleId}/messages/events`);
//! twins and methods need MQTT there as for devices.
//!
//! ```no_run
//! use iothub_device::{DeviceClient, Message, MethodResponse};
//!
//! # async fn run() -> Result<(), iothub_device::Error> {
//! let module = DeviceClient::from_connection_string(
//!     "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=filter;SharedAccessKey=...",
//! )
//! .await?;
//! assert_eq!(module.module_id(), Some("filter"));
//! module.send_event(Message::new(r#"{"filtered": true}"#)).await?;
//! module
//!     .update_reported(&serde_json::json!({"threshold": 10}))
//!     .await?;
//! module
//!     .on_method("reset", |_req| async { MethodResponse::new(200, "{}") })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Trust
//!
//! TLS is rustls with the *ring* provider. The platform's root certificates are trusted (so a
//! real hub works); add a CA with [`DeviceClientBuilder::trust_ca_pem`] or
//! [`DeviceClientBuilder::trust_ca_file`], or through the environment variable
//! `IOTHUB_CA_CERT` ([`CA_CERT_ENV`]: a path or PEM text; see
//! [`DeviceClientBuilder::trust_ca_from_env`]). The trust code is the service client's
//! (`iothub_protocol::tls`).
//!
//! # Tokens
//!
//! With a `SharedAccessKey`, the client signs tokens for `{HostName}/devices/{deviceId}` (a
//! module: `.../modules/{moduleId}`) that
//! live one hour ([`DeviceClientBuilder::token_lifetime`]) and replaces each two minutes (at
//! most half its lifetime) before it expires
//! ([`DeviceClientBuilder::token_renewal_margin`]); over MQTT that means
//! reconnecting, as the SDKs do. A ready-made `SharedAccessSignature` is used as given; when it
//! expires the client stops with [`Error::TokenExpired`] (MQTT: at the expiry time; HTTPS: at
//! the next request), and an already expired one fails at connect.
//!
//! # Completion and delivery guarantees
//!
//! In [`CompletionMode::Automatic`] (the default) a message is completed as the application
//! takes it from [`DeviceClient::recv`] or [`DeviceClient::messages`]. In
//! [`CompletionMode::Manual`] it is completed when the application calls
//! [`ReceivedMessage::complete`].
//!
//! Delivery is at-least-once, never at-most-once:
//! * A message is only removed from the hub's queue by its completion. Messages that arrived
//!   but were not yet taken when a connection dropped are discarded by the client, and the hub
//!   delivers them again on the next connection, so they are neither lost nor duplicated.
//! * A message that was taken but whose completion had not reached the hub when the
//!   connection dropped (its PUBACK was still queued, or in manual mode it was not completed
//!   yet) is delivered again: the application may see it twice. Make handling idempotent, e.g.
//!   by remembering message ids.
//! * Telemetry not acknowledged when a connection drops is sent again on the next one, so the
//!   hub may receive it twice.
//!
//! # Reconnection and state
//!
//! After a dropped connection the client reconnects with exponential backoff and jitter
//! ([`DeviceClientBuilder::reconnect_backoff`]), subscribing again if the hub lost the session.
//! Refusals no retry can fix ([`Error::is_fatal`]: bad credentials, unknown device, expired
//! token) stop the client. Watch [`DeviceClient::connection_state`] or read every change from
//! [`DeviceClient::connection_events`].
//!
//! A first connection that fails is not retried: [`DeviceClientBuilder::connect`] returns the
//! error (over HTTPS, credentials are checked by the first request).
//!
//! # One vocabulary with the service client
//!
//! `iothub-service` and this crate are one library: the same option means the same thing under
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
//! | one request, until the hub's answer | `request_timeout(d)` (here: HTTPS requests) | 60 s |
//! | another port | here `port(p)`; the service client's `amqp_port(p)`, `https_port(p)` | the hub's standard ports |
//!
//! Only this client has [`transport`](DeviceClientBuilder::transport),
//! [`completion_mode`](DeviceClientBuilder::completion_mode),
//! [`poll_interval`](DeviceClientBuilder::poll_interval),
//! [`keep_alive`](DeviceClientBuilder::keep_alive) and
//! [`reconnect_backoff`](DeviceClientBuilder::reconnect_backoff). `HostName=host:port` is read
//! the same way by both: the port written there is used by the client's main connection (here
//! the transport's; the service client's AMQP connection) unless a port option overrides it.
//! Both builders are made with `Client::builder(connection_string)?` (or
//! `ClientBuilder::new(..)?`, or `from_parsed(..)` for a parsed string).
//!
//! Both [`Error`] types follow one scheme: variants named after the hub's error codes
//! ([`Error::DeviceNotFound`], [`Error::MessageTooLarge`], [`Error::ArgumentInvalid`],
//! [`Error::DeviceMessageLockLost`], and [`Error::Unauthorized`] / [`Error::Throttled`] for the
//! 401 / 429 families, carrying the exact [`ErrorCode`]), [`Error::Hub`] for any other hub
//! error, the client's own failures named for what happened ([`Error::Connection`],
//! [`Error::Tls`], [`Error::Timeout`], [`Error::Protocol`], [`Error::InvalidConnectionString`],
//! [`Error::InvalidOption`], [`Error::Closed`]), the underlying error kept as `source()` (print
//! the whole chain with [`display_chain`]), and [`Error::code`] and
//! [`Error::is_transient`] on both.
//!
//! # Connecting: eagerly here, lazily in the service client
//!
//! [`DeviceClientBuilder::connect`] and [`DeviceClient::from_connection_string`] return once
//! the hub accepted the connection, so a wrong key or an unknown device fails there. The service
//! client's `build()` connects nothing; each of its connections opens on first use. The
//! difference is deliberate: a device client is one long-lived connection that *is* the device
//! (it receives C2D messages and reports its connection state), while a service client is a set
//! of independent operations over two protocols, most programs using only some of them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod backoff;
mod client;
mod config;
mod error;
mod https;
mod message;
pub mod methods;
mod mqtt;

/// Entry points for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::mqtt::fuzzing::packets as mqtt_packets;
}
mod runtime;
mod state;
mod token;
mod twin;

pub use client::{DeviceClient, Messages};
pub use config::{
    CompletionMode, DEFAULT_KEEP_ALIVE, DEFAULT_POLL_INTERVAL, DangerousDeviceClientBuilder,
    DeviceClientBuilder, Transport,
};
pub use error::Error;
pub use iothub_protocol::client::{
    CA_CERT_ENV, Cause, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RENEWAL_MARGIN, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME, display_chain,
};
pub use iothub_protocol::method::JsonPayload;
pub use message::ReceivedMessage;
pub use methods::{MethodRequest, MethodResponse};
pub use state::{ConnectionEvents, ConnectionState, DisconnectReason};
pub use twin::{DesiredUpdate, DesiredUpdates, TWIN_TIMEOUT};

pub use iothub_protocol::{AckMode, ErrorCode, Message, MessageId, Properties, SystemProperties};
