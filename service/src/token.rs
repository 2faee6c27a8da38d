//! Service SAS tokens: hub-scoped (`sr` = the connection string's `HostName`), signed with the
//! policy key, valid for a configurable lifetime, and renewed before they expire.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iothub_protocol::connection_string::ServiceConnectionString;
use iothub_protocol::sas::build_token;

use crate::Error;

/// The shortest token lifetime accepted: `se` has one-second resolution, and renewal needs
/// some room before expiry.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2);

/// A token and when to replace it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
    pub value: String,
    /// The token's `se` (Unix seconds).
    pub expiry_unix: u64,
    /// When to put a new one in place: well before `se`.
    pub renew_at: Instant,
}

/// Makes tokens for one policy and caches the current one for HTTPS requests.
#[derive(Debug)]
pub(crate) struct TokenSource {
    host_name: String,
    key_name: String,
    key: String,
    lifetime: Duration,
    cached: Mutex<Option<Token>>,
}

impl TokenSource {
    pub fn new(cs: &ServiceConnectionString, lifetime: Duration) -> Self {
        TokenSource {
            host_name: cs.host_name.clone(),
            key_name: cs.key_name.clone(),
            key: cs.key.clone(),
            lifetime,
            cached: Mutex::new(None),
        }
    }

    /// The resource the tokens are scoped to (also the CBS audience): the hub's host name.
    pub fn audience(&self) -> &str {
        &self.host_name
    }

    /// A new token valid for the configured lifetime from now.
    ///
    /// `se` is the current second plus the lifetime, so the token is valid for at least
    /// `lifetime - 1s`; it is due for renewal after four fifths of that.
    pub fn fresh(&self) -> Result<Token, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let lifetime_secs = self.lifetime.as_secs().max(1);
        let expiry_unix = now + lifetime_secs;
        let value = build_token(
            &self.host_name,
            &self.key,
            Some(&self.key_name),
            expiry_unix,
        )
        .map_err(|e| Error::config(format!("cannot sign a SAS token: {e}")))?;
        let usable = Duration::from_secs(lifetime_secs - 1);
        Ok(Token {
            value,
            expiry_unix,
            renew_at: Instant::now() + usable * 4 / 5,
        })
    }

    /// The cached token while it is not due for renewal, else a fresh one (for HTTPS).
    pub fn current(&self) -> Result<String, Error> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        let t = self.fresh()?;
        let value = t.value.clone();
        *cached = Some(t);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_protocol::sas::SasToken;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn source(lifetime: Duration) -> TokenSource {
        let cs: ServiceConnectionString = format!(
            "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        )
        .parse()
        .unwrap();
        TokenSource::new(&cs, lifetime)
    }

    #[test]
    fn tokens_are_hub_scoped_and_signed_with_the_policy() {
        let s = source(Duration::from_secs(3600));
        let t = s.fresh().unwrap();
        let parsed = SasToken::parse(&t.value).unwrap();
        assert_eq!(parsed.resource(), "myhub.azure-devices.net");
        assert_eq!(parsed.key_name(), Some("service"));
        assert_eq!(parsed.verify_signature(KEY), Ok(()));
        assert_eq!(parsed.expiry(), t.expiry_unix);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now + 3599..=now + 3601).contains(&t.expiry_unix));
        assert_eq!(s.audience(), "myhub.azure-devices.net");
    }

    #[test]
    fn renewal_is_due_well_before_expiry() {
        let s = source(Duration::from_secs(3));
        let t = s.fresh().unwrap();
        let until_renew = t.renew_at.saturating_duration_since(Instant::now());
        assert!(
            until_renew <= Duration::from_millis(1600),
            "{until_renew:?}"
        );
        assert!(
            until_renew >= Duration::from_millis(1500),
            "{until_renew:?}"
        );
    }

    #[test]
    fn current_is_cached_until_renewal() {
        let s = source(Duration::from_secs(3600));
        let a = s.current().unwrap();
        let b = s.current().unwrap();
        assert_eq!(a, b);
    }
}
