//! Wire types shared by the IoT Hub emulator and the Rust device and service clients.
//!
//! Everything here is plain data plus parse/encode pairs, with no I/O: connection strings
//! ([`connection_string`]), shared access signatures ([`sas`]), the message model ([`message`]),
//! MQTT property bags ([`property_bag`]), feedback records ([`feedback`]), direct methods
//! ([`method`]), Event Hubs start positions and their selector filters ([`event_position`]),
//! device twins ([`twin`]), twin queries ([`query`]), bulk registry operations ([`bulk`]), the
//! hub's error catalogue ([`error`]) and the date formats the hub writes ([`time_format`]).
//!
//! The emulator and the clients use the same code for each of these, so a client and the
//! emulator can never disagree about, say, how a property bag is percent-encoded.
//!
//! [`client`] holds what the two Rust clients share beyond the wire: the defaults and meaning
//! of their common options, the SAS token schedule, reading `HostName=host:port`, and turning
//! an error answer into an [`ErrorCode`]. Two features add shared code on heavier crates, so
//! the crate stays dependency-light by default:
//!
//! * `tls`: [`tls`], the trusted roots (platform store, `IOTHUB_CA_CERT`, CAs given in code)
//!   as a rustls client configuration on *ring*;
//! * `amqp`: [`amqp`], the message model as fe2o3 AMQP 1.0 messages and the hub's AMQP error
//!   conditions.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod bulk;
pub mod client;
pub mod connection_string;
pub mod device_id;
pub mod error;
pub mod event_position;
pub mod feedback;
pub mod message;
pub mod method;
pub mod module;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod property_bag;
pub mod query;
pub mod registry;
pub mod sas;
pub mod time_format;
#[cfg(feature = "tls")]
pub mod tls;
pub mod twin;
#[cfg(feature = "websocket")]
pub mod websocket;

pub use error::{ErrorCode, HubError};
pub use event_position::EventPosition;
pub use feedback::{FeedbackBatch, FeedbackRecord, FeedbackStatus};
pub use message::{AckMode, Message, MessageId, Properties, SystemProperties};
