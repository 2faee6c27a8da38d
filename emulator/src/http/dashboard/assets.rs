//! The page, its script, style sheet and icon, embedded in the binary.
//!
//! No build step: `assets/` holds the files as served. The page and the login page are
//! templates with `{{NAME}}` slots that `pages` fills with escaped values.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The dashboard page (slots: `{{CSRF}}`, `{{HUB}}`).
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page for visitors without a session (slot: `{{REASON}}`).
pub const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON: &str = include_str!("assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /dashboard/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /dashboard/favicon.svg`.
pub async fn icon() -> Response {
    asset("image/svg+xml", FAVICON)
}
