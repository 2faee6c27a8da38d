//! End-to-end tests of the device client against the emulator running in this process, over
//! real TLS with the emulator's generated CA. Every test starts its own emulator on ports the
//! OS picks and shuts it down at the end.

mod common;
mod example;
mod https;
mod methods;
mod modules;
mod mqtt;
mod resilience;
mod twin;
