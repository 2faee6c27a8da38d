//! The one error type of the service client, and the two places that pick a variant from
//! what the hub said: `Error::from_amqp` (an AMQP error condition on a rejected send, a
//! detach or a CBS reply) and `Error::from_http` (a registry response's status,
//! `iothub-errorcode` header and JSON body).
//!
//! The typed variants are the ones a caller can act on (create the device, drain the queue,
//! re-read the etag, slow down, fix the key); everything else the hub reports lands in
//! [`Error::Hub`] with whatever code and status it gave.

use std::time::Duration;

use iothub_protocol::ErrorCode;
use iothub_protocol::connection_string::ConnectionStringError;
use iothub_protocol::error::ErrorBody;

/// A boxed error kept as the cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the service client.
///
/// Each typed variant carries the hub's own message (never a key or a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device is not registered (404001; AMQP `amqp:not-found`).
    #[error("device not found: {message}")]
    DeviceNotFound {
        /// The hub's message.
        message: String,
    },
    /// A create named a device that already exists (409001).
    #[error("device already exists: {message}")]
    DeviceAlreadyExists {
        /// The hub's message.
        message: String,
    },
    /// An `If-Match` etag did not match the stored device (412001): read the device again.
    #[error("precondition failed (etag mismatch): {message}")]
    PreconditionFailed {
        /// The hub's message.
        message: String,
    },
    /// The device's C2D queue is full (403004 DeviceMaximumQueueDepthExceeded; AMQP
    /// `amqp:resource-limit-exceeded`): the device must complete, reject or abandon messages
    /// first, or the queue can be purged.
    #[error("the device's C2D queue is full: {message}")]
    QueueFull {
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
    /// The credentials were refused (401; AMQP `amqp:unauthorized-access`): wrong key, expired
    /// token, or a policy without the needed permission.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The hub's message.
        message: String,
    },
    /// The hub is throttling this client (429; AMQP `com.microsoft:device-container-throttled`).
    #[error("throttled: {message}")]
    Throttled {
        /// The hub's message.
        message: String,
    },
    /// An argument broke one of the hub's rules (400; AMQP `com.microsoft:argument-error` or
    /// `com.microsoft:argument-out-of-range`), e.g. a bad message id or property name.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The hub's message.
        message: String,
    },
    /// Any other error the hub reported.
    #[error("the hub reported an error{}: {message}", describe(*.status, *.code, .condition.as_deref()))]
    Hub {
        /// HTTP status, for registry calls.
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
    /// The connection could not be opened or broke (DNS, TCP, TLS, AMQP). The operation may or
    /// may not have reached the hub; retrying a send can deliver the message twice.
    #[error("connection error: {message}")]
    Connection {
        /// What failed, and where.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit that applied.
        after: Duration,
    },
    /// The connection string could not be parsed.
    #[error("invalid connection string: {0}")]
    InvalidConnectionString(#[from] ConnectionStringError),
    /// The client configuration is unusable (a CA file that cannot be read, no trust roots,
    /// a token lifetime too short, ...).
    #[error("invalid configuration: {message}")]
    Config {
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

/// AMQP error conditions the hub uses, as symbols (iothub-protocol.md 5.4).
pub(crate) mod condition {
    pub const NOT_FOUND: &str = "amqp:not-found";
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    pub const THROTTLED: &str = "com.microsoft:device-container-throttled";
    pub const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
    pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
}

impl Error {
    /// The hub error code this error stands for, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::DeviceNotFound { .. } => Some(ErrorCode::DeviceNotFound),
            Error::DeviceAlreadyExists { .. } => Some(ErrorCode::DeviceAlreadyExists),
            Error::PreconditionFailed { .. } => Some(ErrorCode::PreconditionFailed),
            Error::QueueFull { .. } => Some(ErrorCode::DeviceMaximumQueueDepthExceeded),
            Error::MessageTooLarge { .. } => Some(ErrorCode::MessageTooLarge),
            Error::Unauthorized { .. } => Some(ErrorCode::IotHubUnauthorizedAccess),
            Error::Throttled { .. } => Some(ErrorCode::ThrottlingException),
            Error::InvalidArgument { .. } => Some(ErrorCode::ArgumentInvalid),
            Error::Hub { code, .. } => *code,
            _ => None,
        }
    }

    /// True for errors where trying again later may succeed: connection failures,
    /// timeouts, throttling, a full queue and the hub's 5xx errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection { .. }
            | Error::Timeout { .. }
            | Error::Throttled { .. }
            | Error::QueueFull { .. } => true,
            Error::Hub { status, code, .. } => {
                status.is_some_and(|s| s >= 500) || code.is_some_and(|c| c.http_status() >= 500)
            }
            _ => false,
        }
    }

    pub(crate) fn connection(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Connection {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// The error for an AMQP error `condition` (a symbol such as `amqp:not-found`) with the
    /// hub's `description` (the one mapping from AMQP conditions to variants).
    pub(crate) fn from_amqp(condition: &str, description: Option<&str>) -> Self {
        let message = description
            .filter(|d| !d.is_empty())
            .unwrap_or(condition)
            .to_owned();
        match condition {
            condition::NOT_FOUND => Error::DeviceNotFound { message },
            condition::RESOURCE_LIMIT_EXCEEDED => Error::QueueFull { message },
            condition::MESSAGE_SIZE_EXCEEDED => Error::MessageTooLarge { message },
            condition::UNAUTHORIZED_ACCESS => Error::Unauthorized { message },
            condition::THROTTLED => Error::Throttled { message },
            condition::ARGUMENT_ERROR | condition::ARGUMENT_OUT_OF_RANGE => {
                Error::InvalidArgument { message }
            }
            other => Error::Hub {
                status: None,
                code: None,
                condition: Some(other.to_owned()),
                message,
            },
        }
    }

    /// The error for a failed registry response: the code comes from the `iothub-errorcode`
    /// header, else from the body's `ErrorCode:<Name>;...`; without a code the status decides
    /// (except 404, which can also mean a wrong path and stays [`Error::Hub`]).
    pub(crate) fn from_http(status: u16, error_code_header: Option<&str>, body: &[u8]) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (body_code, text) = match &parsed {
            Some(b) => {
                let (code, text) = b.parse_message();
                let text = if text.is_empty() {
                    b.message.clone()
                } else {
                    text.to_owned()
                };
                (code, text)
            }
            None => (None, String::from_utf8_lossy(body).trim().to_owned()),
        };
        let code = error_code_header
            .and_then(ErrorCode::from_name)
            .or(body_code);
        let message = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            text
        };
        if let Some(code) = code {
            return match code {
                ErrorCode::DeviceNotFound => Error::DeviceNotFound { message },
                ErrorCode::DeviceAlreadyExists => Error::DeviceAlreadyExists { message },
                ErrorCode::PreconditionFailed => Error::PreconditionFailed { message },
                ErrorCode::DeviceMaximumQueueDepthExceeded => Error::QueueFull { message },
                ErrorCode::MessageTooLarge => Error::MessageTooLarge { message },
                ErrorCode::ArgumentInvalid | ErrorCode::ArgumentNull => {
                    Error::InvalidArgument { message }
                }
                c if c.http_status() == 401 => Error::Unauthorized { message },
                c if c.http_status() == 429 => Error::Throttled { message },
                c => Error::Hub {
                    status: Some(status),
                    code: Some(c),
                    condition: None,
                    message,
                },
            };
        }
        match status {
            400 => Error::InvalidArgument { message },
            401 => Error::Unauthorized { message },
            409 => Error::DeviceAlreadyExists { message },
            412 => Error::PreconditionFailed { message },
            413 => Error::MessageTooLarge { message },
            429 => Error::Throttled { message },
            _ => Error::Hub {
                status: Some(status),
                code: None,
                condition: None,
                message,
            },
        }
    }
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
                matches!(e, Error::QueueFull { .. })
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
                matches!(e, Error::InvalidArgument { .. })
            }),
            ("com.microsoft:argument-out-of-range", |e| {
                matches!(e, Error::InvalidArgument { .. })
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
            Error::Unauthorized { .. }
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
        // Codes in the 401 and 429 families.
        assert!(matches!(
            Error::from_http(401, Some("IotHubUnauthorizedAccess"), b""),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            Error::from_http(429, Some("DeviceThrottlingLimitExceeded"), b""),
            Error::Throttled { .. }
        ));
        let e = Error::from_http(500, Some("ServerError"), b"");
        assert_eq!(e.code(), Some(ErrorCode::ServerError));
        assert!(e.is_transient());
        assert!(e.to_string().contains("HTTP 500"), "{e}");
    }
}
