//! The hub's rules as a deterministic, sans-IO state machine.
//!
//! No sockets, no tokio, no clock reads: every operation takes the current time as an argument.

pub mod settings;

pub use settings::{DeliveryCountRule, HubSettings, SettingsError};
