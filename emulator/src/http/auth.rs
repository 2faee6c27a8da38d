//! The `Authorization` header and the check every hub route makes with it.
//!
//! Reference: iothub-protocol.md 7.4 (HTTPS carries the whole `SharedAccessSignature ...` string
//! in `Authorization`). The token is checked by [`crate::auth::Authenticator`]; this file only
//! reads the header and never prints it (its `Debug` is redacted, and the access log leaves it
//! out).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use iothub_protocol::HubError;

use crate::auth::{Grant, Need};
use crate::context::Context;

/// The request's `Authorization` header, if any.
pub struct Token(Option<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "<redacted>"
        } else {
            "<none>"
        };
        f.debug_tuple("Token").field(&shown).finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A value that is not UTF-8 cannot be a SAS token; keep it as an empty one so the
        // authenticator explains what a token must look like.
        let value = parts.headers.get(AUTHORIZATION).map(|v| {
            std::str::from_utf8(v.as_bytes())
                .unwrap_or_default()
                .to_owned()
        });
        Ok(Token(value))
    }
}

impl Token {
    /// Checks the token for `need` at the hub's current time (which follows a virtual clock).
    pub fn authorize(&self, ctx: &Context, need: Need<'_>) -> Result<Grant, HubError> {
        let token = self.0.as_deref().ok_or_else(|| {
            HubError::unauthorized(
                "the request has no valid Authorization header (header values may not contain control characters); send `Authorization: SharedAccessSignature sr=...&sig=...&se=...[&skn=...]`",
            )
        })?;
        if token
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        {
            return Err(HubError::unauthorized(
                "Entra ID bearer tokens are not supported by the emulator; use a SharedAccessSignature token",
            ));
        }
        let now = ctx.now_unix();
        ctx.hub
            .read(|hub| ctx.auth.authorize(hub, token, need, now))
    }
}
