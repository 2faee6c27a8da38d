//! The one error type of the service client.
//!
//! It follows the same scheme as `iothub_device::Error`: variants named after the hub's error
//! codes (a family such as 401 or 429 is one variant carrying the exact [`ErrorCode`]), the
//! client's own failures named for what happened, a message a person can act on, and the
//! underlying error kept as `source()` rather than repeated in the message. Errors are `Clone`
//! and comparable.
//!
//! What the hub said is read into an [`iothub_protocol::client::HubReply`] (the shared
//! reading of HTTP error answers and AMQP error conditions), and `Error::from_reply` is the
//! one place that picks a variant from its error code.

use std::time::Duration;

use iothub_protocol::ErrorCode;
use iothub_protocol::client::{Cause, HubReply, is_server_error};
use iothub_protocol::connection_string::ConnectionStringError;
use iothub_protocol::tls::TlsError;

/// Everything that can go wrong in the service client.
///
/// Each variant named after a hub error carries the hub's own message (never a key or a
/// token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device is not registered (404001; AMQP `amqp:not-found`).
    #[error("device not found: {message}")]
    DeviceNotFound {
        /// The hub's message.
        message: String,
    },
    /// The device exists but has no module with this id (404010).
    #[error("module not found: {message}")]
    ModuleNotFound {
        /// The hub's message.
        message: String,
    },
    /// A direct method found no device connected and listening for methods within the
    /// connect timeout (404103).
    #[error("device not online: {message}")]
    DeviceNotOnline {
        /// The hub's message.
        message: String,
    },
    /// A direct method got no answer from the device within the response timeout (504101).
    #[error("the device did not answer in time: {message}")]
    GatewayTimeout {
        /// The hub's message.
        message: String,
    },
    /// A create named a device that already exists (409001).
    #[error("device already exists: {message}")]
    DeviceAlreadyExists {
        /// The hub's message.
        message: String,
    },
    /// A create named a module that already exists on its device (409301).
    #[error("module already exists: {message}")]
    ModuleAlreadyExistsOnDevice {
        /// The hub's message.
        message: String,
    },
    /// An `If-Match` etag did not match the stored device (412001): read the device again.
    #[error("precondition failed (etag mismatch): {message}")]
    PreconditionFailed {
        /// The hub's message.
        message: String,
    },
    /// The device's C2D queue is full (403004; AMQP `amqp:resource-limit-exceeded`): the
    /// device must complete, reject or abandon messages first, or the queue can be purged.
    #[error("the device's C2D queue is full: {message}")]
    DeviceMaximumQueueDepthExceeded {
        /// The hub's message.
        message: String,
    },
    /// The message is larger than the hub allows (413001; AMQP
    /// `amqp:link:message-size-exceeded`).
    #[error("message too large: {message}")]
    MessageTooLarge {
        /// The hub's message.
        message: String,
    },
    /// An argument broke one of the hub's rules (400004 `ArgumentInvalid`, 400005
    /// `ArgumentNull`; AMQP `com.microsoft:argument-error` or `argument-out-of-range`), e.g. a
    /// bad message id or property name.
    #[error("invalid argument: {message}")]
    ArgumentInvalid {
        /// The hub's message.
        message: String,
    },
    /// The credentials were refused (the 401 family; AMQP `amqp:unauthorized-access`): wrong
    /// key, expired token, or a policy without the needed permission.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The hub's message.
        message: String,
        /// The exact code (`IotHubUnauthorizedAccess` when the hub gave none).
        code: ErrorCode,
    },
    /// The hub is throttling this client (the 429 family; AMQP
    /// `com.microsoft:device-container-throttled`).
    #[error("throttled: {message}")]
    Throttled {
        /// The hub's message.
        message: String,
        /// The exact code (`ThrottlingException` when the hub gave none).
        code: ErrorCode,
    },
    /// Any other error the hub reported.
    #[error("the hub reported an error{}: {message}", describe(*.status, *.code, .condition.as_deref()))]
    Hub {
        /// HTTP status, for HTTPS calls.
        status: Option<u16>,
        /// The hub's error code, when it gave one.
        code: Option<ErrorCode>,
        /// The AMQP error condition or outcome, for AMQP operations.
        condition: Option<String>,
        /// The hub's message.
        message: String,
    },
    /// The hub answered with something this client cannot read (bad JSON, an unexpected
    /// AMQP body or status).
    #[error("unexpected response from the hub: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The connection could not be opened or broke (DNS, TCP, AMQP). The operation may or may
    /// not have reached the hub; retrying a send can deliver the message twice.
    #[error("connection to the hub failed: {message}")]
    Connection {
        /// What failed, and where.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// TLS could not be set up (a CA that cannot be read, no trusted roots) or the handshake
    /// failed (for example the server's certificate is not trusted).
    #[error("TLS: {message}")]
    Tls {
        /// What failed, with a hint where there is one.
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
        /// The limit that applied.
        after: Duration,
    },
    /// The connection string could not be parsed.
    #[error(transparent)]
    InvalidConnectionString(#[from] ConnectionStringError),
    /// A builder option is out of range (a token lifetime too short, a zero timeout, ...).
    #[error("invalid client option: {message}")]
    InvalidOption {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The client was closed with [`ServiceClient::close`](crate::ServiceClient::close).
    #[error("the service client is closed")]
    Closed,
}

fn describe(status: Option<u16>, code: Option<ErrorCode>, condition: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = status {
        parts.push(format!("HTTP {s}"));
    }
    if let Some(c) = code {
        parts.push(c.to_string());
    }
    if let Some(c) = condition {
        parts.push(c.to_owned());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        let (message, source) = e.into_parts();
        Error::Tls { message, source }
    }
}

impl Error {
    /// The hub error code this error stands for, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::DeviceNotFound { .. } => Some(ErrorCode::DeviceNotFound),
            Error::DeviceAlreadyExists { .. } => Some(ErrorCode::DeviceAlreadyExists),
            Error::ModuleNotFound { .. } => Some(ErrorCode::ModuleNotFound),
            Error::ModuleAlreadyExistsOnDevice { .. } => {
                Some(ErrorCode::ModuleAlreadyExistsOnDevice)
            }
            Error::DeviceNotOnline { .. } => Some(ErrorCode::DeviceNotOnline),
            Error::GatewayTimeout { .. } => Some(ErrorCode::GatewayTimeout),
            Error::PreconditionFailed { .. } => Some(ErrorCode::PreconditionFailed),
            Error::DeviceMaximumQueueDepthExceeded { .. } => {
                Some(ErrorCode::DeviceMaximumQueueDepthExceeded)
            }
            Error::MessageTooLarge { .. } => Some(ErrorCode::MessageTooLarge),
            Error::ArgumentInvalid { .. } => Some(ErrorCode::ArgumentInvalid),
            Error::Unauthorized { code, .. } | Error::Throttled { code, .. } => Some(*code),
            Error::Hub { code, .. } => *code,
            _ => None,
        }
    }

    /// True for errors where trying again later may succeed: connection failures, timeouts,
    /// throttling, a full queue and the hub's 5xx errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection { .. }
            | Error::Timeout { .. }
            | Error::Throttled { .. }
            | Error::DeviceMaximumQueueDepthExceeded { .. } => true,
            Error::Hub { status, code, .. } => is_server_error(*status, *code),
            _ => false,
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

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_option(message: impl Into<String>) -> Self {
        Error::InvalidOption {
            message: message.into(),
        }
    }

    /// The variant for what the hub said (the one mapping from error codes to variants).
    pub(crate) fn from_reply(reply: HubReply) -> Self {
        let HubReply {
            status,
            code,
            condition,
            message,
        } = reply;
        match code {
            Some(ErrorCode::DeviceNotFound) => Error::DeviceNotFound { message },
            Some(ErrorCode::DeviceAlreadyExists) => Error::DeviceAlreadyExists { message },
            Some(ErrorCode::ModuleNotFound) => Error::ModuleNotFound { message },
            Some(ErrorCode::ModuleAlreadyExistsOnDevice) => {
                Error::ModuleAlreadyExistsOnDevice { message }
            }
            Some(ErrorCode::DeviceNotOnline) => Error::DeviceNotOnline { message },
            Some(ErrorCode::GatewayTimeout) => Error::GatewayTimeout { message },
            Some(ErrorCode::PreconditionFailed) => Error::PreconditionFailed { message },
            Some(ErrorCode::DeviceMaximumQueueDepthExceeded) => {
                Error::DeviceMaximumQueueDepthExceeded { message }
            }
            Some(ErrorCode::MessageTooLarge) => Error::MessageTooLarge { message },
            Some(ErrorCode::ArgumentInvalid | ErrorCode::ArgumentNull) => {
                Error::ArgumentInvalid { message }
            }
            Some(c) if c.http_status() == 401 => Error::Unauthorized { message, code: c },
            Some(c) if c.http_status() == 429 => Error::Throttled { message, code: c },
            code => Error::Hub {
                status,
                code,
                condition,
                message,
            },
        }
    }

    /// The error for an AMQP error `condition` (a symbol such as `amqp:not-found`) with the
    /// hub's `description`.
    #[cfg(test)]
    fn from_amqp(condition: &str, description: Option<&str>) -> Self {
        Error::from_reply(HubReply::from_amqp(condition, description))
    }

    /// The error for a failed HTTPS response: the code comes from the `iothub-errorcode`
    /// header, else from the body's `ErrorCode:<Name>;...`; without a code the status decides
    /// (except 404, which can also mean a wrong path and stays [`Error::Hub`]).
    pub(crate) fn from_http(status: u16, error_code_header: Option<&str>, body: &[u8]) -> Self {
        let reply = HubReply::from_http(status, error_code_header, body);
        let code = reply.code_or(code_for_status);
        Error::from_reply(HubReply { code, ..reply })
    }
}

/// The code an HTTPS status stands for on the service routes when the hub names none.
fn code_for_status(status: u16) -> Option<ErrorCode> {
    Some(match status {
        400 => ErrorCode::ArgumentInvalid,
        401 => ErrorCode::IotHubUnauthorizedAccess,
        409 => ErrorCode::DeviceAlreadyExists,
        412 => ErrorCode::PreconditionFailed,
        413 => ErrorCode::MessageTooLarge,
        429 => ErrorCode::ThrottlingException,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_conditions_map_to_typed_errors() {
        type Check = fn(&Error) -> bool;
        let cases: [(&str, Check); 7] = [
            ("amqp:not-found", |e| {
                matches!(e, Error::DeviceNotFound { .. })
            }),
            ("amqp:resource-limit-exceeded", |e| {
                matches!(e, Error::DeviceMaximumQueueDepthExceeded { .. })
            }),
            ("amqp:link:message-size-exceeded", |e| {
                matches!(e, Error::MessageTooLarge { .. })
            }),
            ("amqp:unauthorized-access", |e| {
                matches!(e, Error::Unauthorized { .. })
            }),
            ("com.microsoft:device-container-throttled", |e| {
                matches!(e, Error::Throttled { .. })
            }),
            ("com.microsoft:argument-error", |e| {
                matches!(e, Error::ArgumentInvalid { .. })
            }),
            ("com.microsoft:argument-out-of-range", |e| {
                matches!(e, Error::ArgumentInvalid { .. })
            }),
        ];
        for (cond, check) in cases {
            let e = Error::from_amqp(cond, Some("why"));
            assert!(check(&e), "{cond} -> {e:?}");
            assert!(e.to_string().contains("why"), "{e}");
        }
        let e = Error::from_amqp("amqp:internal-error", None);
        match &e {
            Error::Hub {
                condition, message, ..
            } => {
                assert_eq!(condition.as_deref(), Some("amqp:internal-error"));
                assert_eq!(message, "amqp:internal-error");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("amqp:internal-error"));
        assert!(e.is_transient(), "an internal error is the hub's 5xx");
    }

    #[test]
    fn queue_full_is_403004() {
        let e = Error::from_amqp("amqp:resource-limit-exceeded", None);
        assert_eq!(e.code().map(|c| c.code()), Some(403004));
        assert!(e.is_transient());
    }

    #[test]
    fn http_errors_use_header_then_body_then_status() {
        let body =
            br#"{"Message":"ErrorCode:DeviceNotFound;dev1","ExceptionMessage":"Tracking ID:x"}"#;
        let e = Error::from_http(404, Some("DeviceNotFound"), body);
        assert!(matches!(&e, Error::DeviceNotFound { message } if message == "dev1"));

        // Body only.
        let e = Error::from_http(404, None, body);
        assert!(matches!(e, Error::DeviceNotFound { .. }));

        // Header only, body not JSON.
        let e = Error::from_http(409, Some("DeviceAlreadyExists"), b"oops");
        assert!(matches!(&e, Error::DeviceAlreadyExists { message } if message == "oops"));

        // Status only.
        assert!(matches!(
            Error::from_http(412, None, b""),
            Error::PreconditionFailed { .. }
        ));
        assert!(matches!(
            Error::from_http(401, None, b""),
            Error::Unauthorized {
                code: ErrorCode::IotHubUnauthorizedAccess,
                ..
            }
        ));
        assert!(matches!(
            Error::from_http(429, None, b""),
            Error::Throttled { .. }
        ));
        // A bare 404 may be a wrong path: not claimed to be a missing device.
        assert!(matches!(
            Error::from_http(404, None, b""),
            Error::Hub {
                status: Some(404),
                ..
            }
        ));
        // Codes in the 401 and 429 families keep the exact code.
        assert!(matches!(
            Error::from_http(401, Some("IotHubUnauthorizedAccess"), b""),
            Error::Unauthorized { .. }
        ));
        let e = Error::from_http(429, Some("DeviceThrottlingLimitExceeded"), b"");
        assert_eq!(e.code(), Some(ErrorCode::DeviceThrottlingLimitExceeded));
        let e = Error::from_http(500, Some("ServerError"), b"");
        assert_eq!(e.code(), Some(ErrorCode::ServerError));
        assert!(e.is_transient());
        assert!(e.to_string().contains("HTTP 500"), "{e}");
    }

    #[test]
    fn causes_are_kept_as_source_not_repeated() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::connection("cannot connect to h:5671", io);
        assert_eq!(
            e.to_string(),
            "connection to the hub failed: cannot connect to h:5671"
        );
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        assert_eq!(e.clone(), e);
    }
}
