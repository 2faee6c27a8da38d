//! Service SAS tokens: hub-scoped (`sr` = the connection string's `HostName`), signed with the
//! policy key on the shared [`TokenPolicy`] (the builder's `token_lifetime` and
//! `token_renewal_margin`), and cached for HTTPS until they are due for renewal.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use iothub_protocol::client::{TokenPolicy, TokenSigner};
use iothub_protocol::connection_string::ServiceConnectionString;

use crate::Error;

/// A token and when to replace it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
    pub value: String,
    /// The token's `se` (Unix seconds).
    pub expiry_unix: u64,
    /// When to put a new one in place: the renewal margin before `se`.
    pub renew_at: Instant,
}

/// Makes tokens for one policy and caches the current one for HTTPS requests.
#[derive(Debug)]
pub(crate) struct TokenSource {
    signer: TokenSigner,
    cached: Mutex<Option<Token>>,
}

impl TokenSource {
    pub fn new(cs: &ServiceConnectionString, policy: TokenPolicy) -> Self {
        TokenSource {
            signer: TokenSigner::new(
                cs.host_name.clone(),
                cs.key.clone(),
                Some(cs.key_name.clone()),
                policy,
            ),
            cached: Mutex::new(None),
        }
    }

    /// The resource the tokens are scoped to (also the CBS audience): the hub's host name.
    pub fn audience(&self) -> &str {
        self.signer.resource()
    }

    /// A new token valid for the configured lifetime from now.
    pub fn fresh(&self) -> Result<Token, Error> {
        let signed = self.signer.sign(SystemTime::now()).map_err(|e| {
            Error::invalid_option(format!("SharedAccessKey cannot sign a SAS token: {e}"))
        })?;
        Ok(Token {
            value: signed.text,
            expiry_unix: signed.schedule.expiry,
            renew_at: Instant::now() + signed.schedule.renew_after,
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
    use std::time::{Duration, UNIX_EPOCH};

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn source(lifetime: Duration) -> TokenSource {
        let cs: ServiceConnectionString = format!(
            "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        )
        .parse()
        .unwrap();
        TokenSource::new(&cs, TokenPolicy::new(lifetime))
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
        // Three seconds: the default margin is half of it.
        let s = source(Duration::from_secs(3));
        let t = s.fresh().unwrap();
        let until_renew = t.renew_at.saturating_duration_since(Instant::now());
        assert!(
            until_renew <= Duration::from_millis(1500),
            "{until_renew:?}"
        );
        assert!(until_renew >= Duration::from_millis(400), "{until_renew:?}");
    }

    #[test]
    fn current_is_cached_until_renewal() {
        let s = source(Duration::from_secs(3600));
        let a = s.current().unwrap();
        let b = s.current().unwrap();
        assert_eq!(a, b);
    }
}
