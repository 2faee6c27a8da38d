//! The one place where an error becomes an HTTP response.
//!
//! Reference: iothub-protocol.md 6.4. Every error answer carries the status of its catalogue
//! entry ([`ErrorCode::http_status`]), the header `iothub-errorcode: <Name>`, and the JSON body
//! `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:..."}` that the Node
//! service SDK splits and the C# SDK checks against the header. Handlers return
//! [`ApiError`]; nothing else in `http/` picks a status for an error.
//!
//! The body's `TimeStamp` is the hub's time (the virtual clock included), which a handler's
//! error does not know: an error response leaves here with its status and headers and a
//! [`PendingBody`], and the `stamp_errors` layer, which holds the hub, writes the body with
//! [`stamp`].

use axum::body::Body;
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

/// The response for a hub error, its body in the shape the hub uses for it
/// ([`ErrorBody::for_error`]: direct-method errors put a JSON document in `Message`).
pub fn hub_error_response(e: &HubError) -> Response {
    let mut resp = code_response(e.code(), &e.to_string());
    if let Some(pending) = resp.extensions_mut().get_mut::<PendingBody>() {
        pending.error = Some(e.clone());
    }
    resp
}

/// The response for a catalogue code with a human-readable text. Used directly only where no
/// [`HubError`] variant fits (the request timeout answers `ServiceUnavailable`). Its body is
/// written by [`stamp`].
pub fn code_response(code: ErrorCode, text: &str) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        [
            (ERROR_CODE_HEADER, HeaderValue::from_static(code.name())),
            (
                header::CONTENT_TYPE.as_str(),
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
        ],
    )
        .into_response();
    resp.extensions_mut().insert(PendingBody {
        code,
        text: text.to_owned(),
        error: None,
    });
    resp
}

/// The body an error response still needs: it is stamped with the hub's time.
#[derive(Debug, Clone)]
pub struct PendingBody {
    code: ErrorCode,
    text: String,
    /// The hub error it came from, which may choose the other body shape.
    error: Option<HubError>,
}

/// Writes the body of an error response made by [`code_response`], stamped at `now`; any
/// other response is left as it is.
pub fn stamp(resp: &mut Response, now: OffsetDateTime) {
    let Some(PendingBody { code, text, error }) = resp.extensions_mut().remove::<PendingBody>()
    else {
        return;
    };
    let tracking_id = uuid::Uuid::new_v4().simple().to_string();
    let body = match error {
        Some(e) => ErrorBody::for_error(&e, &tracking_id, now),
        None => ErrorBody::new(code, &text, &tracking_id, now),
    };
    // Serializing two strings cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    // The router already sized the empty body; the server sizes the new one.
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    *resp.body_mut() = Body::from(json);
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn status_header_and_body_name_the_same_code() {
        let mut r = hub_error_response(&HubError::DeviceNotFound {
            device_id: "d1".into(),
        });
        stamp(&mut r, datetime!(2031-02-03 04:05:06 UTC));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[ERROR_CODE_HEADER], "DeviceNotFound");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        let (code, text) = body.parse_message();
        assert_eq!(code, Some(ErrorCode::DeviceNotFound));
        assert!(text.contains("'d1'"));
        assert!(body.exception_message.starts_with("Tracking ID:"));
        assert!(
            body.exception_message
                .ends_with("-TimeStamp:02/03/2031 04:05:06"),
            "{}",
            body.exception_message
        );
    }

    #[tokio::test]
    async fn method_errors_use_the_wrapped_body() {
        let mut r = hub_error_response(&HubError::DeviceNotOnline {
            identity: "d1".into(),
            connect_timeout_secs: 0,
        });
        stamp(&mut r, datetime!(2031-02-03 04:05:06 UTC));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[ERROR_CODE_HEADER], "DeviceNotOnline");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert!(
            body.message.contains(r#""errorCode":404103"#),
            "{}",
            body.message
        );
        assert_eq!(body.code(), Some(ErrorCode::DeviceNotOnline));
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
