//! What the Rust device and service clients share besides the wire format: the defaults of
//! their common options, when the SAS tokens they sign expire and are renewed, how a `:port`
//! written in a host name is read, how an error answer from the hub becomes an [`ErrorCode`]
//! and a message, and the [`Cause`] their errors keep as `source()`.
//!
//! Both clients expose these under the same builder option names (`token_lifetime`,
//! `token_renewal_margin`, `connect_timeout`, `request_timeout`, `trust_ca_pem`,
//! `trust_ca_file`, `trust_ca_from_env`, `platform_roots`), so a program that uses both learns
//! one vocabulary, and the two cannot drift apart.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{ErrorBody, ErrorCode};
use crate::sas::{self, SasError};

/// Default lifetime of the SAS tokens a client signs: one hour, as the official SDKs.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Default time before expiry at which a signed token is replaced: two minutes (the Python
/// SDK's renewal buffer), but never more than half the token's lifetime.
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(120);
/// The shortest token lifetime a client accepts: `se` has one-second resolution, and renewal
/// needs some room before expiry.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2);
/// Default limit for opening a connection (TCP, TLS and the protocol's handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for one request, from the call until the hub's answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable both clients read for an extra CA to trust: a path to a PEM file,
/// or the PEM text itself. The emulator's `env` command exports it.
pub const CA_CERT_ENV: &str = "IOTHUB_CA_CERT";

/// How long the tokens a client signs live and when they are replaced.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use iothub_protocol::client::TokenPolicy;
///
/// let policy = TokenPolicy::new(Duration::from_secs(3600));
/// let s = policy.schedule(UNIX_EPOCH + Duration::from_secs(1_000));
/// assert_eq!(s.expiry, 4_600);
/// assert_eq!(s.renew_after, Duration::from_secs(3600 - 120));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// How long each token is valid (`token_lifetime`).
    pub lifetime: Duration,
    /// How long before expiry a token is replaced (`token_renewal_margin`); `None` for
    /// [`DEFAULT_RENEWAL_MARGIN`] capped at half the lifetime.
    pub renewal_margin: Option<Duration>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy::new(DEFAULT_TOKEN_LIFETIME)
    }
}

/// When a token signed at some instant expires and should be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSchedule {
    /// The token's `se`, in Unix seconds.
    pub expiry: u64,
    /// Time from signing until the token expires.
    pub valid_for: Duration,
    /// Time from signing until the token should be replaced.
    pub renew_after: Duration,
}

impl TokenPolicy {
    /// Tokens that live `lifetime`, renewed at the default margin.
    pub fn new(lifetime: Duration) -> Self {
        TokenPolicy {
            lifetime,
            renewal_margin: None,
        }
    }

    /// The margin in force: the one set, else two minutes or half the lifetime, whichever is
    /// shorter.
    pub fn renewal_margin(&self) -> Duration {
        self.renewal_margin
            .unwrap_or_else(|| DEFAULT_RENEWAL_MARGIN.min(self.lifetime / 2))
    }

    /// Checks the lifetime and margin; the error names the builder options at fault.
    pub fn validate(&self) -> Result<(), String> {
        let secs = |d: Duration| d.as_secs_f64();
        if self.lifetime < MIN_TOKEN_LIFETIME {
            return Err(format!(
                "token_lifetime is {:.3} s, too short; it must be at least {} s",
                secs(self.lifetime),
                MIN_TOKEN_LIFETIME.as_secs()
            ));
        }
        let margin = self.renewal_margin();
        if margin >= self.lifetime {
            return Err(format!(
                "token_renewal_margin ({:.3} s) must be shorter than token_lifetime ({:.3} s)",
                secs(margin),
                secs(self.lifetime)
            ));
        }
        Ok(())
    }

    /// The schedule of a token signed at `now`.
    ///
    /// `se` is whole seconds: the lifetime is rounded up so a token never lives shorter than
    /// asked, and renewal is measured from the exact expiry instant.
    pub fn schedule(&self, now: SystemTime) -> TokenSchedule {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let lifetime = self.lifetime.as_secs() + u64::from(self.lifetime.subsec_nanos() > 0);
        let expiry = now.as_secs().saturating_add(lifetime);
        let valid_for = Duration::from_secs(expiry).saturating_sub(now);
        TokenSchedule {
            expiry,
            valid_for,
            renew_after: valid_for.saturating_sub(self.renewal_margin()),
        }
    }
}

/// Signs SAS tokens for one resource with one key, on a [`TokenPolicy`].
///
/// The device client signs for `{HostName}/devices/{deviceId}` with the device key, the
/// service client for `{HostName}` with a policy key. `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenSigner {
    resource: String,
    key: String,
    key_name: Option<String>,
    policy: TokenPolicy,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("resource", &self.resource)
            .field("key_name", &self.key_name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A token a [`TokenSigner`] made, with its schedule. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedToken {
    /// The whole `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` text.
    pub text: String,
    /// When it expires and should be replaced.
    pub schedule: TokenSchedule,
}

impl fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedToken")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for `resource` (unencoded) with the base64 `key` and, for a policy key, its
    /// name (`skn`).
    pub fn new(
        resource: impl Into<String>,
        key: impl Into<String>,
        key_name: Option<String>,
        policy: TokenPolicy,
    ) -> Self {
        TokenSigner {
            resource: resource.into(),
            key: key.into(),
            key_name,
            policy,
        }
    }

    /// The resource the tokens are scoped to (`sr`, unencoded).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The policy the tokens follow.
    pub fn policy(&self) -> TokenPolicy {
        self.policy
    }

    /// A token signed at `now`. Fails only for a key that is not base64.
    pub fn sign(&self, now: SystemTime) -> Result<SignedToken, SasError> {
        let schedule = self.policy.schedule(now);
        let text = sas::build_token(
            &self.resource,
            &self.key,
            self.key_name.as_deref(),
            schedule.expiry,
        )?;
        Ok(SignedToken { text, schedule })
    }
}

/// Splits `host[:port]`, as `HostName` and `GatewayHostName` may be written, into the host and
/// the port (`None` when none is written).
pub fn split_host_port(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// Where a client opens its main connection: the host without a port, and the port option if
/// one was set, else the `:port` written in the host name (as the Node SDKs honour it), else
/// the protocol's standard port.
///
/// ```
/// use iothub_protocol::client::endpoint;
///
/// assert_eq!(endpoint("localhost:18883", None, 8883), ("localhost", 18883));
/// assert_eq!(endpoint("localhost:18883", Some(1234), 8883), ("localhost", 1234));
/// assert_eq!(endpoint("myhub.azure-devices.net", None, 8883), ("myhub.azure-devices.net", 8883));
/// ```
pub fn endpoint(host: &str, port: Option<u16>, standard_port: u16) -> (&str, u16) {
    let (name, written) = split_host_port(host);
    (name, port.or(written).unwrap_or(standard_port))
}

/// An error answer from the hub, reduced to what a client needs to pick its error variant:
/// the hub's [`ErrorCode`] when it gave one, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubReply {
    /// The HTTP status, for an HTTPS answer.
    pub status: Option<u16>,
    /// The hub's error code: from `iothub-errorcode` or the body over HTTPS, from the error
    /// condition over AMQP.
    pub code: Option<ErrorCode>,
    /// The AMQP error condition (or outcome), for an AMQP answer.
    pub condition: Option<String>,
    /// The hub's text, or a stand-in naming the status when it sent none.
    pub message: String,
}

impl HubReply {
    /// Reads an HTTPS error answer: the code comes from the `iothub-errorcode` header, else from
    /// the body's `ErrorCode:<Name>;<text>` (iothub-protocol.md 6.4); the message is the body's
    /// text.
    pub fn from_http(status: u16, error_code_header: Option<&str>, body: &[u8]) -> Self {
        let (body_code, text) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => {
                let (code, text) = b.parse_message();
                let text = if text.is_empty() {
                    b.message.clone()
                } else {
                    text.to_owned()
                };
                (code, text)
            }
            Err(_) => (None, String::from_utf8_lossy(body).trim().to_owned()),
        };
        let code = error_code_header
            .and_then(|h| ErrorCode::from_name(h.trim()))
            .or(body_code);
        HubReply {
            status: Some(status),
            code,
            condition: None,
            message: if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text
            },
        }
    }

    /// The code, or else the one the status stands for on the route that was called
    /// (`by_status`), when the hub sent none.
    pub fn code_or(&self, by_status: impl FnOnce(u16) -> Option<ErrorCode>) -> Option<ErrorCode> {
        self.code.or_else(|| self.status.and_then(by_status))
    }
}

/// True for a hub error on its side (HTTP 5xx, or a code in the 5xx range): trying again
/// later may succeed. Both clients' `is_transient` use it.
pub fn is_server_error(status: Option<u16>, code: Option<ErrorCode>) -> bool {
    status.is_some_and(|s| s >= 500) || code.is_some_and(|c| c.http_status() >= 500)
}

/// The underlying error kept in a client error as its `source()`.
///
/// Shared, so client errors stay `Clone` (the device client hands the error that stopped it to
/// every caller). Two causes compare equal when they are the same error or read the same.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// Keeps a boxed error as a cause.
    pub fn from_boxed(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Cause(Arc::from(error))
    }

    /// The error itself, e.g. to downcast it.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// An error and its causes on one line, `what failed: why: root cause`, for logs and for
/// programs that print an error (the clients' messages do not repeat their causes).
pub fn display_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let text = e.to_string();
        // A wrapper that displays as its inner error adds nothing.
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn the_schedule_rounds_the_lifetime_up_and_renews_before_the_exact_expiry() {
        let p = TokenPolicy::new(Duration::from_secs(3600));
        let s = p.schedule(at(1_700_000_000, 250));
        assert_eq!(s.expiry, 1_700_003_600);
        assert_eq!(s.valid_for, Duration::from_millis(3_599_750));
        assert_eq!(s.renew_after, Duration::from_millis(3_479_750));

        let p = TokenPolicy {
            lifetime: Duration::from_millis(2500),
            renewal_margin: Some(Duration::from_secs(1)),
        };
        let s = p.schedule(at(10, 900));
        assert_eq!(s.expiry, 13);
        assert_eq!(s.valid_for, Duration::from_millis(2100));
        assert_eq!(s.renew_after, Duration::from_millis(1100));
    }

    #[test]
    fn the_default_margin_is_two_minutes_or_half_the_lifetime() {
        assert_eq!(
            TokenPolicy::default().renewal_margin(),
            DEFAULT_RENEWAL_MARGIN
        );
        let short = TokenPolicy::new(Duration::from_secs(3));
        assert_eq!(short.renewal_margin(), Duration::from_millis(1500));
        assert_eq!(short.validate(), Ok(()));
    }

    #[test]
    fn bad_policies_name_the_option_at_fault() {
        let e = TokenPolicy::new(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(
            e.contains("token_lifetime") && e.contains("too short"),
            "{e}"
        );
        let e = TokenPolicy {
            lifetime: Duration::from_secs(10),
            renewal_margin: Some(Duration::from_secs(10)),
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("token_renewal_margin"), "{e}");
    }

    #[test]
    fn signed_tokens_verify_and_hide_in_debug() {
        let signer = TokenSigner::new(
            "h.example/devices/d",
            KEY,
            None,
            TokenPolicy::new(Duration::from_secs(60)),
        );
        let t = signer.sign(at(100, 0)).unwrap();
        let parsed = sas::SasToken::parse(&t.text).unwrap();
        assert_eq!(parsed.verify_signature(KEY), Ok(()));
        assert_eq!(parsed.expiry(), 160);
        assert!(!format!("{t:?}{signer:?}").contains(KEY));
        assert!(!format!("{t:?}").contains("sig="));
    }

    #[test]
    fn host_ports_are_split_and_resolved() {
        assert_eq!(split_host_port("localhost:5671"), ("localhost", Some(5671)));
        assert_eq!(split_host_port("h.example"), ("h.example", None));
        assert_eq!(endpoint("edge.local:9999", None, 443), ("edge.local", 9999));
        assert_eq!(endpoint("h", Some(1), 443), ("h", 1));
        assert_eq!(endpoint("h", None, 443), ("h", 443));
    }

    #[test]
    fn http_replies_use_header_then_body_then_status() {
        let body =
            br#"{"Message":"ErrorCode:DeviceNotFound;dev1","ExceptionMessage":"Tracking ID:x"}"#;
        let r = HubReply::from_http(404, Some(" DeviceNotFound "), body);
        assert_eq!(r.code, Some(ErrorCode::DeviceNotFound));
        assert_eq!(r.message, "dev1");
        let r = HubReply::from_http(404, None, body);
        assert_eq!(r.code, Some(ErrorCode::DeviceNotFound));
        let r = HubReply::from_http(409, Some("DeviceAlreadyExists"), b"oops");
        assert_eq!(
            (r.code, r.message.as_str()),
            (Some(ErrorCode::DeviceAlreadyExists), "oops")
        );
        let r = HubReply::from_http(503, None, b"");
        assert_eq!((r.code, r.message.as_str()), (None, "HTTP 503"));
        let guess = |s| (s == 503).then_some(ErrorCode::ServiceUnavailable);
        assert_eq!(r.code_or(guess), Some(ErrorCode::ServiceUnavailable));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_compare_by_text_and_chains_print_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(Cause::new(io()), Cause::new(io()));
        assert_ne!(Cause::new(io()), Cause::new(std::io::Error::other("other")));
        let c = Cause::new(Outer(io()));
        assert_eq!(c.to_string(), "outer");
        assert_eq!(display_chain(&c), "outer: refused");
        assert!(c.get_ref().downcast_ref::<Outer>().is_some());
    }
}
