//! SAS tokens for the device: signed from the key on the shared [`TokenPolicy`] (the builder's
//! `token_lifetime` and `token_renewal_margin`) and renewed before expiry, or a ready-made
//! token used as given (iothub-protocol.md 7.1, 7.2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub_protocol::client::{TokenPolicy, TokenSigner};
use iothub_protocol::connection_string::{DeviceConnectionString, DeviceCredential};
use iothub_protocol::sas::SasToken;

use crate::error::Error;

/// Where the device's tokens come from.
#[derive(Clone)]
enum Source {
    /// Signed by the client.
    Key(TokenSigner),
    /// Given in the connection string.
    Fixed(SasToken),
}

/// Issues tokens scoped to `{HostName}/devices/{deviceId}`, or for a module to
/// `{HostName}/devices/{deviceId}/modules/{moduleId}` (iothub-beyond-c2d.md 4).
#[derive(Clone)]
pub(crate) struct Auth {
    source: Source,
}

/// A token and when to stop using it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The whole `SharedAccessSignature ...` text.
    pub text: String,
    /// Its `se`, unix seconds.
    pub expiry: u64,
    /// Time from issue until it should be replaced: `expiry - margin` for a signed token;
    /// `None` for a ready-made one, which cannot be replaced.
    pub renew_after: Option<Duration>,
    /// Time from issue until it expires.
    pub valid_for: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expiry", &self.expiry)
            .field("renew_after", &self.renew_after)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Token issuing for this connection string. The credential must be a key or a token
    /// (X.509 is refused earlier).
    pub fn new(conn: &DeviceConnectionString, policy: TokenPolicy) -> Result<Auth, Error> {
        let resource = match &conn.module_id {
            None => format!("{}/devices/{}", conn.host_name, conn.device_id),
            Some(m) => format!("{}/devices/{}/modules/{m}", conn.host_name, conn.device_id),
        };
        let source =
            match &conn.credential {
                DeviceCredential::SharedAccessKey { key, key_name } => Source::Key(
                    TokenSigner::new(resource, key.clone(), key_name.clone(), policy),
                ),
                DeviceCredential::SharedAccessSignature(token) => Source::Fixed(token.clone()),
                DeviceCredential::X509 => {
                    return Err(Error::Unsupported {
                        what: "X.509 authentication (x509=true)",
                    });
                }
            };
        Ok(Auth { source })
    }

    /// The resource tokens are scoped to, unencoded.
    #[cfg(test)]
    pub fn resource(&self) -> &str {
        match &self.source {
            Source::Key(signer) => signer.resource(),
            Source::Fixed(token) => token.resource(),
        }
    }

    /// True when the client signs (and can renew) its own tokens.
    #[cfg(test)]
    pub fn renewable(&self) -> bool {
        matches!(self.source, Source::Key(_))
    }

    /// A token to use at `now`: freshly signed, or the ready-made one if it has not expired.
    pub fn issue(&self, now: SystemTime) -> Result<Token, Error> {
        match &self.source {
            Source::Key(signer) => {
                let signed = signer
                    .sign(now)
                    .map_err(|e| Error::invalid_option(format!("SharedAccessKey: {e}")))?;
                Ok(Token {
                    text: signed.text,
                    expiry: signed.schedule.expiry,
                    renew_after: Some(signed.schedule.renew_after),
                    valid_for: signed.schedule.valid_for,
                })
            }
            Source::Fixed(token) => {
                let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                let expiry = token.expiry();
                let valid_for = Duration::from_secs(expiry).saturating_sub(since_epoch);
                if valid_for.is_zero() {
                    return Err(Error::TokenExpired { expired_at: expiry });
                }
                Ok(Token {
                    text: token.as_str().to_owned(),
                    expiry,
                    renew_after: None,
                    valid_for,
                })
            }
        }
    }
}

/// The last token issued, reused until it is due for renewal (HTTPS).
pub(crate) struct TokenCache {
    auth: Auth,
    current: Option<(Token, SystemTime)>,
}

impl TokenCache {
    pub fn new(auth: Auth) -> Self {
        TokenCache {
            auth,
            current: None,
        }
    }

    /// The token to send at `now`.
    pub fn get(&mut self, now: SystemTime) -> Result<String, Error> {
        if let Some((token, issued)) = &self.current {
            let age = now.duration_since(*issued).unwrap_or_default();
            let limit = token.renew_after.unwrap_or(token.valid_for);
            if age < limit {
                return Ok(token.text.clone());
            }
        }
        let token = self.auth.issue(now)?;
        let text = token.text.clone();
        self.current = Some((token, now));
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_protocol::sas;
    use std::str::FromStr;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

    fn policy(lifetime: Duration, margin: Duration) -> TokenPolicy {
        TokenPolicy {
            lifetime,
            renewal_margin: Some(margin),
        }
    }

    fn auth(cs: &str, lifetime: u64, margin: u64) -> Auth {
        let conn = DeviceConnectionString::from_str(cs).unwrap();
        Auth::new(
            &conn,
            policy(Duration::from_secs(lifetime), Duration::from_secs(margin)),
        )
        .unwrap()
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn signs_for_hostname_and_device_with_the_lifetime() {
        let a = auth(
            &format!(
                "HostName=hub.example.net;DeviceId=dev:1;SharedAccessKey={KEY};GatewayHostName=edge"
            ),
            3600,
            120,
        );
        assert_eq!(a.resource(), "hub.example.net/devices/dev:1");
        let t = a.issue(at(1_700_000_000, 250)).unwrap();
        assert_eq!(t.expiry, 1_700_003_600);
        assert_eq!(
            t.text,
            sas::build_token("hub.example.net/devices/dev:1", KEY, None, 1_700_003_600).unwrap()
        );
        assert!(t.text.contains("sr=hub.example.net%2Fdevices%2Fdev%3A1&"));
        let parsed = SasToken::parse(&t.text).unwrap();
        assert_eq!(parsed.verify_signature(KEY), Ok(()));
        assert_eq!(parsed.key_name(), None);
        // Renewal is due `margin` before the exact expiry instant.
        assert_eq!(t.valid_for, Duration::from_millis(3_599_750));
        assert_eq!(t.renew_after, Some(Duration::from_millis(3_479_750)));
    }

    #[test]
    fn a_module_signs_for_its_own_resource() {
        let a = auth(
            &format!("HostName=hub.example.net;DeviceId=d1;ModuleId=m1;SharedAccessKey={KEY}"),
            3600,
            120,
        );
        assert_eq!(a.resource(), "hub.example.net/devices/d1/modules/m1");
        let t = a.issue(at(1_700_000_000, 0)).unwrap();
        assert!(
            t.text
                .contains("sr=hub.example.net%2Fdevices%2Fd1%2Fmodules%2Fm1&"),
            "{}",
            t.text
        );
        assert_eq!(
            SasToken::parse(&t.text).unwrap().verify_signature(KEY),
            Ok(())
        );
    }

    #[test]
    fn a_policy_key_adds_skn() {
        let a = auth(
            &format!(
                "HostName=h.example;DeviceId=d;SharedAccessKeyName=device;SharedAccessKey={KEY}"
            ),
            60,
            10,
        );
        let t = SasToken::parse(&a.issue(at(100, 0)).unwrap().text).unwrap();
        assert_eq!(t.key_name(), Some("device"));
    }

    #[test]
    fn short_lifetimes_renew_before_expiry() {
        let a = Auth::new(
            &DeviceConnectionString::from_str(&format!(
                "HostName=h.example;DeviceId=d;SharedAccessKey={KEY}"
            ))
            .unwrap(),
            policy(Duration::from_millis(2500), Duration::from_secs(1)),
        )
        .unwrap();
        let t = a.issue(at(10, 900)).unwrap();
        // 2.5 s rounds up to 3 s of `se`; renewal 1 s before the expiry instant.
        assert_eq!(t.expiry, 13);
        assert_eq!(t.valid_for, Duration::from_millis(2100));
        assert_eq!(t.renew_after, Some(Duration::from_millis(1100)));
        assert!(a.renewable());
    }

    #[test]
    fn a_ready_made_token_is_used_as_is_until_it_expires() {
        let token = sas::build_token("h.example/devices/d", KEY, None, 1000).unwrap();
        let a = auth(
            &format!("HostName=h.example;DeviceId=d;SharedAccessSignature={token}"),
            3600,
            120,
        );
        assert!(!a.renewable());
        let t = a.issue(at(990, 500)).unwrap();
        assert_eq!(t.text, token);
        assert_eq!(t.renew_after, None);
        assert_eq!(t.valid_for, Duration::from_millis(9500));
        assert_eq!(
            a.issue(at(1000, 0)).unwrap_err(),
            Error::TokenExpired { expired_at: 1000 }
        );
    }

    #[test]
    fn the_cache_renews_when_due() {
        let a = auth(
            &format!("HostName=h.example;DeviceId=d;SharedAccessKey={KEY}"),
            10,
            4,
        );
        let mut cache = TokenCache::new(a);
        let first = cache.get(at(100, 0)).unwrap();
        assert_eq!(cache.get(at(105, 999)).unwrap(), first);
        let second = cache.get(at(106, 0)).unwrap();
        assert_ne!(second, first);
        assert!(second.contains("se=116"));
    }
}
