//! Module identities end to end: the registry and module twins over REST, module SAS tokens,
//! and module connections over MQTT, AMQP and HTTPS.

mod amqp;
mod http;
mod mqtt;
mod rest;
