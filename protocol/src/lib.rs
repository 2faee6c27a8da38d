//! Wire types shared by the IoT Hub emulator and the Rust device and service clients.
//!
//! Everything here is plain data plus parse/encode pairs, with no I/O: connection strings
//! ([`connection_string`]), shared access signatures ([`sas`]), the message model ([`message`]),
//! MQTT property bags ([`property_bag`]), feedback records ([`feedback`]), the hub's error
//! catalogue ([`error`]), the date formats the hub writes ([`time_format`]), device twins
//! ([`twin`]), twin queries ([`query`]) and bulk registry operations ([`bulk`]).
//!
//! The emulator and the clients use the same code for each of these, so a client and the
//! emulator can never disagree about, say, how a property bag is percent-encoded.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bulk;
pub mod connection_string;
pub mod device_id;
pub mod error;
pub mod feedback;
pub mod message;
pub mod property_bag;
pub mod query;
pub mod registry;
pub mod sas;
pub mod time_format;
pub mod twin;

pub use error::{ErrorCode, HubError};
pub use feedback::{FeedbackBatch, FeedbackRecord, FeedbackStatus};
pub use message::{AckMode, Message, MessageId, Properties, SystemProperties};
