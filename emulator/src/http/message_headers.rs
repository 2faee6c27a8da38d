//! A message's properties as HTTP headers, both ways.
//!
//! Reference: iothub-protocol.md 4.2 (what a device receives with a C2D message) and 4.3 (what a
//! device sends with D2C). Application properties travel as `iothub-app-<name>`. HTTP/1 header
//! names are case-insensitive and arrive lower-cased, so a property name read from a header is
//! lower-case.
//!
//! Header values must be visible ASCII. A value made only of printable ASCII (inner spaces
//! allowed) is sent unchanged; in any other value, each byte outside printable ASCII, and a
//! leading or trailing space, is percent-encoded as `%XX` of its UTF-8 bytes (a `%` already in
//! the value is left alone, so such a value cannot be told apart from an encoded one). The
//! official SDKs never produce such values over HTTPS; MQTT and AMQP can, and refusing the
//! message at receive time would wedge the device's queue.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use iothub_protocol::time_format::{format_millis, parse as parse_time};
use iothub_protocol::{AckMode, HubError, Message, MessageId};

/// Prefix of an application-property header.
pub const APP_PREFIX: &str = "iothub-app-";
/// Message id.
pub const MESSAGE_ID: &str = "iothub-messageid";
/// Correlation id.
pub const CORRELATION_ID: &str = "iothub-correlationid";
/// User id.
pub const USER_ID: &str = "iothub-userid";
/// Absolute expiry time.
pub const EXPIRY: &str = "iothub-expiry";
/// Feedback request.
pub const ACK: &str = "iothub-ack";
/// Content type of a D2C message or of the emulator's send route.
pub const CONTENT_TYPE: &str = "iothub-contenttype";
/// Content encoding of a D2C message or of the emulator's send route.
pub const CONTENT_ENCODING: &str = "iothub-contentencoding";
/// Hub-assigned sequence number.
pub const SEQUENCE_NUMBER: &str = "iothub-sequencenumber";
/// Hub-assigned enqueue time.
pub const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
/// How many times the message was delivered and released before.
pub const DELIVERY_COUNT: &str = "iothub-deliverycount";
/// The address the message was sent to.
pub const TO: &str = "iothub-to";

/// D2C system headers that have no field in [`Message`]: kept as application properties under
/// their header name, so the control API shows them.
const KEPT_AS_PROPERTIES: [&str; 5] = [
    "iothub-creationtimeutc",
    "iothub-interface-id",
    "iothub-messageschema",
    "dt-subject",
    "dt-dataschema",
];

/// A header value for arbitrary text, escaped as the module documentation says.
pub fn header_value(s: &str) -> HeaderValue {
    let bytes = s.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i == last);
        if (0x20..=0x7e).contains(&b) && !edge_space {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only printable ASCII is left, which is always a valid header value.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn put(headers: &mut HeaderMap, name: &str, value: &str) {
    if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
        headers.append(name, header_value(value));
    }
}

/// The headers of a C2D message handed to a device over HTTPS, `ETag` (the quoted lock token)
/// included.
pub fn devicebound_headers(m: &Message) -> HeaderMap {
    let mut h = HeaderMap::new();
    let s = &m.system;
    if let Some(lock) = &s.lock_token {
        put(&mut h, "etag", &format!("\"{lock}\""));
    }
    if let Some(id) = &s.message_id {
        put(&mut h, MESSAGE_ID, &id.canonical());
    }
    if let Some(id) = &s.correlation_id {
        put(&mut h, CORRELATION_ID, &id.canonical());
    }
    if let Some(n) = s.sequence_number {
        put(&mut h, SEQUENCE_NUMBER, &n.to_string());
    }
    if let Some(t) = s.enqueued_time {
        put(&mut h, ENQUEUED_TIME, &format_millis(t));
    }
    if let Some(t) = s.absolute_expiry {
        put(&mut h, EXPIRY, &format_millis(t));
    }
    put(
        &mut h,
        DELIVERY_COUNT,
        &s.delivery_count.unwrap_or_default().to_string(),
    );
    if let Some(to) = &s.to {
        put(&mut h, TO, to);
    }
    if let Some(u) = &s.user_id {
        put(&mut h, USER_ID, u);
    }
    put(&mut h, ACK, s.ack.as_str());
    // The C SDK reads these two names on C2D (it uses iothub-contenttype only for D2C).
    if let Some(ct) = &s.content_type {
        put(&mut h, "contenttype", ct);
    }
    if let Some(ce) = &s.content_encoding {
        put(&mut h, "contentencoding", ce);
    }
    for (name, value) in m.properties.iter() {
        put(&mut h, &format!("{APP_PREFIX}{name}"), value);
    }
    h
}

/// Applies one property given as a header name and value (or a key of a batch item's
/// `properties`). Unknown names are ignored, as the hub ignores headers it does not know.
pub fn apply_property(m: &mut Message, name: &str, value: &str) -> Result<(), HubError> {
    let lower = name.to_ascii_lowercase();
    if let Some(app) = name
        .get(APP_PREFIX.len()..)
        .filter(|_| lower.starts_with(APP_PREFIX))
    {
        m.properties.insert(app, value);
        return Ok(());
    }
    let s = &mut m.system;
    match lower.as_str() {
        MESSAGE_ID => s.message_id = Some(MessageId::from(value)),
        CORRELATION_ID => s.correlation_id = Some(MessageId::from(value)),
        USER_ID => s.user_id = Some(value.to_owned()),
        CONTENT_TYPE => s.content_type = Some(value.to_owned()),
        CONTENT_ENCODING => s.content_encoding = Some(value.to_owned()),
        EXPIRY => {
            s.absolute_expiry = Some(parse_time(value).ok_or_else(|| {
                HubError::argument(format!(
                    "{EXPIRY} must be an RFC 3339 time such as 2030-01-01T00:00:00Z (got '{value}')"
                ))
            })?);
        }
        ACK => {
            s.ack = AckMode::parse(value.trim()).ok_or_else(|| {
                HubError::argument(format!(
                    "{ACK} must be none, positive, negative or full (got '{value}')"
                ))
            })?;
        }
        other if KEPT_AS_PROPERTIES.contains(&other) => m.properties.insert(other, value),
        _ => {}
    }
    Ok(())
}

/// A message from a request's `iothub-*` headers and its body.
pub fn message_from_headers(headers: &HeaderMap, body: Vec<u8>) -> Result<Message, HubError> {
    let mut m = Message::new(body);
    for (name, value) in headers {
        let name = name.as_str();
        if !(name.starts_with("iothub-") || name.starts_with("dt-")) {
            continue;
        }
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            HubError::argument(format!("the value of header {name} is not valid UTF-8"))
        })?;
        apply_property(&mut m, name, value)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn printable_values_pass_and_others_are_percent_encoded() {
        assert_eq!(header_value("a b&c=d/e?f"), "a b&c=d/e?f");
        assert_eq!(header_value("é"), "%C3%A9");
        assert_eq!(header_value("a\nb"), "a%0Ab");
        assert_eq!(header_value(" x "), "%20x%20");
        assert_eq!(header_value(""), "");
    }

    #[test]
    fn c2d_headers_carry_every_property() {
        let mut m = Message::new("hi");
        m.system.message_id = Some("m1".into());
        m.system.correlation_id = Some("c1".into());
        m.system.sequence_number = Some(7);
        m.system.enqueued_time = Some(datetime!(2030-01-01 0:00 UTC));
        m.system.absolute_expiry = Some(datetime!(2030-01-01 1:00 UTC));
        m.system.delivery_count = Some(2);
        m.system.lock_token = Some("tok".into());
        m.system.to = Some("/devices/d/messages/devicebound".into());
        m.system.user_id = Some("svc".into());
        m.system.ack = AckMode::Full;
        m.system.content_type = Some("application/json".into());
        m.system.content_encoding = Some("utf-8".into());
        m.properties.insert("Color", "blue green");
        let h = devicebound_headers(&m);
        assert_eq!(h["etag"], "\"tok\"");
        assert_eq!(h[MESSAGE_ID], "m1");
        assert_eq!(h[CORRELATION_ID], "c1");
        assert_eq!(h[SEQUENCE_NUMBER], "7");
        assert_eq!(h[ENQUEUED_TIME], "2030-01-01T00:00:00.000Z");
        assert_eq!(h[EXPIRY], "2030-01-01T01:00:00.000Z");
        assert_eq!(h[DELIVERY_COUNT], "2");
        assert_eq!(h[TO], "/devices/d/messages/devicebound");
        assert_eq!(h[USER_ID], "svc");
        assert_eq!(h[ACK], "full");
        assert_eq!(h["ContentType"], "application/json");
        assert_eq!(h["ContentEncoding"], "utf-8");
        assert_eq!(h["iothub-app-Color"], "blue green");
    }

    #[test]
    fn headers_become_a_message() {
        let mut h = HeaderMap::new();
        h.insert("iothub-messageid", "m1".parse().unwrap());
        h.insert("iothub-app-temp", "21".parse().unwrap());
        h.insert("iothub-expiry", "2030-01-01T00:00:00Z".parse().unwrap());
        h.insert("iothub-ack", "positive".parse().unwrap());
        h.insert("iothub-creationtimeutc", "2030".parse().unwrap());
        h.insert("iothub-operation", "ignored".parse().unwrap());
        h.insert("authorization", "secret".parse().unwrap());
        let m = message_from_headers(&h, b"x".to_vec()).unwrap();
        assert_eq!(m.system.message_id, Some("m1".into()));
        assert_eq!(m.properties.get("temp"), Some("21"));
        assert_eq!(m.properties.get("iothub-creationtimeutc"), Some("2030"));
        assert_eq!(m.properties.len(), 2);
        assert_eq!(m.system.ack, AckMode::Positive);
        assert_eq!(
            m.system.absolute_expiry,
            Some(datetime!(2030-01-01 0:00 UTC))
        );
        h.insert("iothub-ack", "often".parse().unwrap());
        assert!(message_from_headers(&h, vec![]).is_err());
    }

    #[test]
    fn batch_keys_keep_the_property_case() {
        let mut m = Message::new("");
        apply_property(&mut m, "IoTHub-App-Color", "red").unwrap();
        assert_eq!(m.properties.get("Color"), Some("red"));
    }
}
