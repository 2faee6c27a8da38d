//! Wire types shared by the IoT Hub emulator and the Rust device and service clients.
//!
//! Everything here is plain data plus parse/encode pairs, with no I/O: connection strings
//! ([`connection_string`]), shared access signatures ([`sas`]), the message model ([`message`]),
//! MQTT property bags ([`property_bag`]), feedback records ([`feedback`]), Event Hubs start
//! positions and their selector filters ([`event_position`]), the hub's error catalogue
//! ([`error`]) and the date formats the hub writes ([`time_format`]).
//!
//! The emulator and the clients use the same code for each of these, so a client and the
//! emulator can never disagree about, say, how a property bag is percent-encoded.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection_string;
pub mod device_id;
pub mod error;
pub mod event_position;
pub mod feedback;
pub mod message;
pub mod property_bag;
pub mod registry;
pub mod sas;
pub mod time_format;

pub use error::{ErrorCode, HubError};
pub use event_position::EventPosition;
pub use feedback::{FeedbackBatch, FeedbackRecord, FeedbackStatus};
pub use message::{AckMode, Message, MessageId, Properties, SystemProperties};
