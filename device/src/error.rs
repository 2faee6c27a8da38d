//! The one error type of the client.
//!
//! It follows the same scheme as `iothub_service::Error`: variants named after the hub's error
//! codes (a family such as 401 or 429 is one variant carrying the exact [`ErrorCode`]), the
//! client's own failures named for what happened, a message a person can act on, and the
//! underlying error kept as `source()` rather than repeated in the message. [`Error::code`]
//! returns the hub's code (iothub-protocol.md 6.4), so a program can match on the same
//! [`ErrorCode`] the hub and the other SDKs use.

use std::time::Duration;

use iothub_protocol::ErrorCode;
use iothub_protocol::client::{Cause, HubReply, is_server_error};
use iothub_protocol::connection_string::ConnectionStringError;
use iothub_protocol::tls::TlsError;

use crate::config::Transport;

/// Everything that can go wrong in the device client.
///
/// Errors are `Clone`, so the reason a client stopped can be handed to every caller and kept
/// in the [connection state](crate::ConnectionState). No message contains a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string could not be parsed.
    #[error(transparent)]
    InvalidConnectionString(#[from] ConnectionStringError),

    /// A builder option is out of range or contradicts another.
    #[error("invalid client option: {message}")]
    InvalidOption {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The connection string asks for something this client does not do.
    #[error("{what} is not supported by this client")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },

    /// A message cannot be sent as it is: a property the transport cannot carry (the hub's
    /// 400004 `ArgumentInvalid`, found before sending).
    #[error("invalid argument: {message}")]
    ArgumentInvalid {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// TLS could not be set up (a CA could not be loaded) or the handshake failed (for
    /// example the server's certificate was not trusted).
    #[error("TLS: {message}")]
    Tls {
        /// What failed, with a hint where there is one.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Cause>,
    },

    /// The hub refused the device's credentials (the 401 family): MQTT CONNACK 4 (bad user
    /// name or password), 5 (not authorized) or 2 (identifier rejected), or HTTP 401.
    ///
    /// The hub also answers an unknown device id this way, so check both the id and the key.
    #[error(
        "the hub refused the device's credentials ({message}); check DeviceId and the key or token in the connection string, and that the device exists in this hub"
    )]
    Unauthorized {
        /// What the hub said, or which refusal code it sent.
        message: String,
        /// The hub's code (`IotHubUnauthorizedAccess` when the transport carries none).
        code: ErrorCode,
    },

    /// The hub does not know this device (404001).
    #[error("device not found: {message}")]
    DeviceNotFound {
        /// Which device, and what to do.
        message: String,
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

    /// The hub is throttling this device or hub (the 429 family).
    #[error(
        "the hub is throttling requests ({message}); send less often, or raise poll_interval for HTTPS"
    )]
    Throttled {
        /// What the hub said.
        message: String,
        /// The exact code (one of the `Throttling*` codes, or `GenericTooManyRequests`).
        code: ErrorCode,
    },

    /// A message is larger than the hub accepts (413001): checked by the client before
    /// sending, or answered by the hub.
    #[error(
        "the message is {size} bytes, over the hub's limit of {max} bytes (body plus system property values plus application property names and values); send less per message"
    )]
    MessageTooLarge {
        /// The size that was counted.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// The lock on a received message is gone, so it can no longer be settled (412002): the
    /// lock expired (HTTPS, one minute), the message was settled already, or the MQTT
    /// connection it came on has closed. The hub delivers the message again.
    #[error("the message's lock is gone ({message}); the hub will deliver the message again")]
    DeviceMessageLockLost {
        /// Why.
        message: String,
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

    /// The client is a module identity (`ModuleId` in the connection string) and the operation
    /// exists only for devices: IoT Hub has no cloud-to-device messages for modules.
    #[error(
        "{operation} is not available to module '{module}': IoT Hub sends cloud-to-device messages only to devices; connect as the device to receive them, or have the service invoke a module method"
    )]
    NotSupportedForModule {
        /// The operation that was called.
        operation: &'static str,
        /// The module, as `{deviceId}/{moduleId}`.
        module: String,
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

    /// Any other error the hub reported.
    #[error("the hub reported an error{}: {message}", describe(*.status, *.code))]
    Hub {
        /// The HTTP status, for HTTPS.
        status: Option<u16>,
        /// The hub's code, when it sent one.
        code: Option<ErrorCode>,
        /// The hub's text.
        message: String,
    },

    /// The hub answered with something this client cannot read.
    #[error("unexpected response from the hub: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },

    /// The network connection could not be made or broke.
    #[error("connection to the hub failed: {message}")]
    Connection {
        /// What failed, naming the host and port.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Cause>,
    },

    /// The operation did not finish in time.
    #[error("{operation} did not finish within {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },

    /// The client was closed (by [`DeviceClient::close`](crate::DeviceClient::close) or by
    /// dropping every handle).
    #[error("the device client is closed")]
    Closed,
}

fn describe(status: Option<u16>, code: Option<ErrorCode>) -> String {
    match (status, code) {
        (Some(s), Some(c)) => format!(" (HTTP {s}, {c})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        let (message, source) = e.into_parts();
        Error::Tls { message, source }
    }
}

impl Error {
    /// The hub's error code for this error, where the hub has one.
    ///
    /// ```
    /// use iothub_device::{Error, ErrorCode};
    ///
    /// let e = Error::DeviceMessageLockLost { message: "expired".into() };
    /// assert_eq!(e.code(), Some(ErrorCode::DeviceMessageLockLost));
    /// assert_eq!(Error::Closed.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Unauthorized { code, .. } | Error::Throttled { code, .. } => Some(*code),
            Error::DeviceNotFound { .. } => Some(ErrorCode::DeviceNotFound),
            Error::MessageTooLarge { .. } => Some(ErrorCode::MessageTooLarge),
            Error::DeviceMessageLockLost { .. } => Some(ErrorCode::DeviceMessageLockLost),
            Error::ArgumentInvalid { .. } => Some(ErrorCode::ArgumentInvalid),
            Error::Hub { code, .. } => *code,
            _ => None,
        }
    }

    /// True for errors where trying again later may succeed: connection failures, timeouts,
    /// throttling and the hub's 5xx errors (the same rule as the service client's).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::Timeout { .. } | Error::Throttled { .. } => true,
            Error::Hub { status, code, .. } => is_server_error(*status, *code),
            _ => false,
        }
    }

    /// True when retrying cannot help until something outside the client changes (the
    /// credentials, the registry or the configuration). The client stops on such an error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::InvalidConnectionString(_)
                | Error::InvalidOption { .. }
                | Error::Unsupported { .. }
                | Error::Unauthorized { .. }
                | Error::DeviceNotFound { .. }
                | Error::TokenExpired { .. }
        )
    }

    pub(crate) fn invalid_option(message: impl Into<String>) -> Self {
        Error::InvalidOption {
            message: message.into(),
        }
    }

    pub(crate) fn connection(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Connection {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

    pub(crate) fn lock_lost(message: impl Into<String>) -> Self {
        Error::DeviceMessageLockLost {
            message: message.into(),
        }
    }

    /// The variant for what the hub said (the one mapping from error codes to variants).
    /// `device_id` names the device in [`Error::DeviceNotFound`]; `sent` is the size of the
    /// message that was sent, if any.
    pub(crate) fn from_reply(reply: HubReply, device_id: &str, sent: Option<usize>) -> Self {
        let HubReply {
            status,
            code,
            message,
            ..
        } = reply;
        let detail = match status {
            Some(s) if !message.starts_with("HTTP ") => format!("HTTP {s}: {message}"),
            _ => message.clone(),
        };
        match code {
            Some(ErrorCode::DeviceNotFound) => Error::DeviceNotFound {
                message: format!(
                    "device '{device_id}' is not registered in the hub; create it, or fix DeviceId in the connection string"
                ),
            },
            // The device's only conditional requests are settlements: a failed precondition
            // means the lock is gone.
            Some(ErrorCode::DeviceMessageLockLost | ErrorCode::PreconditionFailed) => {
                Error::DeviceMessageLockLost { message: detail }
            }
            Some(ErrorCode::MessageTooLarge) => Error::MessageTooLarge {
                size: sent.unwrap_or(0),
                max: iothub_protocol::message::MAX_D2C_SIZE,
            },
            Some(ErrorCode::ArgumentInvalid | ErrorCode::ArgumentNull) => {
                Error::ArgumentInvalid { message: detail }
            }
            Some(c) if c.http_status() == 401 => Error::Unauthorized {
                message: detail,
                code: c,
            },
            Some(c) if c.http_status() == 429 => Error::Throttled {
                message: detail,
                code: c,
            },
            code => Error::Hub {
                status,
                code,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn hub_codes_pick_the_variant_and_keep_the_exact_code() {
        let reply = |code, message: &str| HubReply {
            status: Some(429),
            code: Some(code),
            condition: None,
            message: message.into(),
        };
        let e = Error::from_reply(
            reply(ErrorCode::DeviceThrottlingLimitExceeded, "slow"),
            "d",
            None,
        );
        assert_eq!(e.code(), Some(ErrorCode::DeviceThrottlingLimitExceeded));
        assert!(e.is_transient() && !e.is_fatal());
        let e = Error::from_reply(reply(ErrorCode::DeviceNotFound, "x"), "d1", None);
        assert!(e.to_string().contains("'d1'"), "{e}");
        assert!(e.is_fatal());
    }

    #[test]
    fn causes_are_kept_as_source_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::connection("cannot connect to h:8883", io);
        assert_eq!(
            e.to_string(),
            "connection to the hub failed: cannot connect to h:8883"
        );
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        assert_eq!(e.clone(), e);
        assert!(e.is_transient());
    }
}
