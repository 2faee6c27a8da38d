//! Reading requests: path parameters, the query string, bodies with a size cap, content types.
//!
//! Every failure here is a [`HubError`] (400 `ArgumentInvalid`, or 413 `MessageTooLarge` for a
//! body over its cap), so a malformed request gets the hub's error body like any other error.
//! axum's own extractors answer with plain-text bodies, which is why the routes use these.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use iothub_protocol::HubError;
use iothub_protocol::device_id::validate_device_id;
use percent_encoding::percent_decode_str;

use super::error::ApiError;

pub(super) async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| HubError::argument(format!("the request path is not valid: {e}")))?;
    params.get(name).cloned().ok_or_else(|| {
        ApiError(HubError::ServerError {
            detail: format!("route has no '{name}' parameter"),
        })
    })
}

/// The `{id}` path segment: a device id, percent-decoded and checked against the registry's
/// alphabet (case kept: device ids are case-sensitive).
#[derive(Debug, Clone)]
pub struct DeviceIdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DeviceIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let id = path_param(parts, state, "id").await?;
        validate_device_id(&id).map_err(HubError::argument)?;
        Ok(DeviceIdParam(id))
    }
}

/// The `{lock}` path segment: a lock token, with surrounding quotes removed (the SDKs send it
/// bare, but a quoted ETag pasted into a URL should work too).
#[derive(Debug, Clone)]
pub struct LockParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for LockParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = path_param(parts, state, "lock").await?;
        Ok(LockParam(unquote(&raw).to_owned()))
    }
}

/// `"abc"` → `abc`; anything else unchanged.
pub fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// The query string as name/value pairs, percent-decoded. Names compare without ASCII case; a
/// bare key (`?reject`) has no value.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, Option<String>)>);

impl Query {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Query {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), Some(decode(v))),
                    None => (decode(p), None),
                })
                .collect(),
        )
    }

    /// The value of the first `name` parameter (`Some("")` for a bare key).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// True when `name` appears, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Query::parse(parts.uri.query().unwrap_or("")))
    }
}

/// How much of an over-limit body is read and thrown away before the 413 is sent. A client
/// still sending when the server closes may see a connection reset instead of the answer, so
/// bodies up to this size are drained first; larger ones are cut off.
pub const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Reads a whole body, refusing more than `limit` bytes with 413 `MessageTooLarge`.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, HubError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let too_large = |size: usize| HubError::MessageTooLarge { size, max: limit };
    if let Some(n) = declared.filter(|n| *n > limit) {
        if n <= DRAIN_LIMIT {
            drain(body, n).await;
        }
        return Err(too_large(n));
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| HubError::argument(format!("the request body could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.len() > limit {
            let seen = out.len() + data.len();
            drain(body, DRAIN_LIMIT.saturating_sub(seen)).await;
            return Err(too_large(seen));
        }
        out.extend_from_slice(&data);
    }
    Ok(Bytes::from(out))
}

/// Reads and drops at most `up_to` more bytes of a body.
async fn drain(mut body: Body, up_to: usize) {
    let mut seen = 0usize;
    while seen <= up_to {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

/// The media type of the body (`type/subtype`, lower-case, parameters dropped), if given.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?;
    let s = std::str::from_utf8(v.as_bytes()).ok()?;
    let essence = s.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

/// Checks that a body is declared as JSON (`application/json`, `text/json` or any `+json`
/// type). A missing `Content-Type` is accepted; anything else is a 400.
pub fn require_json(headers: &HeaderMap) -> Result<(), HubError> {
    match media_type(headers) {
        None => Ok(()),
        Some(t) if t == "application/json" || t == "text/json" || t.ends_with("+json") => Ok(()),
        Some(t) => Err(HubError::argument(format!(
            "the body must be JSON, sent with Content-Type: application/json (got '{t}')"
        ))),
    }
}

/// Parses a JSON body into `T`, as a 400 `ArgumentInvalid` on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, HubError> {
    serde_json::from_slice(bytes)
        .map_err(|e| HubError::argument(format!("the body is not a valid {what}: {e}")))
}

/// A header's value as text (UTF-8 is accepted, although HTTP only promises visible ASCII).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_bare_keys_and_decodes() {
        let q = Query::parse("api-version=2021-04-12&reject&top=5&x=a%20b");
        assert_eq!(q.get("API-Version"), Some("2021-04-12"));
        assert!(q.has("reject"));
        assert_eq!(q.get("reject"), Some(""));
        assert_eq!(q.get("top"), Some("5"));
        assert_eq!(q.get("x"), Some("a b"));
        assert!(!q.has("missing"));
        assert!(!Query::parse("").has(""));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(require_json(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(matches!(
            require_json(&h),
            Err(HubError::ArgumentInvalid { .. })
        ));
    }

    #[tokio::test]
    async fn body_limit_is_a_413() {
        let h = HeaderMap::new();
        let ok = read_body(Body::from(vec![1u8; 10]), &h, 10).await.unwrap();
        assert_eq!(ok.len(), 10);
        let err = read_body(Body::from(vec![1u8; 11]), &h, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::MessageTooLarge { max: 10, .. }));
    }

    #[test]
    fn unquote_strips_one_pair() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("abc"), "abc");
        assert_eq!(unquote("\"abc"), "\"abc");
    }
}
