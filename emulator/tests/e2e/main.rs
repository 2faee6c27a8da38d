//! The emulator's end-to-end tests, in one binary so the emulator is linked once: every
//! protocol over real sockets and TLS on ports the OS picks, the binary's command line, and
//! the hub's model test.

mod amqp;
mod cli;
mod connections;
mod events;
mod http;
mod hub_model;
mod methods;
mod modules;
mod mqtt;
mod secrets;
mod support;
mod tls_chain;
mod token_scope;
mod twins;
