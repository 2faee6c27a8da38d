//! The one error type of the client.
//!
//! Each variant says what happened and what to do about it. Where the hub has a code for the
//! situation (iothub-protocol.md 6.4), [`Error::code`] returns it, so a program can match on
//! the same [`ErrorCode`] the hub and the other SDKs use.

use std::time::Duration;

use iothub_protocol::ErrorCode;
use iothub_protocol::connection_string::ConnectionStringError;

use crate::config::Transport;

/// Everything that can go wrong in the device client.
///
/// Errors are `Clone`, so the reason a client stopped can be handed to every caller and kept
/// in the [connection state](crate::ConnectionState). No message contains a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string could not be parsed.
    #[error("the device connection string is not valid: {0}")]
    ConnectionString(#[from] ConnectionStringError),

    /// A builder option is out of range or contradicts another.
    #[error("invalid client option: {0}")]
    InvalidOption(String),

    /// The connection string asks for something this client does not do.
    #[error("{what} is not supported by this client")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },

    /// A message cannot be sent as it is (a property the transport cannot carry).
    #[error("the message cannot be sent: {detail}")]
    InvalidMessage {
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// TLS could not be set up: a CA could not be loaded, or the server's certificate was not
    /// trusted.
    #[error("TLS: {detail}")]
    Tls {
        /// What failed, with a hint where there is one.
        detail: String,
    },

    /// The hub refused the device's credentials: MQTT CONNACK 4 (bad user name or password),
    /// 5 (not authorized) or 2 (identifier rejected), or HTTP 401.
    ///
    /// The hub also answers an unknown device id this way, so check both the id and the key.
    #[error(
        "the hub refused the device's credentials ({detail}); check DeviceId and the key or token in the connection string, and that the device exists in this hub"
    )]
    Unauthorized {
        /// What the hub said, or which refusal code it sent.
        detail: String,
        /// The hub's code (`IotHubUnauthorizedAccess` when the transport carries none).
        code: ErrorCode,
    },

    /// The hub does not know this device (HTTP 404 with `DeviceNotFound`).
    #[error(
        "device '{device_id}' is not registered in the hub; create it, or fix DeviceId in the connection string"
    )]
    DeviceNotFound {
        /// The device id that was used.
        device_id: String,
    },

    /// The hub refused the MQTT connection with CONNACK 3 (server unavailable), which is how
    /// it answers a disabled device. The client keeps retrying with backoff after a first
    /// successful connection.
    #[error(
        "the hub refused device '{device_id}' as unavailable (MQTT CONNACK 3): the device is probably disabled; enable it in the registry, or retry later"
    )]
    DeviceDisabled {
        /// The device id that was used.
        device_id: String,
    },

    /// The hub is throttling this device or hub (HTTP 429).
    #[error(
        "the hub is throttling requests ({detail}); send less often, or raise poll_interval for HTTPS"
    )]
    Throttled {
        /// What the hub said.
        detail: String,
        /// The hub's code (one of the `Throttling*` codes, or `GenericTooManyRequests`).
        code: ErrorCode,
    },

    /// A message is larger than the hub accepts.
    #[error(
        "the message is {size} bytes, over the hub's limit of {max} bytes (body plus system property values plus application property names and values); send less per message"
    )]
    MessageTooLarge {
        /// The size that was counted.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// The lock on a received message is gone, so it can no longer be settled: the lock
    /// expired (HTTPS, one minute), the message was settled already, or the MQTT connection it
    /// came on has closed. The hub delivers the message again.
    #[error("the message's lock is gone ({detail}); the hub will deliver the message again")]
    LockLost {
        /// Why.
        detail: String,
    },

    /// The `SharedAccessSignature` given in the connection string has expired. The client
    /// cannot renew a token it did not sign.
    #[error(
        "the SharedAccessSignature in the connection string expired at {expired_at} (unix seconds); give a fresh token, or use a SharedAccessKey connection string so the client signs and renews its own tokens"
    )]
    TokenExpired {
        /// The token's `se`.
        expired_at: u64,
    },

    /// The operation does not exist on this transport (as in the official SDKs: MQTT can only
    /// complete a message).
    #[error(
        "{operation} is not supported over {transport}: MQTT can only complete a message; use Transport::Https to reject or abandon"
    )]
    NotSupported {
        /// The operation that was called.
        operation: &'static str,
        /// The client's transport.
        transport: Transport,
    },

    /// The message was completed automatically when it was taken from the stream, so it
    /// cannot be rejected or abandoned any more.
    #[error(
        "cannot {operation} a message that was completed automatically when it was received; build the client with CompletionMode::Manual to settle messages yourself"
    )]
    AlreadyCompleted {
        /// The operation that was called.
        operation: &'static str,
    },

    /// Any other error answer from the hub.
    #[error("the hub answered HTTP {status}{}: {message}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Hub {
        /// The HTTP status.
        status: u16,
        /// The hub's code, when it sent one.
        code: Option<ErrorCode>,
        /// The hub's text.
        message: String,
    },

    /// The network connection could not be made or broke.
    #[error("connection to the hub failed: {detail}")]
    Connection {
        /// What failed, naming the host and port.
        detail: String,
    },

    /// The operation did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The limit.
        after: Duration,
    },

    /// The client was closed (by [`DeviceClient::close`](crate::DeviceClient::close) or by
    /// dropping every handle).
    #[error("the device client is closed")]
    Closed,
}

impl Error {
    /// The hub's error code for this error, where the hub has one.
    ///
    /// ```
    /// use iothub_device::Error;
    /// use iothub_protocol::ErrorCode;
    ///
    /// let e = Error::DeviceNotFound { device_id: "d1".into() };
    /// assert_eq!(e.code(), Some(ErrorCode::DeviceNotFound));
    /// assert_eq!(Error::Closed.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Unauthorized { code, .. } | Error::Throttled { code, .. } => Some(*code),
            Error::DeviceNotFound { .. } => Some(ErrorCode::DeviceNotFound),
            Error::MessageTooLarge { .. } => Some(ErrorCode::MessageTooLarge),
            Error::LockLost { .. } => Some(ErrorCode::DeviceMessageLockLost),
            Error::Hub { code, .. } => *code,
            _ => None,
        }
    }

    /// True when retrying cannot help until something outside the client changes (the
    /// credentials, the registry or the configuration). The client stops on such an error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::ConnectionString(_)
                | Error::InvalidOption(_)
                | Error::Unsupported { .. }
                | Error::Unauthorized { .. }
                | Error::DeviceNotFound { .. }
                | Error::TokenExpired { .. }
        )
    }
}
