//! SASL for clients that send the SASL protocol header (iothub-protocol.md 5.2).
//!
//! * `MSSBCBS` (C device SDK, Python's uamqp) and `ANONYMOUS`: accepted without credentials; the
//!   client authenticates afterwards with CBS put-token. uamqp aborts unless `MSSBCBS` is offered.
//! * `PLAIN` (C service SDK): user `{policy}@sas.root.{hub}` or `{deviceId}@sas.{hub}` with a
//!   SAS token as password. A valid login puts the token in the connection's store, so it
//!   authorizes links exactly as a put-token would. The hub part of the user name is not
//!   checked, as the emulator answers to any host name.

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp_types::primitives::{Array, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use iothub_protocol::HubError;
use iothub_protocol::sas::SasToken;

use super::tokens::{Tokens, check_token};
use crate::context::Context;

/// The custom mechanism of the Azure SDKs: "authentication follows over CBS".
pub const MSSBCBS: &str = "MSSBCBS";
/// RFC 4616 plain user name and password.
pub const PLAIN: &str = "PLAIN";
/// No credentials.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// The hub's SASL server for one connection.
#[derive(Clone)]
pub struct HubSasl {
    ctx: Context,
    tokens: Tokens,
}

impl HubSasl {
    /// A SASL server that stores a PLAIN login's token in `tokens`.
    pub fn new(ctx: Context, tokens: Tokens) -> Self {
        HubSasl { ctx, tokens }
    }

    fn plain(&self, response: &[u8]) -> Result<(), HubError> {
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, user, password) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(u), Some(p)) => (a, u, p),
            _ => return Err(HubError::unauthorized("malformed PLAIN response")),
        };
        let user = std::str::from_utf8(user)
            .map_err(|_| HubError::unauthorized("the user name is not UTF-8"))?;
        let token = std::str::from_utf8(password)
            .map_err(|_| HubError::unauthorized("the password is not UTF-8"))?;
        check_login(&self.ctx, user, token)?;
        self.tokens.put(token, Vec::new());
        Ok(())
    }
}

/// Checks a PLAIN login: the token must be valid and signed for the identity the user names.
fn check_login(ctx: &Context, user: &str, token: &str) -> Result<(), HubError> {
    check_token(ctx, token)?;
    let parsed = SasToken::parse(token).map_err(|e| HubError::unauthorized(e.to_string()))?;
    let (name, rest) = user.split_once('@').ok_or_else(|| {
        HubError::unauthorized(
            "the user name must be {policy}@sas.root.{hub} or {deviceId}@sas.{hub}",
        )
    })?;
    let rest = rest.to_ascii_lowercase();
    let fits = if rest.starts_with("sas.root.") {
        parsed
            .key_name()
            .is_some_and(|k| k.eq_ignore_ascii_case(name))
    } else if rest.starts_with("sas.") {
        matches!(parsed.path_segments().as_slice(), ["devices", id, ..] if *id == name)
    } else {
        false
    };
    if fits {
        Ok(())
    } else {
        Err(HubError::unauthorized(format!(
            "the token is not for '{user}'"
        )))
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for HubSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![
            Symbol::from(MSSBCBS),
            Symbol::from(PLAIN),
            Symbol::from(ANONYMOUS),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let mechanism = init.mechanism.0.as_str();
        if mechanism.eq_ignore_ascii_case(MSSBCBS) || mechanism.eq_ignore_ascii_case(ANONYMOUS) {
            return outcome(SaslCode::Ok);
        }
        if mechanism.eq_ignore_ascii_case(PLAIN) {
            let response = init
                .initial_response
                .map(|b| b.into_vec())
                .unwrap_or_default();
            return match self.plain(&response) {
                Ok(()) => outcome(SaslCode::Ok),
                Err(e) => {
                    tracing::debug!(error = %e, "SASL PLAIN login refused");
                    outcome(SaslCode::Auth)
                }
            };
        }
        tracing::debug!(mechanism, "SASL mechanism not offered");
        outcome(SaslCode::Auth)
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // None of the offered mechanisms sends a challenge, so a response is a protocol error.
        outcome(SaslCode::Sys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use iothub_protocol::registry::Device;
    use iothub_protocol::sas::build_token;

    #[test]
    fn plain_logins_must_match_their_token() {
        let ctx = Context::for_tests(HubSettings::default());
        let d = ctx
            .hub
            .run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let exp = ctx.now_unix() + 60;
        let owner = ctx.auth.policy("iothubowner").unwrap().clone();
        let svc = build_token("localhost", &owner.primary_key, Some("iothubowner"), exp).unwrap();
        let dev = build_token("localhost/devices/d1", d.primary_key().unwrap(), None, exp).unwrap();
        assert!(check_login(&ctx, "iothubowner@sas.root.localhost", &svc).is_ok());
        assert!(check_login(&ctx, "service@sas.root.localhost", &svc).is_err());
        assert!(check_login(&ctx, "d1@sas.localhost", &dev).is_ok());
        assert!(check_login(&ctx, "d2@sas.localhost", &dev).is_err());
        assert!(check_login(&ctx, "nobody", &svc).is_err());

        let tokens = Tokens::default();
        let mut sasl = HubSasl::new(ctx.clone(), tokens.clone());
        let mut response = b"\0iothubowner@sas.root.localhost\0".to_vec();
        response.extend_from_slice(svc.as_bytes());
        let init = |mechanism: &str, response: Option<Vec<u8>>| SaslInit {
            mechanism: Symbol::from(mechanism),
            initial_response: response.map(Into::into),
            hostname: None,
        };
        let code = |f: SaslServerFrame| match f {
            SaslServerFrame::Outcome(o) => o.code,
            SaslServerFrame::Challenge(_) => panic!("no challenges"),
        };
        assert_eq!(
            code(sasl.on_init(init("PLAIN", Some(response)))),
            SaslCode::Ok
        );
        assert!(
            tokens
                .authorize_link(&ctx, super::super::tokens::Access::Service)
                .is_ok()
        );
        assert_eq!(code(sasl.on_init(init("MSSBCBS", None))), SaslCode::Ok);
        assert_eq!(code(sasl.on_init(init("ANONYMOUS", None))), SaslCode::Ok);
        assert_eq!(code(sasl.on_init(init("PLAIN", None))), SaslCode::Auth);
        assert_eq!(code(sasl.on_init(init("EXTERNAL", None))), SaslCode::Auth);
    }
}
