//! Who may read and change the hub through the dashboard (see the module above for the why).
//!
//! The checks are plain functions of the request headers, so they are unit-tested without a
//! server; [`Read`] and [`Write`] are the extractors handlers take to demand them.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Dashboard;

/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The Content Security Policy of every dashboard answer: only our own script, style and
/// connections; no frames, no plugins, no inline code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The `Host` header names neither a loopback address nor the configured host name.
    #[error("the dashboard answers only to localhost and the emulator's host name")]
    Host,
    /// No valid session cookie.
    #[error("no dashboard session: open the URL with the token that the emulator printed at start")]
    Session,
    /// The request came from another origin (or does not say where it came from).
    #[error("cross-origin requests may not change the hub")]
    CrossOrigin,
    /// The CSRF token is missing or wrong.
    #[error("the request lacks the page's CSRF token; reload the dashboard")]
    Csrf,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Host => StatusCode::MISDIRECTED_REQUEST,
            Refusal::Session => StatusCode::UNAUTHORIZED,
            Refusal::CrossOrigin | Refusal::Csrf => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status(),
            axum::Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The host name of a `Host` header value, without the port, lower-cased.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.to_ascii_lowercase()
}

/// The `Host` header names a name the dashboard answers to.
pub fn check_host(d: &Dashboard, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = header_str(headers, header::HOST).ok_or(Refusal::Host)?;
    let name = host_name(host);
    if d.hosts.contains(&name) {
        Ok(())
    } else {
        Err(Refusal::Host)
    }
}

/// The value of the session cookie, if the request carries one.
fn session_cookie<'h>(d: &Dashboard, headers: &'h HeaderMap) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == d.cookie)
        .map(|(_, value)| value)
}

/// The token from the banner URL is right.
pub fn token_matches(d: &Dashboard, token: &str) -> bool {
    same_secret(token, &d.token)
}

/// The request carries a valid session cookie.
pub fn has_session(d: &Dashboard, headers: &HeaderMap) -> bool {
    session_cookie(d, headers).is_some_and(|v| same_secret(v, &d.token))
}

/// What a read needs: a known host and a session.
pub fn check_read(d: &Dashboard, headers: &HeaderMap) -> Result<(), Refusal> {
    check_host(d, headers)?;
    if has_session(d, headers) {
        Ok(())
    } else {
        Err(Refusal::Session)
    }
}

/// What a change needs: a read's rights, the same origin, and the CSRF token.
pub fn check_write(d: &Dashboard, headers: &HeaderMap) -> Result<(), Refusal> {
    check_read(d, headers)?;
    let host = header_str(headers, header::HOST).unwrap_or_default();
    // Browsers send Origin on every POST; a request without it did not come from our page.
    let origin = header_str(headers, header::ORIGIN).ok_or(Refusal::CrossOrigin)?;
    if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
        return Err(Refusal::CrossOrigin);
    }
    if let Some(site) = header_str(headers, "sec-fetch-site")
        && site != "same-origin"
    {
        return Err(Refusal::CrossOrigin);
    }
    match header_str(headers, CSRF_HEADER) {
        Some(t) if same_secret(t, &d.csrf) => Ok(()),
        _ => Err(Refusal::Csrf),
    }
}

fn dashboard_of(parts: &Parts) -> Result<Arc<Dashboard>, Refusal> {
    // Present on every dashboard route (`routes` adds it); absent only if mis-wired.
    parts
        .extensions
        .get::<Arc<Dashboard>>()
        .cloned()
        .ok_or(Refusal::Session)
}

/// Proof that the request may read the hub.
pub struct Read(pub Arc<Dashboard>);

/// Proof that the request may change the hub.
pub struct Write(pub Arc<Dashboard>);

impl<S: Send + Sync> FromRequestParts<S> for Read {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        let d = dashboard_of(parts)?;
        check_read(&d, &parts.headers)?;
        Ok(Read(d))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Write {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        let d = dashboard_of(parts)?;
        check_write(&d, &parts.headers)?;
        Ok(Write(d))
    }
}

/// Adds the CSP and the other protective headers to every dashboard answer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dash() -> Dashboard {
        Dashboard::new("myhub.local", 8088).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn cookie(d: &Dashboard) -> String {
        format!("other=1; {}={}", d.cookie, d.token)
    }

    #[test]
    fn tokens_are_random_per_start_and_the_url_carries_one() {
        let (a, b) = (dash(), dash());
        assert_ne!(a.token, b.token);
        assert_ne!(a.token, a.csrf);
        assert_eq!(a.token.len(), 64);
        assert_eq!(
            a.url(),
            format!("http://myhub.local:8088/?token={}", a.token)
        );
        assert!(token_matches(&a, &a.token));
        assert!(!token_matches(&a, &b.token));
        assert!(!token_matches(&a, ""));
        assert!(!token_matches(&a, &a.token[..63]));
    }

    #[test]
    fn only_loopback_names_and_the_configured_host_are_served() {
        let d = dash();
        for ok in [
            "localhost",
            "localhost:8088",
            "LOCALHOST:1",
            "127.0.0.1:8088",
            "[::1]:8088",
            "[::1]",
            "myhub.local:8088",
        ] {
            assert_eq!(check_host(&d, &headers(&[("host", ok)])), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:8088",
            "localhost.evil.example",
            "127.0.0.2",
            "[::2]:8088",
            "",
        ] {
            assert_eq!(
                check_host(&d, &headers(&[("host", bad)])),
                Err(Refusal::Host),
                "{bad}"
            );
        }
        assert_eq!(check_host(&d, &HeaderMap::new()), Err(Refusal::Host));
    }

    #[test]
    fn reads_need_the_session_cookie_of_this_start() {
        let d = dash();
        let other = dash();
        let host = ("host", "localhost:8088");
        assert_eq!(check_read(&d, &headers(&[host])), Err(Refusal::Session));
        assert_eq!(
            check_read(&d, &headers(&[host, ("cookie", &cookie(&other))])),
            Err(Refusal::Session)
        );
        let wrong_name = format!("iothub-dashboard-9999={}", d.token);
        assert_eq!(
            check_read(&d, &headers(&[host, ("cookie", &wrong_name)])),
            Err(Refusal::Session)
        );
        assert_eq!(
            check_read(&d, &headers(&[host, ("cookie", &cookie(&d))])),
            Ok(())
        );
        assert_eq!(
            check_read(
                &d,
                &headers(&[("host", "evil.example"), ("cookie", &cookie(&d))])
            ),
            Err(Refusal::Host)
        );
    }

    #[test]
    fn writes_need_same_origin_and_the_csrf_token() {
        let d = dash();
        let c = cookie(&d);
        let base = [
            ("host", "localhost:8088"),
            ("cookie", c.as_str()),
            ("origin", "http://localhost:8088"),
            ("sec-fetch-site", "same-origin"),
            (CSRF_HEADER, d.csrf.as_str()),
        ];
        assert_eq!(check_write(&d, &headers(&base)), Ok(()));
        let without = |name: &str| {
            let kept: Vec<_> = base.iter().copied().filter(|(k, _)| *k != name).collect();
            check_write(&d, &headers(&kept))
        };
        let with = |name: &'static str, value: &str| {
            let mut h = headers(&base);
            h.insert(name, value.parse().unwrap());
            check_write(&d, &h)
        };
        assert_eq!(without("cookie"), Err(Refusal::Session));
        assert_eq!(without("origin"), Err(Refusal::CrossOrigin));
        assert_eq!(without("sec-fetch-site"), Ok(()), "older browsers omit it");
        assert_eq!(without(CSRF_HEADER), Err(Refusal::Csrf));
        assert_eq!(
            with("origin", "http://evil.example"),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            with("origin", "http://localhost:9999"),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(with("origin", "null"), Err(Refusal::CrossOrigin));
        assert_eq!(
            with("sec-fetch-site", "cross-site"),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            with("sec-fetch-site", "same-site"),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(with(CSRF_HEADER, &d.token), Err(Refusal::Csrf));
        assert_eq!(with(CSRF_HEADER, ""), Err(Refusal::Csrf));
    }
}
