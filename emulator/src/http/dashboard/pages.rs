//! `GET /`: the token exchange, the page, and the explanation for visitors without a session.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::Dashboard;
use super::assets::{INDEX_HTML, LOGIN_HTML};
use super::guard::{self, Refusal};
use crate::http::AppState;
use crate::http::extract::Query;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn login_page(status: StatusCode, reason: &str) -> Response {
    let body = LOGIN_HTML.replace("{{REASON}}", &escape_html(reason));
    (status, Html(body)).into_response()
}

/// `GET /` (and `GET /?token=...`).
pub async fn index(
    State(st): State<AppState>,
    Extension(d): Extension<Arc<Dashboard>>,
    headers: HeaderMap,
    query: Query,
) -> Response {
    if guard::check_host(&d, &headers).is_err() {
        return Refusal::Host.into_response();
    }
    if let Some(token) = query.get("token") {
        if !guard::token_matches(&d, token) {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "That token is not this emulator's: it is new on every start. Use the URL the emulator printed most recently.",
            );
        }
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            d.cookie, d.token
        );
        let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
        return res;
    }
    if !guard::has_session(&d, &headers) {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "This page needs the owner's rights.",
        );
    }
    let body = INDEX_HTML
        .replace("{{CSRF}}", &escape_html(&d.csrf))
        .replace("{{HUB}}", &escape_html(&st.ctx.hub_name));
    Html(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
