//! MQTT 3.1.1 over TLS: CONNECT and its refusals, C2D and D2C, hostile input.

mod bad_input;
mod c2d;
mod connect;
mod protocol_rules;
