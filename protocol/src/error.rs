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
    GatewayTimeout = 504101,
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
    /// A create named a module that already exists on the device.
    #[error(
        "module '{module_id}' already exists on device '{device_id}'; update it with an If-Match header or delete it first"
    )]
    ModuleAlreadyExistsOnDevice {
        /// The device.
        device_id: String,
        /// The module id that already exists.
        module_id: String,
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
    /// A direct method found no connection of the identity subscribed to methods within the
    /// connect timeout.
    #[error(
        "'{identity}' was not connected and subscribed to direct methods within the connect timeout of {connect_timeout_secs} s; connect it and subscribe to methods ($iothub/methods/POST/# over MQTT, the methods link over AMQP), or raise connectTimeoutInSeconds"
    )]
    DeviceNotOnline {
        /// The device, or `device/module`.
        identity: String,
        /// The connect timeout that ran out.
        connect_timeout_secs: u32,
    },
    /// The device did not answer a direct method within the response timeout.
    #[error(
        "'{identity}' did not answer method '{method}' within the response timeout of {response_timeout_secs} s; answer sooner or raise responseTimeoutInSeconds"
    )]
    GatewayTimeout {
        /// The device, or `device/module`.
        identity: String,
        /// The method that was called.
        method: String,
        /// The response timeout that ran out.
        response_timeout_secs: u32,
    },
    /// The connection that received a direct method request closed, or stopped listening for
    /// methods, before answering it.
    #[error(
        "'{identity}' disconnected or unsubscribed from direct methods before answering method '{method}'"
    )]
    DeviceConnectionClosedRemotely {
        /// The device, or `device/module`.
        identity: String,
        /// The method that was called.
        method: String,
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
            HubError::DeviceNotOnline { .. } => ErrorCode::DeviceNotOnline,
            HubError::GatewayTimeout { .. } => ErrorCode::GatewayTimeout,
            HubError::DeviceConnectionClosedRemotely { .. } => {
                ErrorCode::DeviceConnectionClosedRemotely
            }
            HubError::ModuleNotFound { .. } => ErrorCode::ModuleNotFound,
            HubError::ModuleAlreadyExistsOnDevice { .. } => ErrorCode::ModuleAlreadyExistsOnDevice,
            // The REST side answers 400 (iothub-beyond-c2d.md 1.3).
            HubError::TwinTooLarge { .. } => ErrorCode::ArgumentInvalid,
            HubError::TooManyDevices { .. } => ErrorCode::TooManyDevices,
            HubError::DeviceDefinedMultipleTimes { .. } => ErrorCode::DeviceDefinedMultipleTimes,
        }
    }

    /// For the errors the hub reports in the JSON-in-`Message` body shape (the direct-method
    /// errors, iothub-beyond-c2d.md 2.1): the hub's own text and the `info` object. `None` for
    /// the errors that use the `ErrorCode:<Name>;<text>` shape.
    pub fn wrapped_detail(&self) -> Option<WrappedDetail> {
        match self {
            HubError::DeviceNotOnline {
                connect_timeout_secs,
                ..
            } => {
                let s = *connect_timeout_secs;
                Some(WrappedDetail {
                    message: "Timed out waiting for device to connect.",
                    info: format!(
                        r#"{{"timeout":"{:02}:{:02}:{:02}"}}"#,
                        s / 3600,
                        s / 60 % 60,
                        s % 60
                    ),
                })
            }
            HubError::GatewayTimeout { .. } => Some(WrappedDetail {
                message: "Timed out waiting for the response from device.",
                info: "{}".into(),
            }),
            // The text the hub gives when the device goes away mid-call (azure-iot-sdk-csharp#317).
            HubError::DeviceConnectionClosedRemotely { .. } => Some(WrappedDetail {
                message: "Device unavailable",
                info: "{}".into(),
            }),
            _ => None,
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

/// The hub's own text and `info` object for an error sent in the JSON-in-`Message` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDetail {
    /// The hub's message, e.g. `Timed out waiting for device to connect.`.
    pub message: &'static str,
    /// The `info` object as JSON text, e.g. `{"timeout":"00:00:00"}`.
    pub info: String,
}

/// The document inside `Message` in the second body shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WrappedError {
    error_code: u32,
    #[serde(default)]
    tracking_id: String,
    #[serde(default)]
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    timestamp_utc: String,
}

/// The JSON error body the hub sends with an HTTP error, in either of its two shapes
/// (iothub-protocol.md 6.4):
///
/// 1. `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:..."}` — registry
///    and messaging errors ([`ErrorBody::new`]);
/// 2. `{"Message":"{\"errorCode\":404103,...}","ExceptionMessage":""}` — direct-method errors
///    ([`ErrorBody::wrapped`]).
///
/// [`ErrorBody::for_error`] picks the shape the hub uses for a [`HubError`]. The Node service
/// SDK splits `Message` on `;` and `:` to find the code, and the C# SDK checks it against the
/// `iothub-errorcode` header, so both must name the same code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `ErrorCode:<Name>;<text>`.
    #[serde(rename = "Message")]
    pub message: String,
    /// `Tracking ID:<32 hex>-G:0-TimeStamp:<MM/dd/yyyy HH:mm:ss>`.
    #[serde(rename = "ExceptionMessage", default)]
    pub exception_message: String,
}

/// `<tracking id>-G:0-TimeStamp:<MM/dd/yyyy HH:mm:ss>`, the hub's tracking reference.
fn tracking(tracking_id: &str, now: OffsetDateTime) -> String {
    format!(
        "{tracking_id}-G:0-TimeStamp:{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
        u8::from(now.month()),
        now.day(),
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

impl ErrorBody {
    /// Builds the body for `code` with a human-readable `text` (shape 1).
    pub fn new(code: ErrorCode, text: &str, tracking_id: &str, now: OffsetDateTime) -> Self {
        ErrorBody {
            message: format!("ErrorCode:{};{}", code.name(), text),
            exception_message: format!("Tracking ID:{}", tracking(tracking_id, now)),
        }
    }

    /// Builds the JSON-in-`Message` body (shape 2), e.g. for 404103:
    /// `{"Message":"{\"errorCode\":404103,\"trackingId\":\"...\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"...\"}","ExceptionMessage":""}`.
    pub fn wrapped(
        code: ErrorCode,
        detail: &WrappedDetail,
        tracking_id: &str,
        now: OffsetDateTime,
    ) -> Self {
        let inner = WrappedError {
            error_code: code.code(),
            tracking_id: tracking(tracking_id, now),
            message: detail.message.to_owned(),
            // `info` is ours and always an object; an unparsable one is left out.
            info: serde_json::value::RawValue::from_string(detail.info.clone()).ok(),
            timestamp_utc: crate::time_format::format_round_trip(now),
        };
        ErrorBody {
            // Serializing strings, a number and checked JSON cannot fail.
            message: serde_json::to_string(&inner).unwrap_or_default(),
            exception_message: String::new(),
        }
    }

    /// The body the hub sends for `e`, in the shape it uses for that error.
    pub fn for_error(e: &HubError, tracking_id: &str, now: OffsetDateTime) -> Self {
        match e.wrapped_detail() {
            Some(detail) => ErrorBody::wrapped(e.code(), &detail, tracking_id, now),
            None => ErrorBody::new(e.code(), &e.to_string(), tracking_id, now),
        }
    }

    /// The error code the body names, in either shape.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.wrapped_error() {
            Some(w) => ErrorCode::from_code(w.error_code),
            None => self.parse_message().0,
        }
    }

    /// The hub's message text, in either shape.
    pub fn text(&self) -> String {
        match self.wrapped_error() {
            Some(w) => w.message,
            None => self.parse_message().1.to_owned(),
        }
    }

    fn wrapped_error(&self) -> Option<WrappedError> {
        if !self.message.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(&self.message).ok()
    }

    /// Reads the code and text back out of a shape-1 `Message`, as the SDKs do.
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

    #[test]
    fn method_errors_use_the_wrapped_shape_with_the_hubs_text() {
        let now = datetime!(2018-08-24 17:49:33.201157 UTC);
        let e = HubError::DeviceNotOnline {
            identity: "d1".into(),
            connect_timeout_secs: 0,
        };
        assert_eq!(e.code().code(), 404103);
        assert_eq!(e.code().http_status(), 404);
        assert_eq!(e.code().name(), "DeviceNotOnline");
        let body = ErrorBody::for_error(&e, "0123456789abcdef0123456789abcdef", now);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"Message":"{\"errorCode\":404103,\"trackingId\":\"0123456789abcdef0123456789abcdef-G:0-TimeStamp:08/24/2018 17:49:33\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"2018-08-24T17:49:33.2011570Z\"}","ExceptionMessage":""}"#
        );
        assert_eq!(body.code(), Some(ErrorCode::DeviceNotOnline));
        assert_eq!(body.text(), "Timed out waiting for device to connect.");

        let minute = HubError::DeviceNotOnline {
            identity: "d1".into(),
            connect_timeout_secs: 3599,
        };
        assert_eq!(
            minute.wrapped_detail().unwrap().info,
            r#"{"timeout":"00:59:59"}"#
        );

        let e = HubError::GatewayTimeout {
            identity: "d1/m1".into(),
            method: "reboot".into(),
            response_timeout_secs: 30,
        };
        assert_eq!(e.code().code(), 504101);
        assert_eq!(e.code().http_status(), 504);
        assert_eq!(ErrorCode::from_name("GatewayTimeout"), Some(e.code()));
        let body = ErrorBody::for_error(&e, "t", now);
        assert!(body.message.contains(r#""errorCode":504101"#));
        assert!(body.message.contains(r#""info":{}"#));
        assert_eq!(
            body.text(),
            "Timed out waiting for the response from device."
        );
        assert!(e.to_string().contains("'reboot'"));

        let e = HubError::DeviceConnectionClosedRemotely {
            identity: "d1".into(),
            method: "reboot".into(),
        };
        assert_eq!(e.code().code(), 404104);
        assert_eq!(
            ErrorBody::for_error(&e, "t", now).code(),
            Some(ErrorCode::DeviceConnectionClosedRemotely)
        );
    }

    #[test]
    fn other_errors_keep_the_first_shape() {
        let e = HubError::DeviceNotFound {
            device_id: "d1".into(),
        };
        let body = ErrorBody::for_error(&e, "t", datetime!(2022-10-18 20:50:39 UTC));
        assert!(body.message.starts_with("ErrorCode:DeviceNotFound;"));
        assert_eq!(body.code(), Some(ErrorCode::DeviceNotFound));
        assert!(body.text().contains("'d1'"));
        assert!(e.wrapped_detail().is_none());
    }
}
