//! The one place where an error becomes an HTTP response.
//!
//! Reference: iothub-protocol.md 6.4. Every error answer carries the status of its catalogue
//! entry ([`ErrorCode::http_status`]), the header `iothub-errorcode: <Name>`, and the JSON body
//! `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:..."}` that the Node
//! service SDK splits and the C# SDK checks against the header. Handlers return
//! [`ApiError`]; nothing else in `http/` picks a status for an error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iothub_protocol::error::ErrorBody;
use iothub_protocol::{ErrorCode, HubError};
use time::OffsetDateTime;

/// Name of the header that names the error code.
pub const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// A handler's error: a [`HubError`], answered the way the hub answers it.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        hub_error_response(&self.0)
    }
}

/// The response for a hub error.
pub fn hub_error_response(e: &HubError) -> Response {
    code_response(e.code(), &e.to_string())
}

/// The response for a catalogue code with a human-readable text. Used directly only where no
/// [`HubError`] variant fits (the request timeout answers `ServiceUnavailable`).
pub fn code_response(code: ErrorCode, text: &str) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let tracking_id = uuid::Uuid::new_v4().simple().to_string();
    let body = ErrorBody::new(code, text, &tracking_id, OffsetDateTime::now_utc());
    // Serializing two strings cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (
        status,
        [
            (ERROR_CODE_HEADER, HeaderValue::from_static(code.name())),
            (
                header::CONTENT_TYPE.as_str(),
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
        ],
        json,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_header_and_body_name_the_same_code() {
        let r = hub_error_response(&HubError::DeviceNotFound {
            device_id: "d1".into(),
        });
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[ERROR_CODE_HEADER], "DeviceNotFound");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        let (code, text) = body.parse_message();
        assert_eq!(code, Some(ErrorCode::DeviceNotFound));
        assert!(text.contains("'d1'"));
        assert!(body.exception_message.starts_with("Tracking ID:"));
    }

    #[test]
    fn disabled_device_is_401() {
        let r = hub_error_response(&HubError::DeviceDisabled {
            device_id: "d".into(),
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[ERROR_CODE_HEADER], "IotHubUnauthorizedAccess");
    }
}
