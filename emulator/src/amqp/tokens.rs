//! Which SAS tokens a connection holds, and whether they still cover a link.
//!
//! Reference: iothub-protocol.md 5.3 and 7. A token arrives by CBS put-token (or as the SASL
//! PLAIN password) and is checked on its own: signature, expiry, the hub its `sr` names, and
//! the policy or device it is signed for. The put-token `name` (the audience) must name this
//! hub and be related to the token's `sr` (one a path-segment prefix of the other: the SDKs
//! send the bare host, `amqps://{host}:5671/`, `https://{host}` or the device's path); the
//! token then serves only links under the narrower of the two. A link is usable only while
//! some stored token grants what it needs: ServiceConnect on the hub for service links, the
//! device's own key (or a DeviceConnect policy) on `devices/{id}` for device links. Tokens
//! expire; a link notices when the token that authorized it runs out and, unless a renewed
//! token covers it, is detached.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iothub_protocol::HubError;
use iothub_protocol::sas::SasToken;

use crate::auth::{Grant, Need};
use crate::context::Context;
use crate::credentials::Permissions;
use crate::hub::Identity;

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
    /// Access for this module `(device, module)`: its own key or a DeviceConnect policy; never
    /// the device's key (iothub-beyond-c2d.md 4).
    Module(String, String),
    /// A policy with ServiceConnect on an Event Hubs node below the hub, given as its path
    /// (`{hub}/ConsumerGroups/{group}/Partitions/{id}`, `{hub}/$management`): the Event Hubs
    /// clients sign for `sb://{host}/{hub}` or for the link's own address.
    EventHub(String),
}

impl Access {
    /// What a link acting for `identity` (a device or a module) needs.
    pub fn of(identity: &Identity) -> Self {
        match &identity.module_id {
            Some(m) => Access::Module(identity.device_id.clone(), m.clone()),
            None => Access::Device(identity.device_id.clone()),
        }
    }

    fn need(&self) -> Need<'_> {
        match self {
            Access::Service => Need::Permissions(Permissions::SERVICE_CONNECT),
            Access::Device(id) => Need::Device(id),
            Access::Module(d, m) => Need::Module(d, m),
            Access::EventHub(path) => Need::Scoped {
                permissions: Permissions::SERVICE_CONNECT,
                resource: path,
            },
        }
    }

    /// The resource path the link acts on: the hub for service links, the device's otherwise.
    fn resource(&self) -> Vec<&str> {
        match self {
            Access::Service => Vec::new(),
            Access::Device(id) => vec!["devices", id.as_str()],
            Access::Module(d, m) => vec!["devices", d.as_str(), "modules", m.as_str()],
            Access::EventHub(path) => path.split('/').collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    token: String,
    /// The `sr` and `skn` it was issued for: a newer token for the same scope replaces it.
    scope: (String, Option<String>),
    /// The put-token audience's path, when narrower than the token's: links must lie under it.
    audience: Vec<String>,
}

/// The tokens one connection was given, newest last.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: Vec<Stored>,
}

impl TokenStore {
    /// Keeps a token that [`check_token`] accepted, for links under `audience` (path segments,
    /// from [`check_audience`]; empty: wherever the token's `sr` reaches).
    pub fn put(&mut self, token: &str, audience: Vec<String>) {
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
            audience,
        });
    }

    /// The expiry of the newest token that grants `access` now, and what it grants.
    fn authorize(&self, ctx: &Context, access: &Access) -> Result<(u64, Grant), HubError> {
        let now = ctx.now_unix();
        let mut last = None;
        for t in self.tokens.iter().rev() {
            let adapted = spelled_like(access, t);
            let access = &adapted;
            let resource = access.resource();
            let under = t.audience.len() <= resource.len()
                && t.audience.iter().zip(&resource).all(|(a, r)| a == r);
            if !under {
                last = Some(HubError::unauthorized(format!(
                    "the token was put for '{}', which does not cover '{}'",
                    t.audience.join("/"),
                    resource.join("/")
                )));
                continue;
            }
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

/// `access` with an Event Hubs path spelled as the token spells it, where they differ only in
/// letter case: Event Hubs names are case-insensitive, and `azure-eventhub` signs for
/// `.../consumergroups/$Default/partitions/0` while attaching to `.../ConsumerGroups/...`.
fn spelled_like(access: &Access, t: &Stored) -> Access {
    let Access::EventHub(path) = access else {
        return access.clone();
    };
    let sr: Vec<String> = SasToken::parse(&t.token)
        .map(|p| p.path_segments().iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default();
    let spelling = if t.audience.len() > sr.len() {
        &t.audience
    } else {
        &sr
    };
    let respelled: Vec<&str> = path
        .split('/')
        .enumerate()
        .map(|(i, seg)| match spelling.get(i) {
            Some(s) if s.eq_ignore_ascii_case(seg) => s.as_str(),
            _ => seg,
        })
        .collect();
    Access::EventHub(respelled.join("/"))
}

/// Checks a token on its own (signature, expiry, the policy or device it is signed for) and
/// returns its expiry in Unix seconds.
pub fn check_token(ctx: &Context, token: &str) -> Result<u64, HubError> {
    let parsed = SasToken::parse(token).map_err(|e| HubError::unauthorized(e.to_string()))?;
    let now = ctx.now_unix();
    let own_scope = parsed.path_segments().join("/");
    ctx.hub.read(|hub| match parsed.key_name() {
        // Whatever it is scoped to (on this hub): links are checked against it when attached.
        Some(_) => ctx.auth.authorize(
            hub,
            token,
            Need::Scoped {
                permissions: Permissions::NONE,
                resource: &own_scope,
            },
            now,
        ),
        None => match parsed.path_segments().as_slice() {
            ["devices", d, "modules", m, ..] => {
                ctx.auth.authorize(hub, token, Need::Module(d, m), now)
            }
            ["devices", id, ..] => ctx.auth.authorize(hub, token, Need::Device(id), now),
            _ => Err(HubError::unauthorized(
                "a token without skn must be scoped to {host}/devices/{deviceId} or {host}/devices/{deviceId}/modules/{moduleId}",
            )),
        },
    })?;
    Ok(parsed.expiry())
}

/// Checks a put-token's audience (its `name`) against the token and this hub, and returns the
/// path (segments, no host) the token may serve: the narrower of the audience and the `sr`.
///
/// The audience may carry a scheme and port (`amqps://h:5671/`, `https://h`) and a
/// percent-encoded device id (C#); it is decoded once. No audience: the `sr` alone decides.
pub fn check_audience(
    ctx: &Context,
    token: &str,
    audience: Option<&str>,
) -> Result<Vec<String>, HubError> {
    let Some(audience) = audience.filter(|a| !a.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let parsed = SasToken::parse(token).map_err(|e| HubError::unauthorized(e.to_string()))?;
    // The Node SDK's twin and method links encode the whole audience as it encodes `sr`
    // (`host%2Fdevices%2Fid`): decode it once as a whole, and then not segment by segment.
    let whole = !audience.contains('/') && audience.to_ascii_lowercase().contains("%2f");
    let decoded = if whole {
        percent_encoding::percent_decode_str(audience.trim())
            .decode_utf8()
            .map_err(|_| {
                HubError::unauthorized(format!(
                    "the put-token audience '{audience}' is not valid percent-encoded UTF-8"
                ))
            })?
            .into_owned()
    } else {
        audience.trim().to_owned()
    };
    let rest = decoded
        .split_once("://")
        .map_or(decoded.as_str(), |(_, r)| r);
    let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host_port
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host_port, |(h, _)| h);
    if !ctx.auth.is_our_host(host) {
        return Err(HubError::unauthorized(format!(
            "the put-token audience '{audience}' does not name this hub"
        )));
    }
    let mut aud = Vec::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if whole {
            aud.push(seg.to_owned());
            continue;
        }
        let seg = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| {
                HubError::unauthorized(format!(
                    "the put-token audience '{audience}' is not valid percent-encoded UTF-8"
                ))
            })?;
        aud.push(seg.into_owned());
    }
    let sr: Vec<String> = parsed
        .path_segments()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let is_prefix =
        |a: &[String], b: &[String]| a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y);
    if is_prefix(&aud, &sr) {
        Ok(Vec::new())
    } else if is_prefix(&sr, &aud) {
        Ok(aud)
    } else {
        Err(HubError::unauthorized(format!(
            "the put-token audience '{audience}' is outside the token's scope '{}'",
            parsed.resource()
        )))
    }
}

/// The tokens of one connection, shared by its links.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Mutex<TokenStore>>);

impl Tokens {
    fn lock(&self) -> MutexGuard<'_, TokenStore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a checked token, for links under `audience` (see [`TokenStore::put`]).
    pub fn put(&self, token: &str, audience: Vec<String>) {
        self.lock().put(token, audience);
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
        tokens.put(&policy_token(&ctx, REGISTRY_READ, now + 60), Vec::new());
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        tokens.put(
            &build_token("localhost/devices/d1", &key, None, now + 120).unwrap(),
            Vec::new(),
        );
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        let mut device = tokens
            .authorize_link(&ctx, Access::Device("d1".into()))
            .unwrap();
        assert!(
            tokens
                .authorize_link(&ctx, Access::Device("d2".into()))
                .is_err()
        );
        tokens.put(&policy_token(&ctx, IOTHUBOWNER, now + 60), Vec::new());
        let mut service = tokens.authorize_link(&ctx, Access::Service).unwrap();
        assert!(service.check().is_ok());
        ctx.hub.advance_clock(Duration::from_secs(90));
        assert!(service.check().is_err());
        assert!(device.check().is_ok());
        tokens.put(&policy_token(&ctx, IOTHUBOWNER, now + 600), Vec::new());
        assert!(service.check().is_ok(), "a renewed token revives the link");
    }

    #[test]
    fn put_token_audiences_must_fit_the_token_and_bound_its_links() {
        let (ctx, key) = ctx();
        let now = ctx.now_unix();
        let owner = policy_token(&ctx, IOTHUBOWNER, now + 60);
        let dev = build_token("localhost/devices/d1", &key, None, now + 60).unwrap();
        let ok = |t: &str, a: &str| check_audience(&ctx, t, Some(a));
        // What the SDKs send as `name` for a hub-wide token: the bare host, C#'s AMQP URI,
        // Python's https URI; and a device's path (C# percent-encodes the id).
        for a in [
            "localhost",
            "amqps://localhost:5671/",
            "https://LOCALHOST",
            "",
        ] {
            assert_eq!(ok(&owner, a), Ok(Vec::new()), "{a}");
        }
        assert_eq!(ok(&dev, "localhost/devices/d1"), Ok(Vec::new()));
        assert_eq!(ok(&dev, "localhost/devices/%64%31"), Ok(Vec::new()));
        // Node's twin and method links encode the whole audience.
        assert_eq!(ok(&dev, "localhost%2Fdevices%2Fd1"), Ok(Vec::new()));
        assert!(ok(&dev, "localhost%2Fdevices%2Fd2").is_err());
        assert_eq!(
            ok(&dev, "localhost"),
            Ok(Vec::new()),
            "wider audience: sr decides"
        );
        assert_eq!(
            ok(&owner, "localhost/devices/d1"),
            Ok(vec!["devices".to_owned(), "d1".to_owned()])
        );
        for bad in ["otherhub.azure-devices.net", "amqps://otherhub:5671/"] {
            assert!(ok(&owner, bad).is_err(), "{bad}");
        }
        assert!(ok(&dev, "localhost/devices/d2").is_err());
        assert!(ok(&dev, "localhost/devices/%ff").is_err());

        // An owner token put for d1's path serves d1's links only, and no service link.
        let tokens = Tokens::default();
        tokens.put(&owner, ok(&owner, "localhost/devices/d1").unwrap());
        assert!(tokens.authorize_link(&ctx, Access::Service).is_err());
        assert!(
            tokens
                .authorize_link(&ctx, Access::Device("d1".into()))
                .is_ok()
        );
        let d2 = ctx
            .hub
            .run(|hub, now| hub.create_device(Device::new("d2"), now));
        assert!(d2.is_ok());
        assert!(
            tokens
                .authorize_link(&ctx, Access::Device("d2".into()))
                .is_err()
        );
    }

    #[test]
    fn tokens_for_another_hub_are_refused_at_put_token() {
        let (ctx, key) = ctx();
        let now = ctx.now_unix();
        let p = ctx.auth.policy(IOTHUBOWNER).unwrap();
        let other = build_token(
            "otherhub.azure-devices.net",
            &p.primary_key,
            Some(&p.name),
            now + 60,
        );
        assert!(check_token(&ctx, &other.unwrap()).is_err());
        let other = build_token(
            "otherhub.azure-devices.net/devices/d1",
            &key,
            None,
            now + 60,
        );
        assert!(check_token(&ctx, &other.unwrap()).is_err());
        let narrow = build_token(
            "localhost/devices/d1",
            &p.primary_key,
            Some(&p.name),
            now + 60,
        );
        assert!(check_token(&ctx, &narrow.unwrap()).is_ok());
    }
}
