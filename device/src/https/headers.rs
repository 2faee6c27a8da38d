//! How a message travels as HTTP headers (iothub-protocol.md 4.2, 4.3), and what an HTTP
//! error answer means (6.4).

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use iothub_protocol::client::HubReply;
use iothub_protocol::{AckMode, ErrorCode, Message, MessageId, time_format};

use crate::error::Error;

/// Prefix of an application property header.
const APP_PREFIX: &str = "iothub-app-";

fn header(name: &str, value: &str, what: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::ArgumentInvalid {
        message: format!(
            "the message cannot be sent: {what} cannot be an HTTP header name; over HTTPS property names may only use ASCII letters, digits and ! # $ % & ' * + - . ^ _ ` | ~"
        ),
    })?;
    let value = HeaderValue::from_str(value).map_err(|_| Error::ArgumentInvalid {
        message: format!(
            "the message cannot be sent: the value of {what} cannot be an HTTP header value; over HTTPS values must be printable ASCII (use MQTT for other text)"
        ),
    })?;
    Ok((name, value))
}

/// The headers of a D2C `POST .../messages/events` for `msg`; `to` is the route's path
/// (`/devices/{id}/messages/events`, or the module's), unencoded, as the SDKs send it.
pub(crate) fn d2c_headers(
    to: &str,
    msg: &Message,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let sys = &msg.system;
    let mut out = vec![header("iothub-to", to, "iothub-to")?];
    let mut add = |name: &str, value: Option<String>| -> Result<(), Error> {
        if let Some(v) = value {
            out.push(header(name, &v, name)?);
        }
        Ok(())
    };
    add(
        "iothub-messageid",
        sys.message_id.as_ref().map(MessageId::canonical),
    )?;
    add(
        "iothub-correlationid",
        sys.correlation_id.as_ref().map(MessageId::canonical),
    )?;
    add("iothub-userid", sys.user_id.clone())?;
    add(
        "iothub-expiry",
        sys.absolute_expiry.map(time_format::format_round_trip),
    )?;
    add("iothub-contenttype", sys.content_type.clone())?;
    add("iothub-contentencoding", sys.content_encoding.clone())?;
    for (name, value) in msg.properties.iter() {
        out.push(header(
            &format!("{APP_PREFIX}{name}"),
            value,
            &format!("property '{name}'"),
        )?);
    }
    Ok(out)
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A C2D message from the headers and body of a `200` answer to `GET .../deviceBound`, and
/// its lock token (the `ETag`, without quotes).
pub(crate) fn c2d_from_response(headers: &HeaderMap, body: Vec<u8>) -> Result<Message, Error> {
    let etag = text(headers, "etag").ok_or_else(|| Error::Protocol {
        message: "the hub sent a message without an ETag, so it cannot be settled".into(),
    })?;
    let lock_token = etag.trim().trim_matches('"').to_owned();
    let mut msg = Message::new(body);
    let sys = &mut msg.system;
    sys.lock_token = Some(lock_token);
    sys.message_id = text(headers, "iothub-messageid").map(MessageId::String);
    sys.correlation_id = text(headers, "iothub-correlationid").map(MessageId::String);
    sys.user_id = text(headers, "iothub-userid");
    sys.to = text(headers, "iothub-to");
    sys.sequence_number =
        text(headers, "iothub-sequencenumber").and_then(|v| v.trim().parse().ok());
    sys.delivery_count = text(headers, "iothub-deliverycount").and_then(|v| v.trim().parse().ok());
    sys.enqueued_time = text(headers, "iothub-enqueuedtime").and_then(|v| time_format::parse(&v));
    sys.absolute_expiry = text(headers, "iothub-expiry").and_then(|v| time_format::parse(&v));
    // The C SDK reads `ContentType`/`ContentEncoding` on C2D; accept the D2C spelling too.
    sys.content_type = text(headers, "contenttype").or_else(|| text(headers, "iothub-contenttype"));
    sys.content_encoding =
        text(headers, "contentencoding").or_else(|| text(headers, "iothub-contentencoding"));
    if let Some(ack) = text(headers, "iothub-ack") {
        match AckMode::parse(&ack) {
            Some(mode) => sys.ack = mode,
            None => msg.properties.insert("iothub-ack", ack),
        }
    }
    for (name, value) in headers {
        if let Some(prop) = name.as_str().strip_prefix(APP_PREFIX) {
            msg.properties
                .insert(prop, String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    Ok(msg)
}

/// What an error answer means. `sent` is the size of the message that was sent, if any.
pub(crate) fn error_from_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    device_id: &str,
    sent: Option<usize>,
) -> Error {
    let header = text(headers, "iothub-errorcode");
    let reply = HubReply::from_http(status, header.as_deref(), body);
    let code = reply.code_or(code_for_status);
    Error::from_reply(HubReply { code, ..reply }, device_id, sent)
}

/// The code an HTTPS status stands for on the device routes when the hub names none: a 404
/// can only be the device, a 412 only a settlement's lock.
fn code_for_status(status: u16) -> Option<ErrorCode> {
    Some(match status {
        401 => ErrorCode::IotHubUnauthorizedAccess,
        404 => ErrorCode::DeviceNotFound,
        412 => ErrorCode::DeviceMessageLockLost,
        413 => ErrorCode::MessageTooLarge,
        429 => ErrorCode::ThrottlingException,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_protocol::message::MAX_D2C_SIZE;
    use time::macros::datetime;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn d2c_headers_carry_every_settable_property() {
        let mut m = Message::new("x");
        m.system.message_id = Some("mid-1".into());
        m.system.correlation_id = Some("cid-1".into());
        m.system.user_id = Some("u".into());
        m.system.content_type = Some("application/json".into());
        m.system.content_encoding = Some("utf-8".into());
        m.system.absolute_expiry = Some(datetime!(2030-01-02 03:04:05 UTC));
        m.properties.insert("Temp", "21.5 C");
        let h = d2c_headers("/devices/d1/messages/events", &m).unwrap();
        let got: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let want = [
            ("iothub-to", "/devices/d1/messages/events"),
            ("iothub-messageid", "mid-1"),
            ("iothub-correlationid", "cid-1"),
            ("iothub-userid", "u"),
            ("iothub-expiry", "2030-01-02T03:04:05.0000000Z"),
            ("iothub-contenttype", "application/json"),
            ("iothub-contentencoding", "utf-8"),
            ("iothub-app-temp", "21.5 C"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn d2c_headers_refuse_what_http_cannot_carry() {
        let mut m = Message::new("x");
        m.properties.insert("bad name", "v");
        assert!(matches!(
            d2c_headers("/devices/d/messages/events", &m),
            Err(Error::ArgumentInvalid { .. })
        ));
        let mut m = Message::new("x");
        m.properties.insert("k", "line\nbreak");
        let err = d2c_headers("/devices/d/messages/events", &m).unwrap_err();
        assert!(err.to_string().contains("property 'k'"), "{err}");
    }

    #[test]
    fn c2d_headers_become_a_message() {
        let h = map(&[
            ("ETag", "\"0f8fad5b-d9cb-469f-a165-70867728950e\""),
            ("iothub-messageid", "m1"),
            ("iothub-correlationid", "c1"),
            ("iothub-userid", "hub"),
            ("iothub-to", "/devices/d1/messages/devicebound"),
            ("iothub-sequencenumber", "42"),
            ("iothub-deliverycount", "1"),
            ("iothub-enqueuedtime", "2024-05-06T07:08:09.123Z"),
            ("iothub-expiry", "2024-05-06T08:08:09.123Z"),
            ("iothub-ack", "full"),
            ("ContentType", "text/plain"),
            ("ContentEncoding", "utf-8"),
            ("iothub-app-Property", "PropMsg_0"),
            ("iothub-app-other", "a b"),
        ]);
        let m = c2d_from_response(&h, b"hello".to_vec()).unwrap();
        let s = &m.system;
        assert_eq!(m.body, b"hello");
        assert_eq!(
            s.lock_token.as_deref(),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_eq!(s.message_id, Some("m1".into()));
        assert_eq!(s.correlation_id, Some("c1".into()));
        assert_eq!(s.user_id.as_deref(), Some("hub"));
        assert_eq!(s.to.as_deref(), Some("/devices/d1/messages/devicebound"));
        assert_eq!(s.sequence_number, Some(42));
        assert_eq!(s.delivery_count, Some(1));
        assert_eq!(
            s.enqueued_time,
            Some(datetime!(2024-05-06 07:08:09.123 UTC))
        );
        assert_eq!(
            s.absolute_expiry,
            Some(datetime!(2024-05-06 08:08:09.123 UTC))
        );
        assert_eq!(s.ack, AckMode::Full);
        assert_eq!(s.content_type.as_deref(), Some("text/plain"));
        assert_eq!(s.content_encoding.as_deref(), Some("utf-8"));
        // HTTP header names are case-insensitive; they arrive lower-cased.
        assert_eq!(m.properties.get("property"), Some("PropMsg_0"));
        assert_eq!(m.properties.get("other"), Some("a b"));
        assert_eq!(m.properties.len(), 2);
    }

    #[test]
    fn a_message_without_etag_is_an_error() {
        assert!(c2d_from_response(&HeaderMap::new(), Vec::new()).is_err());
    }

    #[test]
    fn error_answers_map_to_typed_errors() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;dev \"x\"","ExceptionMessage":"Tracking ID:ab-G:0-TimeStamp:01/02/2024 03:04:05"}"#;
        let h = map(&[("iothub-errorcode", "DeviceNotFound")]);
        let e = error_from_response(404, &h, body, "x", None);
        assert!(
            matches!(e, Error::DeviceNotFound { ref message } if message.contains("'x'")),
            "{e:?}"
        );
        let e = error_from_response(401, &HeaderMap::new(), b"", "x", None);
        assert!(matches!(
            e,
            Error::Unauthorized {
                code: ErrorCode::IotHubUnauthorizedAccess,
                ..
            }
        ));
        let body = br#"{"Message":"ErrorCode:DeviceMessageLockLost;gone","ExceptionMessage":""}"#;
        let e = error_from_response(412, &HeaderMap::new(), body, "x", None);
        assert!(
            matches!(e, Error::DeviceMessageLockLost { ref message } if message.contains("gone"))
        );
        assert_eq!(e.code(), Some(ErrorCode::DeviceMessageLockLost));
        let e = error_from_response(
            429,
            &map(&[("iothub-errorcode", "ThrottlingException")]),
            b"",
            "x",
            None,
        );
        assert!(matches!(
            e,
            Error::Throttled {
                code: ErrorCode::ThrottlingException,
                ..
            }
        ));
        assert_eq!(
            error_from_response(413, &HeaderMap::new(), b"", "x", Some(300_000)),
            Error::MessageTooLarge {
                size: 300_000,
                max: MAX_D2C_SIZE
            }
        );
        let e = error_from_response(503, &HeaderMap::new(), b"busy", "x", None);
        assert_eq!(
            e,
            Error::Hub {
                status: Some(503),
                code: None,
                message: "busy".into()
            }
        );
    }
}
