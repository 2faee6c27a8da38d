//! Shared access signature tokens (iothub-protocol.md 7.1, 7.2).
//!
//! A token is `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]`,
//! where the signature is HMAC-SHA256, keyed with the base64-decoded key, over
//! `{sr}\n{se}`. The clients build tokens with [`build_token`]; the emulator parses what an SDK
//! sent with [`SasToken::parse`] and then checks it with [`SasToken::verify_signature`],
//! [`SasToken::check_expiry`] and [`SasToken::covers`].
//!
//! The SDKs do not agree on how a token is spelled, so parsing is lenient where that cannot
//! weaken the check and strict where it could:
//!
//! * Fields come in any order (Python puts `skn` last, Node before `se`); unknown fields are
//!   ignored; a field given twice is rejected, because two readers could pick different copies.
//! * `sr` may be encoded with upper-case hex (C#, Node, Python device), lower-case hex (C SDK) or
//!   not at all (Python service SDK). The signature is verified against the `sr` and `se` text
//!   **exactly as it appeared**, so every spelling verifies when it was signed that way, and no
//!   re-spelling of a signed token verifies.
//! * `sig` may be fully percent-encoded or only partly (Python REST leaves `/` literal); it is
//!   percent-decoded before its base64 is compared.
//! * `skn` is not covered by the signature; it only tells the verifier which policy key to use.
//!
//! Scope is a prefix by path segment on the percent-decoded `sr`: the host is compared without
//! case and without a `:port`, the path segments with case, because device ids are
//! case-sensitive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

/// The word every token starts with, followed by whitespace.
pub const TOKEN_PREFIX: &str = "SharedAccessSignature";

/// What `encodeURIComponent`-style encoding leaves alone. We use Python's `quote(safe="")` set
/// (the RFC 3986 unreserved characters), the strictest of the SDKs' encoders: the hub and the
/// emulator verify against the text as sent, so any consistent choice works.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

type HmacSha256 = Hmac<Sha256>;

/// Why a token could not be built, parsed or accepted.
///
/// No message contains a key or a signature, so these can be logged and sent back to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// The token is not shaped like `SharedAccessSignature sr=..&sig=..&se=..`.
    #[error("the SAS token is malformed: {reason}")]
    Malformed {
        /// What is wrong, naming the field where there is one.
        reason: &'static str,
    },
    /// A required field (`sr`, `sig` or `se`) is absent.
    #[error("the SAS token has no `{0}` field; a token needs sr, sig and se")]
    MissingField(&'static str),
    /// A field appears more than once.
    #[error("the SAS token has more than one `{0}` field; give each field once")]
    DuplicateField(&'static str),
    /// The key is not base64, or is empty.
    #[error(
        "the shared access key is not valid base64 or is empty; use the key exactly as the hub shows it"
    )]
    InvalidKey,
    /// The signature was not made with this key over this token's `sr` and `se`.
    #[error(
        "the SAS token's signature does not match: it was signed with another key, or sr/se were changed after signing"
    )]
    SignatureMismatch,
    /// The token's expiry time has passed.
    #[error(
        "the SAS token expired at {expiry} (unix seconds) and it is now {now}; make a new token"
    )]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The time it was checked at.
        now: u64,
    },
}

/// Percent-encodes `s` as `sr`, `sig` and `skn` values are encoded: everything except ASCII
/// letters, digits and `- . _ ~`, with upper-case hex (so `/` becomes `%2F`).
fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Decodes a base64 key into the HMAC key bytes; an empty key is refused.
pub(crate) fn decode_key(key_base64: &str) -> Result<Vec<u8>, SasError> {
    match STANDARD.decode(key_base64) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(SasError::InvalidKey),
    }
}

/// A MAC keyed with the decoded key and fed `{sr}\n{se}`.
fn mac_over(key_base64: &str, string_to_sign: &str) -> Result<HmacSha256, SasError> {
    let key = decode_key(key_base64)?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SasError::InvalidKey)?;
    mac.update(string_to_sign.as_bytes());
    Ok(mac)
}

/// Signs `string_to_sign` with a base64 key: base64 of HMAC-SHA256 with the decoded key.
///
/// The result is plain base64 (not percent-encoded).
pub fn sign(key_base64: &str, string_to_sign: &str) -> Result<String, SasError> {
    let mac = mac_over(key_base64, string_to_sign)?;
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Builds a token for `resource_uri` (no scheme, e.g. `myhub.azure-devices.net/devices/dev1`),
/// valid until `expiry_unix` (seconds since 1970-01-01 UTC).
///
/// `sr` is `resource_uri` percent-encoded with upper-case hex, the string signed is
/// `{encoded sr}\n{expiry}`, and the signature is base64 then percent-encoded. `key_name` is
/// the policy name for `skn` (omit it for a device's own key).
pub fn build_token(
    resource_uri: &str,
    key_base64: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    let sr = encode_component(resource_uri);
    let sig = sign(key_base64, &format!("{sr}\n{expiry_unix}"))?;
    let mut token = format!(
        "{TOKEN_PREFIX} sr={sr}&sig={}&se={expiry_unix}",
        encode_component(&sig)
    );
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&encode_component(name));
    }
    Ok(token)
}

/// Builds a token the way the Event Hubs and Service Bus clients do, for an `sb://` audience:
/// the same text as [`build_token`], but the HMAC key is the key's *text* (never
/// base64-decoded), which is what the built-in Event Hubs-compatible endpoint checks.
/// See [`SasToken::verify_signature_with_key_text`].
pub fn build_token_with_key_text(
    resource_uri: &str,
    key_text: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    if key_text.is_empty() {
        return Err(SasError::InvalidKey);
    }
    let sr = encode_component(resource_uri);
    let mut mac =
        HmacSha256::new_from_slice(key_text.as_bytes()).map_err(|_| SasError::InvalidKey)?;
    mac.update(format!("{sr}\n{expiry_unix}").as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let mut token = format!(
        "{TOKEN_PREFIX} sr={sr}&sig={}&se={expiry_unix}",
        encode_component(&sig)
    );
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&encode_component(name));
    }
    Ok(token)
}

/// A parsed token, keeping the text that was signed so it can be verified as sent.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The whole token, trimmed.
    text: String,
    /// `sr` exactly as it appeared.
    raw_sr: String,
    /// `se` exactly as it appeared (all digits).
    raw_se: String,
    /// `sr` percent-decoded.
    resource: String,
    /// `sig` percent-decoded: base64 text.
    signature: String,
    /// `se` as a number.
    expiry: u64,
    /// `skn` percent-decoded.
    key_name: Option<String>,
}

impl SasToken {
    /// Parses a token such as an MQTT password, an `Authorization` header or a CBS put-token
    /// body.
    ///
    /// The `SharedAccessSignature` prefix is required (case-sensitive, followed by
    /// whitespace); whitespace around the token is ignored. Fields may come in any order,
    /// unknown fields and empty `&&` parts are ignored, and `sr`, `sig`, `se`, `skn` may each
    /// appear once. `se` must be a decimal number.
    pub fn parse(s: &str) -> Result<SasToken, SasError> {
        let text = s.trim();
        let fields = text
            .strip_prefix(TOKEN_PREFIX)
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .ok_or(SasError::Malformed {
                reason: "it does not start with `SharedAccessSignature ` followed by fields",
            })?
            .trim_start();

        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for part in fields.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or(SasError::Malformed {
                reason: "a field has no `=`; fields are `name=value` separated by `&`",
            })?;
            let (slot, field) = match name {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::DuplicateField(field));
            }
        }

        let raw_sr = sr.ok_or(SasError::MissingField("sr"))?;
        let sig = sig.ok_or(SasError::MissingField("sig"))?;
        let raw_se = se.ok_or(SasError::MissingField("se"))?;

        if raw_sr.is_empty() {
            return Err(SasError::Malformed {
                reason: "`sr` is empty; it names the hub or device the token is for",
            });
        }
        if sig.is_empty() {
            return Err(SasError::Malformed {
                reason: "`sig` is empty",
            });
        }
        let expiry = parse_expiry(raw_se)?;
        let resource = decode(raw_sr, "`sr` is not valid percent-encoded UTF-8")?;
        let signature = decode(sig, "`sig` is not valid percent-encoded UTF-8")?;
        let key_name = match skn {
            None => None,
            Some("") => {
                return Err(SasError::Malformed {
                    reason: "`skn` is empty; omit it for a device key or give the policy name",
                });
            }
            Some(name) => Some(decode(name, "`skn` is not valid percent-encoded UTF-8")?),
        };

        Ok(SasToken {
            text: text.to_owned(),
            raw_sr: raw_sr.to_owned(),
            raw_se: raw_se.to_owned(),
            resource,
            signature,
            expiry,
            key_name,
        })
    }

    /// The whole token text (trimmed), as it would be sent again.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `sr` exactly as it appeared in the token, still encoded: the text that was signed.
    pub fn raw_sr(&self) -> &str {
        &self.raw_sr
    }

    /// The resource the token is for: `sr` percent-decoded, e.g.
    /// `myhub.azure-devices.net/devices/dev1`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The signature: `sig` percent-decoded, i.e. base64 text.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The expiry time in seconds since 1970-01-01 UTC (`se`).
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The policy name (`skn`, percent-decoded), absent for tokens signed with a device key.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// The host of [`resource`](Self::resource), without any `scheme://` or `:port`, in the
    /// case the token used. Compare it case-insensitively.
    pub fn host(&self) -> &str {
        split_resource(&self.resource).0
    }

    /// The path segments of [`resource`](Self::resource), e.g. `["devices", "dev1"]`; empty
    /// segments (from `//` or a trailing `/`) are skipped.
    pub fn path_segments(&self) -> Vec<&str> {
        split_resource(&self.resource).1.collect()
    }

    /// Checks that the token was signed with `key_base64` over its `sr` and `se` as sent.
    ///
    /// The comparison is constant-time. A `sig` that is not base64 is a mismatch. Fails with
    /// [`SasError::InvalidKey`] when the key itself is not base64.
    pub fn verify_signature(&self, key_base64: &str) -> Result<(), SasError> {
        let mac = mac_over(key_base64, &format!("{}\n{}", self.raw_sr, self.raw_se))?;
        let sig = STANDARD
            .decode(&self.signature)
            .map_err(|_| SasError::SignatureMismatch)?;
        mac.verify_slice(&sig)
            .map_err(|_| SasError::SignatureMismatch)
    }

    /// Checks that the token was signed with the key's *text* as the HMAC key, the way the
    /// Event Hubs and Service Bus clients sign (they never base64-decode the key). Use it only
    /// for `sb://` audiences: an IoT Hub token signed so would be a forgery of nothing, but the
    /// IoT SDKs never sign that way.
    pub fn verify_signature_with_key_text(&self, key_text: &str) -> Result<(), SasError> {
        if key_text.is_empty() {
            return Err(SasError::InvalidKey);
        }
        let mut mac =
            HmacSha256::new_from_slice(key_text.as_bytes()).map_err(|_| SasError::InvalidKey)?;
        mac.update(format!("{}\n{}", self.raw_sr, self.raw_se).as_bytes());
        let sig = STANDARD
            .decode(&self.signature)
            .map_err(|_| SasError::SignatureMismatch)?;
        mac.verify_slice(&sig)
            .map_err(|_| SasError::SignatureMismatch)
    }

    /// True when the token's audience is an `sb://` URI (an Event Hubs client signed it).
    pub fn is_service_bus_audience(&self) -> bool {
        self.resource
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("sb://"))
    }

    /// Checks that the token has not expired at `now_unix`: it is expired once `se <= now`.
    pub fn check_expiry(&self, now_unix: u64) -> Result<(), SasError> {
        if self.expiry <= now_unix {
            Err(SasError::Expired {
                expiry: self.expiry,
                now: now_unix,
            })
        } else {
            Ok(())
        }
    }

    /// Whether the token's scope includes `resource` (given decoded, e.g.
    /// `myhub.azure-devices.net/devices/dev1/messages/events`; it is not decoded again).
    ///
    /// The hosts must be equal ignoring ASCII case, a `scheme://` and a `:port`; the token's
    /// path segments must then be a prefix of the resource's, compared with case. So a token
    /// for `h/a/b` covers `h/a/b` and `h/a/b/c`, but not `h/a/bc` or `h/A/b`. A token whose
    /// host is empty covers nothing.
    pub fn covers(&self, resource: &str) -> bool {
        let (token_host, token_path) = split_resource(&self.resource);
        let (host, mut path) = split_resource(resource);
        !token_host.is_empty()
            && token_host.eq_ignore_ascii_case(host)
            && token_path.into_iter().all(|seg| path.next() == Some(seg))
    }
}

impl std::str::FromStr for SasToken {
    type Err = SasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SasToken::parse(s)
    }
}

impl std::fmt::Display for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Leaves out the signature, which would let anyone who reads a log replay the token.
impl std::fmt::Debug for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasToken")
            .field("raw_sr", &self.raw_sr)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// Parses `se`: ASCII digits only (no sign, no spaces), fitting in a u64.
fn parse_expiry(raw: &str) -> Result<u64, SasError> {
    const REASON: &str = "`se` is not a whole number of seconds since 1970";
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SasError::Malformed { reason: REASON });
    }
    raw.parse()
        .map_err(|_| SasError::Malformed { reason: REASON })
}

/// Percent-decodes a field value, which must decode to UTF-8.
fn decode(raw: &str, reason: &'static str) -> Result<String, SasError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| SasError::Malformed { reason })
}

/// Splits a decoded resource into its host (no scheme, no port) and its non-empty path
/// segments.
fn split_resource(resource: &str) -> (&str, impl Iterator<Item = &str>) {
    let without_scheme = match resource.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            rest
        }
        _ => resource,
    };
    let (host_port, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    let host = host_port
        .split_once(':')
        .map_or(host_port, |(host, _)| host);
    (host, path.split('/').filter(|seg| !seg.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes 0..32, base64.
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OTHER_KEY: &str = "H/7+/fz7+vn49/b19PPy8fDv7u3s6+rp6Ofm5eTj4uE=";

    /// HMAC-SHA256 computed here with `hmac` directly, not through the module.
    fn reference_sig(string_to_sign: &str) -> String {
        let key = STANDARD.decode(KEY).unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(string_to_sign.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    fn parse(s: &str) -> SasToken {
        SasToken::parse(s).unwrap()
    }

    #[test]
    fn key_text_tokens_verify_only_with_the_key_text() {
        let t =
            build_token_with_key_text("sb://h/hub", KEY, Some("service"), 1_700_000_000).unwrap();
        let parsed = parse(&t);
        assert!(parsed.is_service_bus_audience());
        assert_eq!(parsed.key_name(), Some("service"));
        assert_eq!(parsed.verify_signature_with_key_text(KEY), Ok(()));
        assert!(parsed.verify_signature(KEY).is_err());
        assert!(parsed.verify_signature_with_key_text(OTHER_KEY).is_err());
        assert_eq!(
            build_token_with_key_text("sb://h/hub", "", None, 1),
            Err(SasError::InvalidKey)
        );
    }

    #[test]
    fn builds_the_token_the_python_sdk_builds() {
        // Computed with Python: quote(uri, safe=""), hmac.new(b64decode(key), ..., sha256),
        // quote(b64encode(digest), safe="").
        let token = build_token(
            "myhub.azure-devices.net/devices/dev-1",
            KEY,
            None,
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(
            token,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1\
             &sig=9P9k7cepgTkOaGmNEjd4wFkh7fOk6kxqmqAk7lhd9T8%3D&se=1700000000"
        );
    }

    #[test]
    fn build_matches_a_reference_hmac_and_encodes_the_signature() {
        let token = build_token("h.example/devices/d", KEY, Some("iot owner"), 42).unwrap();
        let sig = reference_sig("h.example%2Fdevices%2Fd\n42");
        let encoded_sig = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            token,
            format!(
                "SharedAccessSignature sr=h.example%2Fdevices%2Fd&sig={encoded_sig}&se=42&skn=iot%20owner"
            )
        );
        assert_eq!(sign(KEY, "h.example%2Fdevices%2Fd\n42").unwrap(), sig);
    }

    #[test]
    fn sr_is_encoded_like_quote_with_nothing_safe() {
        assert_eq!(
            encode_component("h:443/devices/a b+c(1)~x_y.z-é"),
            "h%3A443%2Fdevices%2Fa%20b%2Bc%281%29~x_y.z-%C3%A9"
        );
    }

    #[test]
    fn a_key_that_is_not_base64_or_empty_is_invalid() {
        assert_eq!(
            build_token("h", "not base64!", None, 1),
            Err(SasError::InvalidKey)
        );
        assert_eq!(sign("", "x"), Err(SasError::InvalidKey));
        let token = parse(&build_token("h", KEY, None, 1).unwrap());
        assert_eq!(token.verify_signature("%%%"), Err(SasError::InvalidKey));
    }

    #[test]
    fn parses_fields_in_any_order() {
        let sig = "9P9k7cepgTkOaGmNEjd4wFkh7fOk6kxqmqAk7lhd9T8%3D";
        let sr = "myhub.azure-devices.net%2Fdevices%2Fdev-1";
        let orders = [
            format!("sr={sr}&sig={sig}&se=1700000000"),
            format!("se=1700000000&sr={sr}&sig={sig}"),
            format!("sig={sig}&se=1700000000&sr={sr}"),
            format!("other=1&sr={sr}&skn=p&sig={sig}&se=1700000000"),
        ];
        for fields in orders {
            let token = parse(&format!("SharedAccessSignature {fields}"));
            assert_eq!(token.raw_sr(), sr);
            assert_eq!(token.resource(), "myhub.azure-devices.net/devices/dev-1");
            assert_eq!(token.expiry(), 1_700_000_000);
            assert_eq!(
                token.signature(),
                "9P9k7cepgTkOaGmNEjd4wFkh7fOk6kxqmqAk7lhd9T8="
            );
            assert_eq!(token.verify_signature(KEY), Ok(()), "{fields}");
        }
    }

    #[test]
    fn keeps_and_decodes_skn() {
        let token = parse(&build_token("h", KEY, Some("iothub owner"), 9).unwrap());
        assert_eq!(token.key_name(), Some("iothub owner"));
        let token = parse(&build_token("h", KEY, None, 9).unwrap());
        assert_eq!(token.key_name(), None);
    }

    #[test]
    fn lower_case_hex_in_sr_verifies_when_signed_that_way() {
        // The C SDK's encoder writes `%2f`; the signature covers that spelling.
        let token = parse(
            "SharedAccessSignature sr=myhub.azure-devices.net%2fdevices%2fdev-1\
             &sig=apV%2BJFBzBNACqko6wppdh%2BYYW6CWqZQVQpeDTJLx2A0%3D&se=1700000000",
        );
        assert_eq!(token.resource(), "myhub.azure-devices.net/devices/dev-1");
        assert_eq!(token.verify_signature(KEY), Ok(()));
        assert!(token.covers("myhub.azure-devices.net/devices/dev-1"));
    }

    #[test]
    fn re_spelling_the_hex_of_sr_breaks_the_signature() {
        let upper = build_token("myhub.azure-devices.net/devices/dev-1", KEY, None, 5).unwrap();
        let lower = upper.replace("%2F", "%2f");
        assert_eq!(parse(&upper).verify_signature(KEY), Ok(()));
        let lower = parse(&lower);
        assert_eq!(lower.resource(), "myhub.azure-devices.net/devices/dev-1");
        assert_eq!(
            lower.verify_signature(KEY),
            Err(SasError::SignatureMismatch)
        );
    }

    #[test]
    fn unencoded_sr_and_partially_encoded_sig_verify() {
        // Python REST: sr=quote_plus("localhost"), sig=quote(b64) with `/` left literal.
        let token = parse(
            "SharedAccessSignature sr=localhost\
             &sig=7yoM%2BOdCFiW4/NVUdp5RIPluIaoOT57/c/QRuynBjCU%3D&se=1700000004&skn=iothubowner",
        );
        assert_eq!(token.raw_sr(), "localhost");
        assert_eq!(token.key_name(), Some("iothubowner"));
        assert_eq!(token.verify_signature(KEY), Ok(()));
        assert_eq!(
            token.verify_signature(OTHER_KEY),
            Err(SasError::SignatureMismatch)
        );

        // uamqp: the same, but with `+` and `=` left literal too.
        let token = parse(
            "SharedAccessSignature sr=localhost\
             &sig=7yoM+OdCFiW4/NVUdp5RIPluIaoOT57/c/QRuynBjCU=&se=1700000004&skn=iothubowner",
        );
        assert_eq!(token.verify_signature(KEY), Ok(()));
        assert!(token.covers("LOCALHOST/devices/x"));
    }

    #[test]
    fn se_is_verified_as_it_appeared() {
        let sig = reference_sig("h\n0042");
        let token = parse(&format!(
            "SharedAccessSignature sr=h&sig={}&se=0042",
            encode_component(&sig)
        ));
        assert_eq!(token.expiry(), 42);
        assert_eq!(token.verify_signature(KEY), Ok(()));
    }

    #[test]
    fn a_signature_that_is_not_base64_is_a_mismatch() {
        let token = parse("SharedAccessSignature sr=h&sig=%25%25not-base64!&se=5");
        assert_eq!(
            token.verify_signature(KEY),
            Err(SasError::SignatureMismatch)
        );
        let token = parse("SharedAccessSignature sr=h&sig=AAAA&se=5");
        assert_eq!(
            token.verify_signature(KEY),
            Err(SasError::SignatureMismatch)
        );
    }

    #[test]
    fn the_prefix_is_required_and_whitespace_around_is_allowed() {
        let token = build_token("h/devices/d", KEY, None, 7).unwrap();
        let padded = parse(&format!("  \t{token}\r\n"));
        assert_eq!(padded.as_str(), token);
        assert_eq!(padded.to_string(), token);
        assert_eq!(padded.verify_signature(KEY), Ok(()));

        let bare = token.trim_start_matches("SharedAccessSignature ");
        for bad in [
            bare.to_owned(),
            format!("sharedaccesssignature {bare}"),
            format!("SharedAccessSignature{bare}"),
            "SharedAccessSignature".to_owned(),
            String::new(),
        ] {
            assert!(
                matches!(SasToken::parse(&bad), Err(SasError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        for (fields, missing) in [
            ("sig=a&se=1", "sr"),
            ("sr=h&se=1", "sig"),
            ("sr=h&sig=a", "se"),
            ("sr=h&sig=a&SE=1", "se"),
        ] {
            assert_eq!(
                SasToken::parse(&format!("SharedAccessSignature {fields}")),
                Err(SasError::MissingField(missing))
            );
        }
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        for (fields, dup) in [
            ("sr=h&sr=h&sig=a&se=1", "sr"),
            ("sr=h&sig=a&se=1&sig=a", "sig"),
            ("se=2&sr=h&sig=a&se=1", "se"),
            ("sr=h&skn=a&sig=a&se=1&skn=b", "skn"),
        ] {
            assert_eq!(
                SasToken::parse(&format!("SharedAccessSignature {fields}")),
                Err(SasError::DuplicateField(dup))
            );
        }
        // Unknown fields may repeat; they are ignored.
        assert!(SasToken::parse("SharedAccessSignature x=1&x=2&sr=h&sig=a&se=1&&").is_ok());
    }

    #[test]
    fn malformed_values_are_rejected() {
        for fields in [
            "sr=h&sig=a&se=",
            "sr=h&sig=a&se=+5",
            "sr=h&sig=a&se=-5",
            "sr=h&sig=a&se=1.5",
            "sr=h&sig=a&se=5 &skn=p",
            "sr=h&sig=a&se=99999999999999999999999",
            "sr=&sig=a&se=1",
            "sr=h&sig=&se=1",
            "sr=h&sig=a&se=1&skn=",
            "sr=h&sig=a&se=1&flag",
            "sr=%FF&sig=a&se=1",
            "sr=h&sig=a&se=1&skn=%C3",
        ] {
            assert!(
                matches!(
                    SasToken::parse(&format!("SharedAccessSignature {fields}")),
                    Err(SasError::Malformed { .. })
                ),
                "{fields}"
            );
        }
    }

    #[test]
    fn expiry_is_exclusive() {
        let token = parse(&build_token("h", KEY, None, 100).unwrap());
        assert_eq!(token.check_expiry(99), Ok(()));
        assert_eq!(
            token.check_expiry(100),
            Err(SasError::Expired {
                expiry: 100,
                now: 100
            })
        );
        assert!(token.check_expiry(101).is_err());
    }

    #[test]
    fn scope_is_a_segment_prefix() {
        let token = parse(&build_token("h.example/a/b", KEY, None, 1).unwrap());
        assert!(token.covers("h.example/a/b"));
        assert!(token.covers("h.example/a/b/"));
        assert!(token.covers("h.example/a/b/c"));
        assert!(!token.covers("h.example/a/bc"));
        assert!(!token.covers("h.example/a"));
        assert!(!token.covers("h.example"));
        assert!(!token.covers("h.example/A/b"));
        assert!(!token.covers("other.example/a/b"));
        assert!(!token.covers("h.example.evil/a/b"));
    }

    #[test]
    fn scope_host_ignores_case_port_and_scheme() {
        let token = parse(&build_token("MyHub.Example:443/devices/Dev", KEY, None, 1).unwrap());
        assert_eq!(token.host(), "MyHub.Example");
        assert_eq!(token.path_segments(), ["devices", "Dev"]);
        assert!(token.covers("myhub.example/devices/Dev/messages/events"));
        assert!(token.covers("myhub.example:8883/devices/Dev"));
        assert!(token.covers("amqps://myhub.example/devices/Dev"));
        assert!(!token.covers("myhub.example/devices/dev"));
    }

    #[test]
    fn a_hub_scoped_token_covers_every_device() {
        let token = parse(&build_token("h.example", KEY, Some("service"), 1).unwrap());
        assert!(token.path_segments().is_empty());
        assert!(token.covers("h.example"));
        assert!(token.covers("h.example/devices/any"));
        assert!(!token.covers("h.example2/devices/any"));
    }

    #[test]
    fn trailing_and_double_slashes_are_ignored() {
        let token = parse(&build_token("h/devices/d/", KEY, None, 1).unwrap());
        assert_eq!(token.path_segments(), ["devices", "d"]);
        assert!(token.covers("h//devices/d"));
    }

    #[test]
    fn an_empty_host_covers_nothing() {
        let token = parse(&build_token("/devices/d", KEY, None, 1).unwrap());
        assert!(!token.covers("/devices/d"));
    }

    #[test]
    fn messages_and_debug_never_show_the_signature() {
        let token = parse(&build_token("h", KEY, Some("p"), 1).unwrap());
        let debug = format!("{token:?}");
        assert!(!debug.contains(token.signature()), "{debug}");
        assert!(!debug.contains("sig="), "{debug}");
        for err in [
            SasError::InvalidKey,
            SasError::SignatureMismatch,
            SasError::MissingField("sig"),
            SasError::Expired { expiry: 1, now: 2 },
        ] {
            assert!(!err.to_string().contains(token.signature()));
            assert!(!err.to_string().contains(KEY));
        }
    }

    fn resource_strategy() -> impl Strategy<Value = String> {
        (
            "[A-Za-z0-9][A-Za-z0-9.-]{0,15}(:[0-9]{1,5})?",
            proptest::collection::vec("[^/]{1,8}", 0..4),
        )
            .prop_map(|(host, segments)| {
                segments
                    .into_iter()
                    .fold(host, |acc, seg| format!("{acc}/{seg}"))
            })
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|k| STANDARD.encode(k))
    }

    proptest! {
        #[test]
        fn built_tokens_parse_verify_and_cover_their_resource(
            resource in resource_strategy(),
            key in key_strategy(),
            key_name in proptest::option::of("[ -~]{1,12}"),
            expiry in 1..u64::MAX,
        ) {
            let text = build_token(&resource, &key, key_name.as_deref(), expiry).unwrap();
            let token = SasToken::parse(&text).unwrap();
            prop_assert_eq!(token.resource(), resource.as_str());
            prop_assert_eq!(token.key_name(), key_name.as_deref());
            prop_assert_eq!(token.expiry(), expiry);
            prop_assert_eq!(token.verify_signature(&key), Ok(()));
            prop_assert!(token.covers(&resource));
            prop_assert_eq!(token.check_expiry(expiry - 1), Ok(()));
            prop_assert_eq!(
                token.check_expiry(expiry),
                Err(SasError::Expired { expiry, now: expiry })
            );
        }

        /// Changing one byte of a token never yields a token that verifies for different
        /// signed content. What may survive: changes to unsigned parts (`skn`, unknown field
        /// names) and the hex case of `sig`'s own percent-encoding, which leave `sr`, `se` and
        /// the decoded signature as they were.
        #[test]
        fn one_changed_byte_never_verifies_for_other_content(
            resource in resource_strategy(),
            key in key_strategy(),
            key_name in proptest::option::of("[a-z]{1,8}"),
            expiry in 1..u64::MAX,
            index in any::<proptest::sample::Index>(),
            replacement in 0x20u8..0x7f,
        ) {
            let text = build_token(&resource, &key, key_name.as_deref(), expiry).unwrap();
            let original = SasToken::parse(&text).unwrap();
            let mut bytes = text.into_bytes();
            let at = index.index(bytes.len());
            prop_assume!(bytes[at] != replacement);
            bytes[at] = replacement;
            let mutated = String::from_utf8(bytes).unwrap();

            if let Ok(token) = SasToken::parse(&mutated)
                && token.verify_signature(&key).is_ok()
            {
                prop_assert_eq!(token.raw_sr(), original.raw_sr());
                prop_assert_eq!(token.resource(), original.resource());
                prop_assert_eq!(token.expiry(), original.expiry());
                prop_assert_eq!(token.signature(), original.signature());
            }
        }
    }
}
