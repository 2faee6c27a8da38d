//! MQTT property bags in topic names (iothub-protocol.md 3.4).
//!
//! A property bag is a URL query string, `key=value&key2=value2`, appended to a topic:
//!
//! - hub → device (C2D): `devices/{id}/messages/devicebound/{bag}`, see [`encode_c2d_topic`] and
//!   [`decode_c2d_topic`];
//! - device → hub (D2C): `devices/{id}/messages/events/{bag}`, see [`encode_d2c_topic`] and
//!   [`decode_d2c_topic`].
//!
//! Keys and values are percent-encoded per RFC 3986: everything but the unreserved characters
//! `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case hex), a space is `%20` and never `+`, and on
//! decoding `+` stays a `+`, as in C# `Uri.UnescapeDataString`, Python `unquote` and Node
//! `decodeURIComponent`. System properties have keys starting with `$.`, written `%24.` (the C
//! SDK only recognises that spelling). `key` alone is a null value, `key=` an empty one.
//!
//! The device id in a topic is never percent-encoded. Device ids may contain `?`, `=`, `%` and
//! `#` but never `/`, so the decoders find the id by splitting on `/`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::HubError;
use crate::message::{ACK_PROPERTY, AckMode, Message, MessageId};
use crate::time_format;

/// Every byte except the RFC 3986 unreserved characters `A-Z a-z 0-9 - . _ ~`.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const KEY_MESSAGE_ID: &str = "$.mid";
const KEY_CORRELATION_ID: &str = "$.cid";
const KEY_USER_ID: &str = "$.uid";
const KEY_TO: &str = "$.to";
const KEY_EXPIRY: &str = "$.exp";
const KEY_CONTENT_TYPE: &str = "$.ct";
const KEY_CONTENT_ENCODING: &str = "$.ce";
/// Prefix of every system property key.
const SYSTEM_PREFIX: &str = "$.";

const C2D_ENDPOINT: &str = "messages/devicebound";
const D2C_ENDPOINT: &str = "messages/events";

/// Longest piece of peer text quoted in an error message, in characters.
const MAX_QUOTED: usize = 100;

/// Why a property bag or a topic carrying one could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BagError {
    /// A `%` not followed by two hex digits.
    #[error(
        "bad percent-escape '{text}' in a property bag: '%' must be followed by two hex digits; write a literal '%' as %25"
    )]
    BadEscape {
        /// The offending escape: the `%` and at most two characters after it.
        text: String,
    },
    /// The percent-escapes decode to bytes that are not UTF-8.
    #[error(
        "a property-bag key or value decodes to bytes that are not valid UTF-8; percent-encode the UTF-8 bytes of the text"
    )]
    NotUtf8,
    /// The topic does not have the expected shape.
    #[error("{reason}")]
    BadTopic {
        /// What is wrong and what was expected.
        reason: String,
    },
    /// `$.exp` is not a timestamp.
    #[error(
        "$.exp '{value}' is not a timestamp; write it as ISO 8601 with a zone, e.g. 2023-07-19T23:06:40.0000000Z"
    )]
    BadExpiry {
        /// The value that was sent (shortened if long).
        value: String,
    },
}

impl From<BagError> for HubError {
    fn from(e: BagError) -> Self {
        HubError::argument(e.to_string())
    }
}

/// Percent-encodes `s` per RFC 3986: unreserved characters stay, everything else is `%XX` with
/// upper-case hex (UTF-8 bytes for non-ASCII); a space is `%20`.
pub fn encode_value(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// Percent-decodes `s`. A `+` stays a `+`. A `%` without two hex digits after it is
/// [`BagError::BadEscape`]; a result that is not UTF-8 is [`BagError::NotUtf8`].
pub fn decode_value(s: &str) -> Result<String, BagError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hi = bytes.get(i + 1).copied().and_then(hex_digit);
        let lo = bytes.get(i + 2).copied().and_then(hex_digit);
        match (hi, lo) {
            (Some(hi), Some(lo)) => {
                out.push((hi << 4) | lo);
                i += 3;
            }
            _ => {
                // `%` is one byte, so `i + 1` is a char boundary.
                let after: String = s.get(i + 1..).unwrap_or("").chars().take(2).collect();
                return Err(BagError::BadEscape {
                    text: format!("%{after}"),
                });
            }
        }
    }
    String::from_utf8(out).map_err(|_| BagError::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes `pairs` as `k=v&k2=v2`, keys and values percent-encoded with [`encode_value`].
///
/// A `None` value is written as the key alone (null), `Some("")` as `key=` (empty). A pair
/// with an empty key and a `None` value has no written form (it would be an empty segment,
/// which readers skip) and is left out.
pub fn encode_bag<'a>(pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut out = String::new();
    write_bag(&mut out, pairs);
    out
}

fn write_bag<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>) {
    let mut first = true;
    for (key, value) in pairs {
        if key.is_empty() && value.is_none() {
            continue;
        }
        if !first {
            out.push('&');
        }
        first = false;
        out.extend(utf8_percent_encode(key, ESCAPED));
        if let Some(value) = value {
            out.push('=');
            out.extend(utf8_percent_encode(value, ESCAPED));
        }
    }
}

/// Reads a bag written as `k=v&k2&k3=`: `k2` alone is a null (`None`) value, `k3=` an empty one.
///
/// One leading `?` and one trailing `/` are stripped (third-party clients start the bag with
/// `?`, the C# SDK ends it with `/`), empty segments are skipped, and keys and values are
/// percent-decoded with [`decode_value`], so `%24.mid` reads as `$.mid`. Pairs come back in the
/// order written, duplicates included.
pub fn decode_bag(s: &str) -> Result<Vec<(String, Option<String>)>, BagError> {
    let s = s.strip_prefix('?').unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    s.split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('=') {
            Some((key, value)) => Ok((decode_value(key)?, Some(decode_value(value)?))),
            None => Ok((decode_value(segment)?, None)),
        })
        .collect()
}

/// `devices/{id}/messages/devicebound/`: the C2D topic before its bag. The device id is not
/// encoded.
pub fn c2d_topic_prefix(device_id: &str) -> String {
    format!("devices/{device_id}/{C2D_ENDPOINT}/")
}

/// The topic the hub publishes a C2D message on: [`c2d_topic_prefix`] plus the bag.
///
/// The bag holds, in this order and only when set: `$.mid`, `$.to` (always: the message's `to`,
/// or `/devices/{id}/messages/devicebound` when unset, so the bag is never empty, which the C#
/// SDK needs), `$.cid`, `$.uid`, `$.exp` (seven fractional digits, as C# parses it), `$.ct`,
/// `$.ce`, `iothub-ack` (unless [`AckMode::None`]), then the application properties in their
/// order. Message ids are written in their [`MessageId::canonical`] form. The hub-set
/// properties (sequence number, enqueued time, delivery count, lock token) are not written.
pub fn encode_c2d_topic(device_id: &str, msg: &Message) -> String {
    let sys = &msg.system;
    let default_to;
    let to = match &sys.to {
        Some(to) => to.as_str(),
        None => {
            default_to = format!("/devices/{device_id}/{C2D_ENDPOINT}");
            default_to.as_str()
        }
    };
    let mid = sys.message_id.as_ref().map(MessageId::canonical);
    let cid = sys.correlation_id.as_ref().map(MessageId::canonical);
    let exp = sys.absolute_expiry.map(time_format::format_round_trip);
    let ack = (sys.ack != AckMode::None).then(|| sys.ack.as_str());
    let system = [
        (KEY_MESSAGE_ID, mid.as_deref()),
        (KEY_TO, Some(to)),
        (KEY_CORRELATION_ID, cid.as_deref()),
        (KEY_USER_ID, sys.user_id.as_deref()),
        (KEY_EXPIRY, exp.as_deref()),
        (KEY_CONTENT_TYPE, sys.content_type.as_deref()),
        (KEY_CONTENT_ENCODING, sys.content_encoding.as_deref()),
        (ACK_PROPERTY, ack),
    ];
    let mut topic = c2d_topic_prefix(device_id);
    write_bag(&mut topic, set_pairs(&system).chain(app_pairs(msg)));
    topic
}

/// Reads a C2D topic as the device client receives it: the device id and a message with an
/// empty body.
///
/// `$.mid` and `$.cid` become [`MessageId::String`], `$.uid`, `$.to`, `$.exp`, `$.ct` and `$.ce`
/// the matching system properties (a null value leaves them unset), `iothub-ack` the ack mode.
/// Other `$.` keys (such as `$.cdid`) are dropped; everything else is an application property,
/// with a null value read as an empty string. An `iothub-ack` value that is not an ack mode is
/// kept as an application property.
pub fn decode_c2d_topic(topic: &str) -> Result<(String, Message), BagError> {
    let (device_id, bag) = split_topic(topic, C2D_ENDPOINT)?;
    let msg = message_from_bag(bag, Direction::C2d)?;
    Ok((device_id.to_owned(), msg))
}

/// The topic a device publishes a D2C message on: `devices/{id}/messages/events/` plus the bag.
///
/// The bag holds, in this order and only when set: `$.mid`, `$.cid`, `$.uid`, `$.to`, `$.exp`,
/// `$.ct`, `$.ce`, then the application properties in their order. The ack mode and the hub-set
/// properties are not written.
pub fn encode_d2c_topic(device_id: &str, msg: &Message) -> String {
    let sys = &msg.system;
    let mid = sys.message_id.as_ref().map(MessageId::canonical);
    let cid = sys.correlation_id.as_ref().map(MessageId::canonical);
    let exp = sys.absolute_expiry.map(time_format::format_round_trip);
    let system = [
        (KEY_MESSAGE_ID, mid.as_deref()),
        (KEY_CORRELATION_ID, cid.as_deref()),
        (KEY_USER_ID, sys.user_id.as_deref()),
        (KEY_TO, sys.to.as_deref()),
        (KEY_EXPIRY, exp.as_deref()),
        (KEY_CONTENT_TYPE, sys.content_type.as_deref()),
        (KEY_CONTENT_ENCODING, sys.content_encoding.as_deref()),
    ];
    let mut topic = format!("devices/{device_id}/{D2C_ENDPOINT}/");
    write_bag(&mut topic, set_pairs(&system).chain(app_pairs(msg)));
    topic
}

/// Reads a D2C topic as the hub receives it: the device id and a message with an empty body.
///
/// The topic is `devices/{id}/messages/events` followed by nothing, `/`, or `/` and a bag (which
/// may start with `?` and end with `/`). `$.mid` and `$.cid` become [`MessageId::String`];
/// `$.uid`, `$.to`, `$.exp`, `$.ct` and `$.ce` the matching system properties (a null value
/// leaves them unset; an `$.exp` that is not a timestamp is [`BagError::BadExpiry`]). Other `$.`
/// keys that SDKs send (`$.ifid`, `$.on`, `$.ctime`, `$.schema`, `$.sub`, `$.diagid`,
/// `$.diagctx`, ...) are kept as application properties under their `$.` name, as is every other
/// key; a null value is read as an empty string. When a key repeats, the last value wins.
pub fn decode_d2c_topic(topic: &str) -> Result<(String, Message), BagError> {
    let (device_id, bag) = split_topic(topic, D2C_ENDPOINT)?;
    let msg = message_from_bag(bag, Direction::D2c)?;
    Ok((device_id.to_owned(), msg))
}

/// The device id of a D2C topic, if `topic` has the D2C shape; the bag is not read.
pub fn parse_d2c_device_id(topic: &str) -> Option<&str> {
    split_topic(topic, D2C_ENDPOINT).ok().map(|(id, _)| id)
}

/// The set system properties as bag pairs.
fn set_pairs<'a>(
    system: &'a [(&'a str, Option<&'a str>)],
) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
    system
        .iter()
        .filter_map(|&(key, value)| value.map(|v| (key, Some(v))))
}

fn app_pairs(msg: &Message) -> impl Iterator<Item = (&str, Option<&str>)> {
    msg.properties.iter().map(|(k, v)| (k, Some(v)))
}

/// Splits `devices/{id}/{endpoint}[/[bag]]` into the device id and the bag.
fn split_topic<'a>(topic: &'a str, endpoint: &str) -> Result<(&'a str, &'a str), BagError> {
    let expected = || format!("devices/{{device id}}/{endpoint}/{{properties}}");
    let bad = |what: &str| BagError::BadTopic {
        reason: format!(
            "the topic '{}' {what}; expected {}",
            quote(topic),
            expected()
        ),
    };
    let rest = topic
        .strip_prefix("devices/")
        .ok_or_else(|| bad("does not start with 'devices/'"))?;
    let (device_id, rest) = rest
        .split_once('/')
        .ok_or_else(|| bad("has nothing after the device id"))?;
    if device_id.is_empty() {
        return Err(bad("has an empty device id"));
    }
    let rest = rest.strip_prefix(endpoint).ok_or_else(|| {
        bad(&format!(
            "does not continue with '/{endpoint}' after the device id (device ids cannot contain '/')"
        ))
    })?;
    if rest.is_empty() {
        return Ok((device_id, ""));
    }
    let bag = rest
        .strip_prefix('/')
        .ok_or_else(|| bad(&format!("has no '/' after '{endpoint}'")))?;
    Ok((device_id, bag))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    C2d,
    D2c,
}

fn message_from_bag(bag: &str, direction: Direction) -> Result<Message, BagError> {
    let mut msg = Message::default();
    for (key, value) in decode_bag(bag)? {
        let sys = &mut msg.system;
        match key.as_str() {
            KEY_MESSAGE_ID => sys.message_id = value.map(MessageId::String),
            KEY_CORRELATION_ID => sys.correlation_id = value.map(MessageId::String),
            KEY_USER_ID => sys.user_id = value,
            KEY_TO => sys.to = value,
            KEY_EXPIRY => sys.absolute_expiry = value.as_deref().map(parse_expiry).transpose()?,
            KEY_CONTENT_TYPE => sys.content_type = value,
            KEY_CONTENT_ENCODING => sys.content_encoding = value,
            ACK_PROPERTY if direction == Direction::C2d => match value.as_deref() {
                None => sys.ack = AckMode::None,
                Some(v) => match AckMode::parse(v) {
                    Some(mode) => sys.ack = mode,
                    None => msg.properties.insert(key, v),
                },
            },
            k if direction == Direction::C2d && k.starts_with(SYSTEM_PREFIX) => {}
            _ => msg.properties.insert(key, value.unwrap_or_default()),
        }
    }
    Ok(msg)
}

fn parse_expiry(value: &str) -> Result<time::OffsetDateTime, BagError> {
    time_format::parse(value).ok_or_else(|| BagError::BadExpiry {
        value: quote(value),
    })
}

/// `s`, cut to [`MAX_QUOTED`] characters, for quoting peer text in an error.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}...", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const PY_MID: &str = "6b822696-f75a-46f5-8b02-0680db65abf5";

    fn pairs(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(
            encode_value("a b&c=d/e%f?g+h€#$!*'()~-._"),
            "a%20b%26c%3Dd%2Fe%25f%3Fg%2Bh%E2%82%AC%23%24%21%2A%27%28%29~-._"
        );
        assert_eq!(encode_value("AZaz09"), "AZaz09");
        assert_eq!(encode_value(""), "");
        assert_eq!(encode_value("$.mid"), "%24.mid");
        assert_eq!(encode_value("\u{0}\n"), "%00%0A");
    }

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(decode_value("a%20b+c").unwrap(), "a b+c");
        assert_eq!(decode_value("%e2%82%ac%E2%82%AC").unwrap(), "€€");
        assert_eq!(decode_value("%24.mid").unwrap(), "$.mid");
        assert_eq!(decode_value("plain").unwrap(), "plain");
        assert_eq!(decode_value("é").unwrap(), "é");
    }

    #[test]
    fn bad_escapes_are_errors() {
        let bad = |text: &str| BagError::BadEscape { text: text.into() };
        assert_eq!(decode_value("%"), Err(bad("%")));
        assert_eq!(decode_value("ab%4"), Err(bad("%4")));
        assert_eq!(decode_value("%G1x"), Err(bad("%G1")));
        assert_eq!(decode_value("%4é"), Err(bad("%4é")));
        assert_eq!(decode_value("%é"), Err(bad("%é")));
        assert_eq!(decode_value("100%"), Err(bad("%")));
        assert_eq!(decode_value("%FF"), Err(BagError::NotUtf8));
        assert_eq!(decode_value("%E2%82"), Err(BagError::NotUtf8));
        assert_eq!(decode_value("%C3"), Err(BagError::NotUtf8));
        assert_eq!(decode_bag("k=%ZZ"), Err(bad("%ZZ")));
        assert_eq!(decode_bag("%=v"), Err(bad("%")));
        let msg = bad("%ZZ").to_string();
        assert!(msg.contains("%ZZ") && msg.contains("%25"), "{msg}");
    }

    #[test]
    fn bag_null_versus_empty() {
        let bag = encode_bag([("a", None), ("b", Some("")), ("c", Some("x y"))].into_iter());
        assert_eq!(bag, "a&b=&c=x%20y");
        assert_eq!(
            decode_bag(&bag).unwrap(),
            pairs(&[("a", None), ("b", Some("")), ("c", Some("x y"))])
        );
        // The doc's example, minus the leading '/' the SDK parsers reject.
        assert_eq!(
            decode_bag("?prop1&prop2=&prop3=a%20string").unwrap(),
            pairs(&[
                ("prop1", None),
                ("prop2", Some("")),
                ("prop3", Some("a string"))
            ])
        );
    }

    #[test]
    fn bag_strips_one_question_mark_and_one_slash_and_skips_empty_segments() {
        let want = pairs(&[("k", Some("v")), ("n", None)]);
        assert_eq!(decode_bag("?k=v&n/").unwrap(), want);
        assert_eq!(decode_bag("k=v&&n&").unwrap(), want);
        assert_eq!(decode_bag("&k=v&n").unwrap(), want);
        assert_eq!(decode_bag("??k=v").unwrap(), pairs(&[("?k", Some("v"))]));
        assert_eq!(decode_bag("k=v//").unwrap(), pairs(&[("k", Some("v/"))]));
        assert_eq!(decode_bag("k=a=b").unwrap(), pairs(&[("k", Some("a=b"))]));
        for empty in ["", "?", "/", "?/", "&&"] {
            assert_eq!(decode_bag(empty).unwrap(), vec![], "{empty:?}");
        }
    }

    #[test]
    fn bag_with_empty_key_and_null_value_is_left_out() {
        assert_eq!(
            encode_bag([("", None), ("", Some("")), ("k", None)].into_iter()),
            "=&k"
        );
        assert_eq!(encode_bag(std::iter::empty()), "");
    }

    #[test]
    fn c2d_matches_the_python_sdk_fixture() {
        let mut msg = Message::new("hello");
        msg.system.message_id = Some(MessageId::Uuid(Uuid::parse_str(PY_MID).unwrap()));
        msg.system.sequence_number = Some(7);
        msg.system.enqueued_time = Some(datetime!(2024-01-01 00:00 UTC));
        msg.system.delivery_count = Some(2);
        msg.system.lock_token = Some("lock".into());
        assert_eq!(
            encode_c2d_topic("fake_device", &msg),
            "devices/fake_device/messages/devicebound/%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound"
        );
    }

    #[test]
    fn c2d_always_has_to_even_without_other_properties() {
        assert_eq!(
            encode_c2d_topic("d?=%#", &Message::new("")),
            "devices/d?=%#/messages/devicebound/%24.to=%2Fdevices%2Fd%3F%3D%25%23%2Fmessages%2Fdevicebound"
        );
        assert_eq!(
            c2d_topic_prefix("d?=%#"),
            "devices/d?=%#/messages/devicebound/"
        );
    }

    #[test]
    fn c2d_writes_every_settable_property_in_order() {
        let mut msg = Message::new("");
        msg.system.message_id = Some(MessageId::Ulong(42));
        msg.system.correlation_id = Some("fake_corid".into());
        msg.system.user_id = Some("user 1".into());
        msg.system.to = Some("/devices/d/messages/deviceBound".into());
        msg.system.absolute_expiry = Some(datetime!(3237-07-19 23:06:40 UTC));
        msg.system.content_type = Some("application/json".into());
        msg.system.content_encoding = Some("utf-8".into());
        msg.system.ack = AckMode::Positive;
        msg.properties.insert("z", "a b&c=d/e%f?g+h€");
        msg.properties.insert("a", "");
        assert_eq!(
            encode_c2d_topic("d", &msg),
            "devices/d/messages/devicebound/%24.mid=42&%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound\
             &%24.cid=fake_corid&%24.uid=user%201&%24.exp=3237-07-19T23%3A06%3A40.0000000Z\
             &%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=positive\
             &z=a%20b%26c%3Dd%2Fe%25f%3Fg%2Bh%E2%82%AC&a="
        );
    }

    #[test]
    fn c2d_decodes_the_python_sdk_fixtures() {
        let (id, msg) = decode_c2d_topic(
            "devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8&iothub-ack=positive",
        )
        .unwrap();
        assert_eq!(id, "fake_device");
        let sys = &msg.system;
        assert_eq!(sys.message_id, Some(MessageId::String(PY_MID.into())));
        assert_eq!(sys.correlation_id, Some("fake_corid".into()));
        assert_eq!(
            sys.to.as_deref(),
            Some("/devices/fake_device/messages/devicebound")
        );
        assert_eq!(
            sys.absolute_expiry,
            Some(datetime!(3237-07-19 23:06:40 UTC))
        );
        assert_eq!(sys.content_type.as_deref(), Some("fake_content_type"));
        assert_eq!(sys.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(sys.ack, AckMode::Positive);
        assert!(msg.properties.is_empty());
        assert!(msg.body.is_empty());

        let (_, msg) = decode_c2d_topic(
            "devices/fake_device/messages/devicebound/%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2FdeviceBound&iothub-ack=full",
        )
        .unwrap();
        assert_eq!(msg.system.ack, AckMode::Full);
        assert_eq!(
            msg.system.to.as_deref(),
            Some("/devices/fake_device/messages/deviceBound")
        );
    }

    #[test]
    fn c2d_decode_drops_unknown_system_keys_and_reads_nulls_as_empty() {
        let (id, msg) = decode_c2d_topic(
            "devices/d/messages/devicebound/%24.cdid=x&$.cmid=y&%24.mid&k&e=&iothub-ack=sometimes&p=a+b",
        )
        .unwrap();
        assert_eq!(id, "d");
        assert_eq!(msg.system.message_id, None);
        assert_eq!(msg.system.ack, AckMode::None);
        let props: Vec<_> = msg.properties.iter().collect();
        assert_eq!(
            props,
            vec![
                ("k", ""),
                ("e", ""),
                ("iothub-ack", "sometimes"),
                ("p", "a+b")
            ]
        );
        // No bag at all is fine for the device side.
        let (_, msg) = decode_c2d_topic("devices/d/messages/devicebound").unwrap();
        assert_eq!(msg, Message::default());
        assert!(matches!(
            decode_c2d_topic("devices/d/messages/devicebound/%24.exp=soon"),
            Err(BagError::BadExpiry { .. })
        ));
    }

    #[test]
    fn d2c_decodes_the_python_sdk_sample() {
        let (id, msg) = decode_d2c_topic(
            "devices/x/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20w",
        )
        .unwrap();
        assert_eq!(id, "x");
        assert_eq!(msg.system.message_id, Some("mid-1".into()));
        assert_eq!(msg.system.correlation_id, Some("cid-1".into()));
        assert_eq!(msg.system.content_type.as_deref(), Some("application/json"));
        assert_eq!(msg.system.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(
            msg.properties.iter().collect::<Vec<_>>(),
            vec![("k", "v w")]
        );
    }

    #[test]
    fn d2c_accepts_csharp_trailing_slash_question_mark_and_no_bag() {
        let (_, msg) = decode_d2c_topic(
            "devices/d/messages/events/%24.mid=m1&%24.ctime=2024-01-01T00%3A00%3A00.0000000Z&%24.on=out1&%24.ifid=i&%24.schema=s&%24.sub=t&%24.diagid=g&%24.diagctx=c&%24.uid=u&%24.to=%2Fx&%24.exp=2030-01-01T00%3A00%3A00.0000000Z&k=v/",
        )
        .unwrap();
        assert_eq!(msg.system.message_id, Some("m1".into()));
        assert_eq!(msg.system.user_id.as_deref(), Some("u"));
        assert_eq!(msg.system.to.as_deref(), Some("/x"));
        assert_eq!(
            msg.system.absolute_expiry,
            Some(datetime!(2030-01-01 00:00 UTC))
        );
        assert_eq!(
            msg.properties.iter().collect::<Vec<_>>(),
            vec![
                ("$.ctime", "2024-01-01T00:00:00.0000000Z"),
                ("$.on", "out1"),
                ("$.ifid", "i"),
                ("$.schema", "s"),
                ("$.sub", "t"),
                ("$.diagid", "g"),
                ("$.diagctx", "c"),
                ("k", "v"),
            ]
        );

        let (_, msg) =
            decode_d2c_topic("devices/d/messages/events/?$.ct=application%2Fjson&$.ce=utf-8")
                .unwrap();
        assert_eq!(msg.system.content_type.as_deref(), Some("application/json"));
        assert_eq!(msg.system.content_encoding.as_deref(), Some("utf-8"));

        for bare in [
            "devices/d/messages/events",
            "devices/d/messages/events/",
            "devices/d/messages/events/?",
            "devices/d/messages/events//",
        ] {
            let (id, msg) = decode_d2c_topic(bare).unwrap();
            assert_eq!((id.as_str(), msg), ("d", Message::default()), "{bare}");
        }
    }

    #[test]
    fn d2c_keeps_iothub_ack_and_nulls_as_properties() {
        let (_, msg) =
            decode_d2c_topic("devices/d/messages/events/iothub-ack=full&n&%24.ct").unwrap();
        assert_eq!(msg.system.ack, AckMode::None);
        assert_eq!(msg.system.content_type, None);
        assert_eq!(
            msg.properties.iter().collect::<Vec<_>>(),
            vec![("iothub-ack", "full"), ("n", "")]
        );
    }

    #[test]
    fn d2c_device_ids_may_hold_query_characters() {
        let topic = "devices/d?x=1%#/messages/events/k=v";
        assert_eq!(parse_d2c_device_id(topic), Some("d?x=1%#"));
        let (id, msg) = decode_d2c_topic(topic).unwrap();
        assert_eq!(id, "d?x=1%#");
        assert_eq!(msg.properties.get("k"), Some("v"));
    }

    #[test]
    fn d2c_rejects_other_topics() {
        for topic in [
            "",
            "devices/",
            "devices/d",
            "devices//messages/events/",
            "device/d/messages/events/",
            "devices/d/messages/event/",
            "devices/d/messages/eventsx",
            "devices/d/messages/events?k=v",
            "devices/a/b/messages/events/",
            "devices/d/messages/devicebound/",
            "devices/d/modules/m/messages/events/",
            "$iothub/twin/GET/?$rid=1",
        ] {
            assert!(
                matches!(decode_d2c_topic(topic), Err(BagError::BadTopic { .. })),
                "{topic}"
            );
            assert_eq!(parse_d2c_device_id(topic), None, "{topic}");
        }
        let err = decode_d2c_topic("devices/a/b/messages/events/").unwrap_err();
        assert!(
            err.to_string().contains("devices/a/b/messages/events/"),
            "{err}"
        );
        assert!(matches!(
            decode_c2d_topic("devices/d/messages/events/"),
            Err(BagError::BadTopic { .. })
        ));
    }

    #[test]
    fn d2c_bad_expiry_and_bad_escape_are_errors() {
        assert_eq!(
            decode_d2c_topic("devices/d/messages/events/%24.exp=tomorrow"),
            Err(BagError::BadExpiry {
                value: "tomorrow".into()
            })
        );
        assert!(matches!(
            decode_d2c_topic("devices/d/messages/events/%24.exp="),
            Err(BagError::BadExpiry { .. })
        ));
        assert!(matches!(
            decode_d2c_topic("devices/d/messages/events/k=%2"),
            Err(BagError::BadEscape { .. })
        ));
        let long = "x".repeat(1000);
        let err =
            decode_d2c_topic(&format!("devices/d/messages/events/%24.exp={long}")).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
        let hub: HubError = err.into();
        assert_eq!(hub.code(), crate::ErrorCode::ArgumentInvalid);
    }

    #[test]
    fn d2c_encodes_in_order() {
        let mut msg = Message::new("");
        msg.system.message_id = Some("mid-1".into());
        msg.system.correlation_id = Some("cid-1".into());
        msg.system.content_type = Some("application/json".into());
        msg.system.content_encoding = Some("utf-8".into());
        msg.system.ack = AckMode::Full;
        msg.properties.insert("k", "v w");
        assert_eq!(
            encode_d2c_topic("x", &msg),
            "devices/x/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20w"
        );
        assert_eq!(
            encode_d2c_topic("x", &Message::new("")),
            "devices/x/messages/events/"
        );
        msg.system.user_id = Some("u".into());
        msg.system.to = Some("/t".into());
        msg.system.absolute_expiry = Some(datetime!(2023-07-19 23:06:40.123456789 UTC));
        assert_eq!(
            encode_d2c_topic("x", &msg),
            "devices/x/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.uid=u&%24.to=%2Ft\
             &%24.exp=2023-07-19T23%3A06%3A40.1234567Z&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20w"
        );
    }

    // ---- property tests ----

    fn tricky_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ &=/%?+#$.a-z€é\u{1F600}]{0,12}",
            Just(String::new()),
        ]
    }

    fn message_id() -> impl Strategy<Value = MessageId> {
        prop_oneof![
            tricky_text().prop_map(MessageId::String),
            any::<u128>().prop_map(|n| MessageId::Uuid(Uuid::from_u128(n))),
            any::<u64>().prop_map(MessageId::Ulong),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(MessageId::Binary),
        ]
    }

    fn ack() -> impl Strategy<Value = AckMode> {
        prop_oneof![
            Just(AckMode::None),
            Just(AckMode::Positive),
            Just(AckMode::Negative),
            Just(AckMode::Full),
        ]
    }

    /// Whole seconds from 1970 to 9999 plus a 100 ns multiple: what `$.exp` can carry exactly.
    fn expiry() -> impl Strategy<Value = OffsetDateTime> {
        (0i64..253_402_300_800, 0i64..10_000_000).prop_map(|(s, ticks)| {
            OffsetDateTime::from_unix_timestamp(s).unwrap()
                + time::Duration::nanoseconds(ticks * 100)
        })
    }

    /// Application property names that the decoders do not read as system properties.
    fn app_name() -> impl Strategy<Value = String> {
        tricky_text().prop_filter("system or ack key", |n| {
            !n.starts_with(SYSTEM_PREFIX) && n != ACK_PROPERTY
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        let system = (
            proptest::option::of(message_id()),
            proptest::option::of(message_id()),
            proptest::option::of(tricky_text()),
            proptest::option::of(tricky_text()),
            proptest::option::of(expiry()),
            proptest::option::of(tricky_text()),
            proptest::option::of(tricky_text()),
            ack(),
        );
        let props = proptest::collection::vec((app_name(), tricky_text()), 0..6);
        (system, props).prop_map(|((mid, cid, uid, to, exp, ct, ce, ack), props)| Message {
            body: Vec::new(),
            system: crate::message::SystemProperties {
                message_id: mid,
                correlation_id: cid,
                user_id: uid,
                to,
                absolute_expiry: exp,
                content_type: ct,
                content_encoding: ce,
                ack,
                ..Default::default()
            },
            properties: props.into_iter().collect(),
        })
    }

    fn device_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.+%_#*?!(),=@$':;-]{1,20}"
    }

    /// What a decoder gives back: message ids become their canonical strings.
    fn as_decoded(msg: &Message) -> Message {
        let canon = |id: &Option<MessageId>| id.as_ref().map(|i| MessageId::String(i.canonical()));
        let mut out = Message::default();
        out.system.message_id = canon(&msg.system.message_id);
        out.system.correlation_id = canon(&msg.system.correlation_id);
        out.system.user_id = msg.system.user_id.clone();
        out.system.to = msg.system.to.clone();
        out.system.absolute_expiry = msg.system.absolute_expiry;
        out.system.content_type = msg.system.content_type.clone();
        out.system.content_encoding = msg.system.content_encoding.clone();
        out.system.ack = msg.system.ack;
        out.properties = msg.properties.clone();
        out
    }

    proptest! {
        #[test]
        fn values_round_trip(s in tricky_text()) {
            let enc = encode_value(&s);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(decode_value(&enc).unwrap(), s);
        }

        #[test]
        fn bags_round_trip(
            pairs in proptest::collection::vec(
                (tricky_text(), proptest::option::of(tricky_text())), 0..8),
        ) {
            let bag = encode_bag(pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
            let want: Vec<_> = pairs
                .into_iter()
                .filter(|(k, v)| !(k.is_empty() && v.is_none()))
                .collect();
            prop_assert_eq!(decode_bag(&bag).unwrap(), want.clone());
            prop_assert_eq!(decode_bag(&format!("?{bag}/")).unwrap(), want);
        }

        #[test]
        fn c2d_round_trips(id in device_id(), msg in message()) {
            let topic = encode_c2d_topic(&id, &msg);
            prop_assert!(topic.starts_with(&c2d_topic_prefix(&id)));
            let (got_id, got) = decode_c2d_topic(&topic).unwrap();
            let mut want = as_decoded(&msg);
            want.system.to.get_or_insert_with(|| format!("/devices/{id}/messages/devicebound"));
            prop_assert_eq!(got_id, id);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn d2c_round_trips(id in device_id(), msg in message()) {
            let topic = encode_d2c_topic(&id, &msg);
            prop_assert_eq!(parse_d2c_device_id(&topic), Some(id.as_str()));
            let (got_id, got) = decode_d2c_topic(&topic).unwrap();
            let mut want = as_decoded(&msg);
            want.system.ack = AckMode::None;
            prop_assert_eq!(&got_id, &id);
            prop_assert_eq!(&got, &want);
            // The C# SDK's trailing '/' changes nothing.
            prop_assert_eq!(decode_d2c_topic(&format!("{topic}/")).unwrap(), (id, want));
        }

        #[test]
        fn decoders_never_panic(s in any::<String>()) {
            let _ = decode_value(&s);
            let _ = decode_bag(&s);
            let _ = decode_c2d_topic(&s);
            let _ = decode_d2c_topic(&s);
            let _ = parse_d2c_device_id(&s);
        }

        #[test]
        fn decoders_never_panic_on_near_misses(
            id in "[a-z?=%#/]{0,4}",
            bag in "[%0-9a-fA-FgG&=?/$.+é ]{0,30}",
        ) {
            for endpoint in ["messages/events", "messages/devicebound", "messages/event"] {
                let topic = format!("devices/{id}/{endpoint}/{bag}");
                let _ = decode_c2d_topic(&topic);
                let _ = decode_d2c_topic(&topic);
                let _ = parse_d2c_device_id(&topic);
            }
            let _ = decode_bag(&bag);
        }
    }
}
