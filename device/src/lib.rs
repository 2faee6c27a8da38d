//! An Azure IoT Hub device client: telemetry out, cloud-to-device (C2D) messages in, over
//! MQTT, MQTT over WebSockets or HTTPS.
//!
//! The same code works against a real hub and against the local emulator; only the connection
//! string changes, plus trusting the emulator's CA (set `IOTHUB_CA_CERT` to its `ca.pem`, or
//! call [`DeviceClientBuilder::trust_ca_file`]).
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
//! transport, while the user name and the token keep `HostName`. Module identities
//! (`ModuleId`) and X.509 authentication are not supported ([`Error::Unsupported`]).
//!
//! # Trust
//!
//! TLS is rustls with the *ring* provider. The platform's root certificates are trusted (so a
//! real hub works); add a CA with [`DeviceClientBuilder::trust_ca_pem`] or
//! [`DeviceClientBuilder::trust_ca_file`], or through the environment variables
//! `IOTHUB_DEVICE_CA_CERT` and `IOTHUB_CA_CERT` (a path or PEM text; see
//! [`DeviceClientBuilder::trust_ca_from_env`]).
//!
//! # Tokens
//!
//! With a `SharedAccessKey`, the client signs tokens for `{HostName}/devices/{deviceId}` that
//! live one hour ([`DeviceClientBuilder::token_lifetime`]) and replaces each two minutes before
//! it expires ([`DeviceClientBuilder::token_renewal_margin`]); over MQTT that means
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

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod backoff;
mod client;
mod config;
mod error;
mod https;
mod message;
mod mqtt;
mod state;
mod tls;

pub use client::{DeviceClient, Messages};
pub use config::{
    CA_ENV_VARS, CompletionMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE,
    DEFAULT_POLL_INTERVAL, DEFAULT_RENEWAL_MARGIN, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TOKEN_LIFETIME,
    DangerousDeviceClientBuilder, DeviceClientBuilder, Transport,
};
pub use error::Error;
pub use message::ReceivedMessage;
pub use state::{ConnectionEvents, ConnectionState, DisconnectReason};

pub use iothub_protocol::{AckMode, ErrorCode, Message, MessageId, Properties, SystemProperties};
