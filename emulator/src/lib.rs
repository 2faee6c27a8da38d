//! The IoT Hub emulator: the hub's rules as a sans-IO state machine ([`hub`]) and, around it,
//! the process that serves them over MQTT, AMQP and HTTPS.

#![forbid(unsafe_code)]

pub mod auth;
pub mod credentials;
pub mod driver;
pub mod hub;
pub mod tls;
