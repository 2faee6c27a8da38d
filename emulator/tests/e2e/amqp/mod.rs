//! AMQP 1.0 over TLS and WebSockets: CBS, the service links, device links, hostile input.

mod bad_input;
mod device;
mod eventhubs;
mod limits;
mod link_cycles;
mod service;
mod websocket;
