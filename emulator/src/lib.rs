//! The IoT Hub emulator: the hub's rules as a sans-IO state machine ([`hub`]) and, around it,
//! the process that serves them over MQTT, AMQP and HTTPS.

#![forbid(unsafe_code)]

pub mod amqp;
pub mod auth;
pub mod config;
pub mod context;
pub mod credentials;
pub mod driver;
pub mod http;
pub mod hub;
pub mod mqtt;
pub mod server;
pub mod tls;

pub use server::{Emulator, EmulatorBuilder, RunningEmulator, StartError};
