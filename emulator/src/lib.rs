//! A local Azure IoT Hub emulator: the device registry, per-device cloud-to-device (C2D)
//! queues with locks, TTL and dead-lettering, feedback, and telemetry, served over MQTT 3.1.1,
//! AMQP 1.0 and HTTPS (each also over WebSockets) with TLS and SAS tokens, as the official
//! Azure IoT SDKs expect.
//!
//! Run it as a program (`iothub-emulator`, see the README), or embed it in a Rust test with
//! [`Emulator::builder`]: it starts in-process on ports the OS picks, with a fresh development
//! CA, and stops with [`RunningEmulator::shutdown`]. Point a client (the `iothub-device` and
//! `iothub-service` crates, or an official SDK) at [`RunningEmulator::endpoints`], trust
//! [`RunningEmulator::ca_pem`], and use the connection strings it hands out.
//!
//! # Design overview
//!
//! * **The hub** ([`hub::Hub`]) holds every rule as a deterministic state machine: no sockets,
//!   no tasks, no clock. Each operation takes the time it happens at and reports what the
//!   shell should react to as [`hub::HubEvent`]s; read-only views ([`hub::views`]) serve
//!   inspection.
//! * **The driver** ([`driver::HubHandle`]) is the async shell around it: the clock (real, or
//!   virtual and movable from tests), a task that fires deadlines on time, the wake-ups that
//!   tell connections a message is waiting, and the registry of open device connections.
//! * **The adapters** translate wire traffic into hub operations and hold no rules: [`mqtt`]
//!   (devices), [`amqp`] (services and devices) and [`http`] (registry, device and service REST,
//!   the `/_emulator/` control API, WebSocket upgrades). They do not know each other; what
//!   they all need is the [`context::Context`] (hub, [`auth`], names, shutdown).
//! * **The server** ([`server`]) wires it together from a [`config::Config`]: TLS material
//!   ([`tls`]), listeners, the WebSocket routes, and every task.
//!
//! # Example
//!
//! Start an emulator, create a device, send it a C2D message, read the message back as the
//! device would, and shut down. A test would hand `device_cs` to a device client and
//! [`RunningEmulator::service_connection_string`] to a service client instead of calling the
//! hub directly.
//!
//! ```
//! use iothub_emulator::Emulator;
//! use iothub_protocol::{AckMode, Message};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = Emulator::builder().start().await?;
//! let ports = emulator.endpoints(); // MQTT, AMQP, HTTPS: ports the OS picked
//! assert_ne!(ports.mqtt, 0);
//!
//! // A device, and the connection string a device client would use.
//! let device_cs = emulator.create_device("thermostat")?;
//! assert!(device_cs.starts_with("HostName=localhost;DeviceId=thermostat;"));
//!
//! // What a service sends: a C2D message that asks for full feedback.
//! let mut message = Message::new("set point: 21.5");
//! message.system.message_id = Some("m1".into());
//! message.system.ack = AckMode::Full;
//! message.properties.insert("unit", "celsius");
//! emulator
//!     .hub()
//!     .run(|hub, now| hub.enqueue_c2d("thermostat", message, now))?;
//!
//! // The queue as the control API shows it (`GET /_emulator/devices/thermostat/c2d`).
//! let queued = emulator.hub().read(|hub| hub.c2d_view("thermostat"))?;
//! assert_eq!(queued[0].message.body_text.as_deref(), Some("set point: 21.5"));
//!
//! // What a device does: receive (which locks the message), then complete.
//! let received = emulator
//!     .hub()
//!     .run(|hub, now| hub.receive_c2d("thermostat", now))?
//!     .expect("a message is waiting");
//! assert_eq!(received.body, b"set point: 21.5");
//! assert_eq!(received.properties.get("unit"), Some("celsius"));
//! let lock = received.system.lock_token.as_deref().unwrap_or_default();
//! emulator
//!     .hub()
//!     .run(|hub, now| hub.complete_c2d("thermostat", lock, now))?;
//!
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod amqp;
pub mod auth;
pub mod config;
pub mod context;
pub mod credentials;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod monitor;
pub mod mqtt;
pub mod persist;
pub mod server;
pub mod tls;

pub use server::{Emulator, EmulatorBuilder, RunningEmulator, StartError};
