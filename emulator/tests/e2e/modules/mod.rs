//! Module identities end to end: the registry and module twins over REST, module SAS tokens,
//! and module connections over MQTT and AMQP.

mod mqtt;
mod rest;
