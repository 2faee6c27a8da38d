//! Device id rules of the identity registry.
//!
//! Reference: iothub-protocol.md 6.2. Ids are case-sensitive, at most 128 characters of ASCII
//! alphanumerics plus `- . + % _ # * ? ! ( ) , = @ $ '`; the C# connection-string builder also
//! accepts `:` and `;`, so we do too (a device the C# SDK can name must be creatable here).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Longest device id the registry accepts.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// True when `c` may appear in a device id.
pub fn is_device_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.+%_#*?!(),=@$':;".contains(c)
}

/// Checks a device id against the registry's rules.
///
/// Returns a human-readable reason on failure, suitable for an `ArgumentInvalid` error.
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the device id is empty".into());
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(format!(
            "the device id is {} characters long; at most {MAX_DEVICE_ID_LEN} are allowed",
            id.len()
        ));
    }
    if let Some(bad) = id.chars().find(|c| !is_device_id_char(*c)) {
        return Err(format!(
            "the device id contains {bad:?}; only ASCII letters, digits and - . + % _ # * ? ! ( ) , = @ $ ' : ; are allowed"
        ));
    }
    Ok(())
}

/// What `encodeURIComponent` leaves alone: the Node service SDK encodes device ids in paths
/// and in a C2D message's `to` with it.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// A device id percent-encoded as one URI path segment (`/devices/{id}/...`), as both Rust
/// clients put it in HTTPS paths and AMQP addresses.
pub fn encode_path_segment(id: &str) -> String {
    utf8_percent_encode(id, URI_COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(validate_device_id("dev-1.a+b%c_d#e*f?g!h(i)j,k=l@m$n'o:p;q").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_characters() {
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id(&"a".repeat(129)).is_err());
        assert!(validate_device_id(&"a".repeat(128)).is_ok());
        assert!(validate_device_id("a/b").is_err());
        assert!(validate_device_id("a b").is_err());
        assert!(validate_device_id("é").is_err());
    }

    #[test]
    fn path_segments_encode_like_encode_uri_component() {
        assert_eq!(encode_path_segment("x!*'()~._-"), "x!*'()~._-");
        assert_eq!(encode_path_segment("a b#c?d%e/f"), "a%20b%23c%3Fd%25e%2Ff");
        assert_eq!(encode_path_segment("dev:1$a b"), "dev%3A1%24a%20b");
    }
}
