//! Which SAS tokens a connection holds, and whether they still cover a link.
//!
//! Reference: iothub-protocol.md 5.3 and 7. A token arrives by CBS put-token (or as the SASL
//! PLAIN password) and is checked on its own: signature, expiry, and the policy or device it
//! names, whatever the put-token `name` says. A link is usable only while some stored token
//! grants what it needs: ServiceConnect for service links, the device's own key (or a
//! DeviceConnect policy) for device links. Tokens expire; a link notices when the token that
//! authorized it runs out and, unless a renewed token covers it, is detached.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iothub_protocol::HubError;
use iothub_protocol::sas::SasToken;

use crate::auth::{Grant, Need};
use crate::context::Context;
use crate::credentials::Permissions;

/// Most tokens one connection keeps; the oldest goes first.
const MAX_TOKENS: usize = 32;
/// How often an idle link looks at the clock (the hub clock may be moved forward in tests).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a link needs from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A policy with ServiceConnect (C2D send, feedback).
    Service,
    /// Access for this device (its C2D queue, its telemetry).
    Device(String),
}

impl Access {
    fn need(&self) -> Need<'_> {
        match self {
            Access::Service => Need::Permissions(Permissions::SERVICE_CONNECT),
            Access::Device(id) => Need::Device(id),
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    token: String,
    /// The `sr` and `skn` it was issued for: a newer token for the same scope replaces it.
    scope: (String, Option<String>),
}

/// The tokens one connection was given, newest last.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: Vec<Stored>,
}

impl TokenStore {
    /// Keeps a token that [`check_token`] accepted.
    pub fn put(&mut self, token: &str) {
        let Ok(parsed) = SasToken::parse(token) else {
            return;
        };
        let scope = (
            parsed.resource().to_ascii_lowercase(),
            parsed.key_name().map(str::to_ascii_lowercase),
        );
        self.tokens.retain(|t| t.scope != scope);
        if self.tokens.len() >= MAX_TOKENS {
            self.tokens.remove(0);
        }
        self.tokens.push(Stored {
            token: token.to_owned(),
            scope,
        });
    }

    /// The expiry of the newest token that grants `access` now, and what it grants.
    fn authorize(&self, ctx: &Context, access: &Access) -> Result<(u64, Grant), HubError> {
        let now = ctx.now_unix();
        let mut last = None;
        for t in self.tokens.iter().rev() {
            let result = ctx
                .hub
                .read(|hub| ctx.auth.authorize(hub, &t.token, access.need(), now));
            match result {
                Ok(grant) => {
                    let expiry = SasToken::parse(&t.token).map_or(0, |p| p.expiry());
                    return Ok((expiry, grant));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            HubError::unauthorized(
                "no token covers this link; send one with a CBS put-token on $cbs before attaching",
            )
        }))
    }
}

/// Checks a token on its own (signature, expiry, the policy or device it is signed for) and
/// returns its expiry in Unix seconds.
pub fn check_token(ctx: &Context, token: &str) -> Result<u64, HubError> {
    let parsed = SasToken::parse(token).map_err(|e| HubError::unauthorized(e.to_string()))?;
    let now = ctx.now_unix();
    ctx.hub.read(|hub| match parsed.key_name() {
        Some(_) => ctx
            .auth
            .authorize(hub, token, Need::Permissions(Permissions::NONE), now),
        None => match parsed.path_segments().as_slice() {
            ["devices", id, ..] => ctx.auth.authorize(hub, token, Need::Device(id), now),
            _ => Err(HubError::unauthorized(
                "a token without skn must be scoped to {host}/devices/{deviceId}",
            )),
        },
    })?;
    Ok(parsed.expiry())
}

/// The tokens of one connection, shared by its links.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Mutex<TokenStore>>);

impl Tokens {
    fn lock(&self) -> MutexGuard<'_, TokenStore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a checked token.
    pub fn put(&self, token: &str) {
        self.lock().put(token);
    }

    /// True once the connection presented any valid token.
    pub fn any(&self) -> bool {
        !self.lock().tokens.is_empty()
    }

    /// Authorizes a link for `access` now.
    pub fn authorize_link(&self, ctx: &Context, access: Access) -> Result<LinkAuth, HubError> {
        let (valid_until, grant) = self.lock().authorize(ctx, &access)?;
        Ok(LinkAuth {
            tokens: self.clone(),
            ctx: ctx.clone(),
            access,
            valid_until,
            grant,
        })
    }
}

/// A link's authorization, valid until the token behind it expires.
pub struct LinkAuth {
    tokens: Tokens,
    ctx: Context,
    access: Access,
    valid_until: u64,
    grant: Grant,
}

impl LinkAuth {
    /// Ok while a token covers the link; past the expiry of the one that authorized it, looks
    /// for a renewed one.
    pub fn check(&mut self) -> Result<(), HubError> {
        if self.ctx.now_unix() < self.valid_until {
            return Ok(());
        }
        match self.tokens.lock().authorize(&self.ctx, &self.access) {
            Ok((until, grant)) => {
                self.grant = grant;
                self.valid_until = until;
                Ok(())
            }
            Err(_) => Err(HubError::unauthorized(format!(
                "the token for this link expired at {} (Unix time); put a new token on $cbs before it runs out",
                self.valid_until
            ))),
        }
    }

    /// What the token behind the link grants (a device's own key, or a policy).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Completes when it is time to [`LinkAuth::check`] again.
    pub async fn tick(&self) {
        let left = self.valid_until.saturating_sub(self.ctx.now_unix());
        tokio::time::sleep(CHECK_INTERVAL.min(Duration::from_secs(left.max(1)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{IOTHUBOWNER, REGISTRY_READ};
    use crate::hub::HubSettings;
    use iothub_protocol::registry::Device;
    use iothub_protocol::sas::build_token;

    fn ctx() -> (Context, String) {
        let ctx = Context::for_tests(HubSettings::default());
        let d = ctx
            .hub
            .run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let key = d.primary_key().unwrap().to_owned();
        (ctx, key)
    }

    fn policy_token(ctx: &Context, name: &str, exp: u64) -> String {
        let p = ctx.auth.policy(name).unwrap();
        build_token("localhost", &p.primary_key, Some(&p.name), exp).unwrap()
    }

    #[test]
    fn tokens_are_checked_on_their_own() {
        let (ctx, key) = ctx();
        let now = ctx.now_unix();
        assert!(check_token(&ctx, &policy_token(&ctx, REGISTRY_READ, now + 60)).is_ok());
        let dev = build_token("localhost/devices/d1", &key, None, now + 60).unwrap();
        assert_eq!(check_token(&ctx, &dev), Ok(now + 60));
        let expired = policy_token(&ctx, IOTHUBOWNER, now.saturating_sub(1));
        assert!(check_token(&ctx, &expired).is_err());
        assert!(check_token(&ctx, "SharedAccessSignature sr=x&sig=y&se=1").is_err());
        let hub_wide = build_token("localhost", &key, None, now + 60).unwrap();
        assert!(check_token(&ctx, &hub_wide).is_err());
    }

    #[test]
    fn links_need_the_right_token_and_notice_expiry() {
        let (ctx, key) = ctx();
        let now = ctx.now_unix();
        let tokens = Tokens::default();
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        tokens.put(&policy_token(&ctx, REGISTRY_READ, now + 60));
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        tokens.put(&build_token("localhost/devices/d1", &key, None, now + 120).unwrap());
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        let mut device = tokens
            .authorize_link(&ctx, Access::Device("d1".into()))
            .unwrap();
        assert!(
            tokens
                .authorize_link(&ctx, Access::Device("d2".into()))
                .is_err()
        );
        tokens.put(&policy_token(&ctx, IOTHUBOWNER, now + 60));
        let mut service = tokens.authorize_link(&ctx, Access::Service).unwrap();
        assert!(service.check().is_ok());
        ctx.hub.advance_clock(Duration::from_secs(90));
        assert!(service.check().is_err());
        assert!(device.check().is_ok());
        tokens.put(&policy_token(&ctx, IOTHUBOWNER, now + 600));
        assert!(service.check().is_ok(), "a renewed token revives the link");
    }
}
