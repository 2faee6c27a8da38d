//! The hub's error catalogue and the errors the hub's rules produce.
//!
//! Reference: iothub-protocol.md 6.4. [`ErrorCode`] is the numeric catalogue (the C# SDK's
//! `ErrorCode.cs`): a name, a six-digit code and the HTTP status that is its first three digits.
//! [`HubError`] is what an operation on the hub returns; every adapter turns it into its own wire
//! form through [`HubError::code`] (HTTP status and body, AMQP condition, CONNACK code), so no
//! adapter picks a status on its own.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal ),* $(,)?) => {
        /// An IoT Hub error code: name and number as the hub and the SDKs spell them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* #[allow(missing_docs)] $name, )*
        }

        impl ErrorCode {
            /// Every code in the catalogue.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The name the hub writes in `iothub-errorcode` and in `ErrorCode:<Name>`.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name),)* }
            }

            /// The six-digit numeric code, e.g. 404001.
            pub fn code(self) -> u32 {
                match self { $(ErrorCode::$name => $code,)* }
            }
        }
    };
}

error_codes! {
    InvalidProtocolVersion = 400001,
    DeviceInvalidResultCount = 400002,
    InvalidOperation = 400003,
    ArgumentInvalid = 400004,
    ArgumentNull = 400005,
    IotHubFormatError = 400006,
    DeviceStorageEntitySerializationError = 400007,
    BlobContainerValidationError = 400008,
    ImportWarningExistsError = 400009,
    InvalidSchemaVersion = 400010,
    DeviceDefinedMultipleTimes = 400011,
    DeserializationError = 400012,
    BulkRegistryOperationFailure = 400013,
    ConnectionForcefullyClosedOnNewConnection = 400027,
    CannotRegisterModuleToModule = 400301,
    IotHubNotFound = 401001,
    IotHubUnauthorizedAccess = 401002,
    IotHubUnauthorized = 401003,
    IotHubSuspended = 403001,
    IotHubQuotaExceeded = 403002,
    JobQuotaExceeded = 403003,
    DeviceMaximumQueueDepthExceeded = 403004,
    IotHubMaxCbsTokenExceeded = 403005,
    DeviceNotFound = 404001,
    JobNotFound = 404002,
    ModuleNotFound = 404010,
    DeviceNotOnline = 404103,
    DeviceConnectionClosedRemotely = 404104,
    DeviceAlreadyExists = 409001,
    ModuleAlreadyExistsOnDevice = 409301,
    PreconditionFailed = 412001,
    DeviceMessageLockLost = 412002,
    MessageTooLarge = 413001,
    TooManyDevices = 413002,
    TooManyModulesOnDevice = 413003,
    GenericTooManyRequests = 429000,
    ThrottlingException = 429001,
    ThrottleBacklogLimitExceeded = 429002,
    ThrottlingBacklogTimeout = 429003,
    ThrottlingMaxActiveJobCountExceeded = 429004,
    DeviceThrottlingLimitExceeded = 429005,
    ServerError = 500001,
    JobCancelled = 500002,
    InvalidThrottleParameter = 500009,
    ServiceUnavailable = 503001,
    PartitionNotFound = 503003,
}

impl ErrorCode {
    /// The HTTP status the hub answers with: the first three digits of the code.
    pub fn http_status(self) -> u16 {
        (self.code() / 1000) as u16
    }

    /// Looks a code up by its name (case-insensitive, as header values may be re-cased).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Looks a code up by its number.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// An error from an operation on the hub, carrying what a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// No device with this id is registered.
    #[error("device '{device_id}' is not registered in this hub; create it first")]
    DeviceNotFound {
        /// The id that was looked up.
        device_id: String,
    },
    /// A create named a device that already exists.
    #[error(
        "device '{device_id}' already exists; update it with an If-Match header or delete it first"
    )]
    DeviceAlreadyExists {
        /// The id that already exists.
        device_id: String,
    },
    /// The device is disabled in the registry.
    #[error("device '{device_id}' is disabled; set its status to enabled in the registry")]
    DeviceDisabled {
        /// The disabled device.
        device_id: String,
    },
    /// The device's C2D queue already holds the maximum number of pending messages.
    #[error(
        "C2D messages enqueued for the device exceeded the queue limit of {depth}; complete, reject or abandon pending messages, purge the queue, or use a shorter TTL (see http://aka.ms/iothub403004)"
    )]
    DeviceMaximumQueueDepthExceeded {
        /// The device whose queue is full.
        device_id: String,
        /// The configured queue depth.
        depth: usize,
    },
    /// The lock token is unknown, belongs to another device, or its lock expired.
    #[error(
        "the lock token '{lock_token}' is not valid: the message was already settled or its lock expired; receive the message again"
    )]
    DeviceMessageLockLost {
        /// The lock token that was presented.
        lock_token: String,
    },
    /// An If-Match precondition did not hold.
    #[error("precondition failed: {detail}")]
    PreconditionFailed {
        /// What did not match.
        detail: String,
    },
    /// A message is larger than the hub allows.
    #[error(
        "the message is {size} bytes; the limit is {max} bytes (body plus property names and values)"
    )]
    MessageTooLarge {
        /// The size that was counted.
        size: usize,
        /// The limit that applies.
        max: usize,
    },
    /// An argument broke one of the hub's rules.
    #[error("{detail}")]
    ArgumentInvalid {
        /// Which rule, and how to fix it.
        detail: String,
    },
    /// Authentication or authorization failed.
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// Why, without revealing secrets.
        detail: String,
    },
    /// The operation is not possible in this state or over this transport.
    #[error("{detail}")]
    InvalidOperation {
        /// Why.
        detail: String,
    },
    /// Something went wrong inside the hub.
    #[error("internal error: {detail}")]
    ServerError {
        /// What failed.
        detail: String,
    },
    /// No module with this id is registered on the device.
    #[error("module '{module_id}' is not registered on device '{device_id}'; create it first")]
    ModuleNotFound {
        /// The device.
        device_id: String,
        /// The module id that was looked up.
        module_id: String,
    },
    /// A twin section would exceed its size limit (iothub-beyond-c2d.md 1.3). The first
    /// sentence is the hub's own text; devices saw it with `errorCode` 403100.
    #[error(
        "'{section}' size should be less than {max} bytes. This write makes it {size} bytes (key lengths plus values: strings in UTF-8, numbers 8, booleans 4)"
    )]
    TwinTooLarge {
        /// `Tags`, `Properties.Desired` or `Properties.Reported`.
        section: String,
        /// The size the write would give.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A bulk request names more identities than the hub accepts at once.
    #[error("a bulk registry request may hold at most {max} operations; this one holds {count}")]
    TooManyDevices {
        /// Operations in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A bulk request names the same identity twice.
    #[error(
        "'{device_id}' appears more than once in the bulk request; each identity may appear only once"
    )]
    DeviceDefinedMultipleTimes {
        /// The repeated id (`device` or `device/module`).
        device_id: String,
    },
}

impl HubError {
    /// The catalogue entry this error is reported as on every protocol.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::DeviceNotFound { .. } => ErrorCode::DeviceNotFound,
            HubError::DeviceAlreadyExists { .. } => ErrorCode::DeviceAlreadyExists,
            // The hub refuses a disabled device's credentials; SDKs map 401 to an auth error.
            HubError::DeviceDisabled { .. } => ErrorCode::IotHubUnauthorizedAccess,
            HubError::DeviceMaximumQueueDepthExceeded { .. } => {
                ErrorCode::DeviceMaximumQueueDepthExceeded
            }
            HubError::DeviceMessageLockLost { .. } => ErrorCode::DeviceMessageLockLost,
            HubError::PreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            HubError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            HubError::ArgumentInvalid { .. } => ErrorCode::ArgumentInvalid,
            HubError::Unauthorized { .. } => ErrorCode::IotHubUnauthorizedAccess,
            HubError::InvalidOperation { .. } => ErrorCode::InvalidOperation,
            HubError::ServerError { .. } => ErrorCode::ServerError,
            HubError::ModuleNotFound { .. } => ErrorCode::ModuleNotFound,
            // The REST side answers 400 (iothub-beyond-c2d.md 1.3).
            HubError::TwinTooLarge { .. } => ErrorCode::ArgumentInvalid,
            HubError::TooManyDevices { .. } => ErrorCode::TooManyDevices,
            HubError::DeviceDefinedMultipleTimes { .. } => ErrorCode::DeviceDefinedMultipleTimes,
        }
    }

    /// Shorthand for [`HubError::ArgumentInvalid`].
    pub fn argument(detail: impl Into<String>) -> Self {
        HubError::ArgumentInvalid {
            detail: detail.into(),
        }
    }

    /// Shorthand for [`HubError::Unauthorized`].
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        HubError::Unauthorized {
            detail: detail.into(),
        }
    }
}

/// The JSON error body the hub sends with an HTTP error (shape 1 of iothub-protocol.md 6.4).
///
/// The Node service SDK splits `Message` on `;` and `:` to find the code, and the C# SDK checks
/// it against the `iothub-errorcode` header, so both must name the same code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `ErrorCode:<Name>;<text>`.
    #[serde(rename = "Message")]
    pub message: String,
    /// `Tracking ID:<32 hex>-G:0-TimeStamp:<MM/dd/yyyy HH:mm:ss>`.
    #[serde(rename = "ExceptionMessage", default)]
    pub exception_message: String,
}

impl ErrorBody {
    /// Builds the body for `code` with a human-readable `text`.
    pub fn new(code: ErrorCode, text: &str, tracking_id: &str, now: OffsetDateTime) -> Self {
        let ts = format!(
            "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
            u8::from(now.month()),
            now.day(),
            now.year(),
            now.hour(),
            now.minute(),
            now.second()
        );
        ErrorBody {
            message: format!("ErrorCode:{};{}", code.name(), text),
            exception_message: format!("Tracking ID:{tracking_id}-G:0-TimeStamp:{ts}"),
        }
    }

    /// Reads the code and text back out of `Message`, as the SDKs do.
    pub fn parse_message(&self) -> (Option<ErrorCode>, &str) {
        match self.message.strip_prefix("ErrorCode:") {
            Some(rest) => match rest.split_once(';') {
                Some((name, text)) => (ErrorCode::from_name(name), text),
                None => (ErrorCode::from_name(rest), ""),
            },
            None => (None, self.message.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn catalogue_names_codes_and_statuses() {
        assert_eq!(ErrorCode::DeviceNotFound.code(), 404001);
        assert_eq!(ErrorCode::DeviceNotFound.http_status(), 404);
        assert_eq!(ErrorCode::DeviceAlreadyExists.code(), 409001);
        assert_eq!(ErrorCode::DeviceMaximumQueueDepthExceeded.code(), 403004);
        assert_eq!(ErrorCode::DeviceMessageLockLost.http_status(), 412);
        assert_eq!(ErrorCode::IotHubUnauthorizedAccess.code(), 401002);
        assert_eq!(ErrorCode::MessageTooLarge.http_status(), 413);
        assert_eq!(
            ErrorCode::from_name("devicenotfound"),
            Some(ErrorCode::DeviceNotFound)
        );
        assert_eq!(
            ErrorCode::from_code(412001),
            Some(ErrorCode::PreconditionFailed)
        );
        let mut codes: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorCode::ALL.len(), "codes are unique");
    }

    #[test]
    fn every_hub_error_has_a_code() {
        let e = HubError::DeviceMaximumQueueDepthExceeded {
            device_id: "d".into(),
            depth: 50,
        };
        assert_eq!(e.code(), ErrorCode::DeviceMaximumQueueDepthExceeded);
        assert!(e.to_string().contains("queue limit of 50"));
        assert_eq!(HubError::unauthorized("x").code().http_status(), 401);
    }

    #[test]
    fn twin_and_bulk_errors_have_codes() {
        let e = HubError::TwinTooLarge {
            section: "Properties.Reported".into(),
            size: 40_000,
            max: 32_768,
        };
        assert_eq!(e.code().http_status(), 400);
        assert!(
            e.to_string()
                .starts_with("'Properties.Reported' size should be less than 32768 bytes.")
        );
        let e = HubError::TooManyDevices {
            count: 101,
            max: 100,
        };
        assert_eq!(e.code().code(), 413002);
        let e = HubError::DeviceDefinedMultipleTimes {
            device_id: "d".into(),
        };
        assert_eq!(e.code().code(), 400011);
        let e = HubError::ModuleNotFound {
            device_id: "d".into(),
            module_id: "m".into(),
        };
        assert_eq!(e.code().code(), 404010);
    }

    #[test]
    fn error_body_matches_the_hub_shape() {
        let body = ErrorBody::new(
            ErrorCode::DeviceNotFound,
            "dev1",
            "0123456789abcdef0123456789abcdef",
            datetime!(2022-10-18 20:50:39 UTC),
        );
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"Message":"ErrorCode:DeviceNotFound;dev1","ExceptionMessage":"Tracking ID:0123456789abcdef0123456789abcdef-G:0-TimeStamp:10/18/2022 20:50:39"}"#
        );
        assert_eq!(
            body.parse_message(),
            (Some(ErrorCode::DeviceNotFound), "dev1")
        );
    }
}
