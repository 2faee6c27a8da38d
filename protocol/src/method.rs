//! Direct methods on the wire: the service's invocation body, the result it gets back, method
//! payloads kept as exact JSON text, and the MQTT topics a device uses.
//!
//! Reference: iothub-beyond-c2d.md 2. The emulator and both Rust clients use these, so the
//! device client builds the response topic the emulator parses, and the service client writes
//! the body the emulator reads.
//!
//! ```
//! use iothub_protocol::method::{CloudToDeviceMethod, request_topic, parse_response_topic};
//!
//! // What `POST /twins/{id}/methods` carries, as the Node service SDK sends it.
//! let body = br#"{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}"#;
//! let call = CloudToDeviceMethod::from_json(body)?.into_call()?;
//! assert_eq!(call.name, "reboot");
//! assert_eq!(call.payload.as_str(), r#"{"delay":5}"#);
//!
//! // The hub publishes the request, the device answers on the response topic.
//! assert_eq!(request_topic(&call.name, "7"), "$iothub/methods/POST/reboot/?$rid=7");
//! let answer = parse_response_topic("$iothub/methods/res/200/?$rid=7").unwrap();
//! assert_eq!((answer.status, answer.rid.as_str()), (200, "7"));
//! # Ok::<(), iothub_protocol::HubError>(())
//! ```

use std::fmt;
use std::ops::RangeInclusive;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::HubError;

/// Largest method payload, request or response: "a JSON document up to 128 KB" (D-DM).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// `responseTimeoutInSeconds` when the body has none.
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 30;
/// What the hub accepts for `responseTimeoutInSeconds`.
pub const RESPONSE_TIMEOUT_SECS: RangeInclusive<u32> = 5..=300;
/// `connectTimeoutInSeconds` when the body has none: the device must already be online.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 0;
/// What the hub accepts for `connectTimeoutInSeconds`.
pub const CONNECT_TIMEOUT_SECS: RangeInclusive<u32> = 0..=300;

/// Longest method name accepted. The hub documents no limit; this is the twin property-name
/// limit (1 KB), generous enough for Plug and Play `component*command` names.
pub const MAX_METHOD_NAME_LEN: usize = 1024;

/// The filter a device subscribes to for method requests.
pub const REQUEST_TOPIC_FILTER: &str = "$iothub/methods/POST/#";
/// Every method request topic starts with this.
pub const REQUEST_TOPIC_PREFIX: &str = "$iothub/methods/POST/";
/// Every method response topic starts with this.
pub const RESPONSE_TOPIC_PREFIX: &str = "$iothub/methods/res/";

// ---------------------------------------------------------------------------------------------
// Payloads

/// A JSON value kept as the exact text it arrived as.
///
/// Payloads pass through the hub unchanged: `null`, `""`, `"foo"`, `{}` and `{"k1":"v1"}` reach
/// the other side byte for byte, numbers keep their spelling and objects their key order. The
/// text is checked to be one JSON value once, when the payload is made; it is never empty.
#[derive(Clone)]
pub struct JsonPayload(Box<RawValue>);

/// Why bytes are not a usable method payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// More than [`MAX_PAYLOAD_BYTES`].
    #[error("the payload is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8, or not exactly one JSON value.
    #[error("the payload is not a JSON document: {reason}")]
    NotJson {
        /// What the parser said.
        reason: String,
    },
}

impl JsonPayload {
    /// The JSON `null`, what an absent payload means.
    pub fn null() -> Self {
        JsonPayload(RawValue::NULL.to_owned())
    }

    /// Checks `text` and keeps it (leading and trailing whitespace dropped).
    pub fn from_json(text: &str) -> Result<Self, PayloadError> {
        let raw: Box<RawValue> = serde_json::from_str(text).map_err(not_json)?;
        JsonPayload::checked(raw)
    }

    /// A method response body from a device: empty (or only whitespace) means `null`; anything
    /// else must be one JSON value of at most [`MAX_PAYLOAD_BYTES`].
    pub fn from_body(body: &[u8]) -> Result<Self, PayloadError> {
        if body.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge {
                size: body.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonPayload::null());
        }
        let text = std::str::from_utf8(body).map_err(not_json)?;
        JsonPayload::from_json(text)
    }

    /// Serializes `value` (for clients that hold a typed payload).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        let raw = serde_json::value::to_raw_value(value).map_err(not_json)?;
        JsonPayload::checked(raw)
    }

    fn checked(raw: Box<RawValue>) -> Result<Self, PayloadError> {
        let size = raw.get().len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge {
                size,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(JsonPayload(raw))
    }

    /// The JSON text: never empty, `null` for no payload.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON text as bytes, what goes into an MQTT or AMQP body.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.get().as_bytes()
    }

    /// Size of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Always false: a payload is at least `null`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True for the JSON `null`.
    pub fn is_null(&self) -> bool {
        self.as_str() == "null"
    }

    /// Parses the payload into a typed value.
    pub fn to_value<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

fn not_json(e: impl fmt::Display) -> PayloadError {
    PayloadError::NotJson {
        reason: e.to_string(),
    }
}

impl Default for JsonPayload {
    fn default() -> Self {
        JsonPayload::null()
    }
}

/// Payloads are equal when their texts are: `{"a":1}` and `{ "a": 1 }` differ, as they would
/// on the wire.
impl PartialEq for JsonPayload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonPayload {}

impl fmt::Debug for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPayload({})", self.as_str())
    }
}

impl fmt::Display for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JsonPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        JsonPayload::checked(raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// The service's request and result

/// The body of `POST /twins/{id}/methods` (SPEC `CloudToDeviceMethod`).
///
/// Fields the hub does not know are ignored (the Node SDK posts its whole parameter object). An
/// absent or `null` timeout means the hub's default; an absent payload means `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudToDeviceMethod {
    /// The method to call (required).
    #[serde(default)]
    pub method_name: String,
    /// The request payload.
    #[serde(default, deserialize_with = "any_size_payload")]
    pub payload: JsonPayload,
    /// Seconds the hub waits for the device's answer once the request is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<i64>,
    /// Seconds the hub waits for the device to come online and subscribe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<i64>,
}

/// A checked invocation: what the hub acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodCall {
    /// The method name, valid per [`validate_method_name`].
    pub name: String,
    /// The request payload.
    pub payload: JsonPayload,
    /// How long to wait for the device to connect and subscribe, in [`CONNECT_TIMEOUT_SECS`].
    pub connect_timeout_secs: u32,
    /// How long to wait for the answer, in [`RESPONSE_TIMEOUT_SECS`].
    pub response_timeout_secs: u32,
}

impl MethodCall {
    /// A call with the hub's default timeouts (connect 0 s, response 30 s).
    pub fn new(name: impl Into<String>, payload: JsonPayload) -> Self {
        MethodCall {
            name: name.into(),
            payload,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            response_timeout_secs: DEFAULT_RESPONSE_TIMEOUT_SECS,
        }
    }
}

impl MethodCall {
    /// Checks the hub's rules: a valid name, a payload of at most 128 KB, timeouts in range.
    /// [`CloudToDeviceMethod::into_call`] only returns calls that pass; the hub checks again, so
    /// a call built by hand cannot bypass the rules.
    pub fn check(&self) -> Result<(), HubError> {
        validate_method_name(&self.name).map_err(HubError::argument)?;
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(HubError::MessageTooLarge {
                size: self.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        timeout(
            "responseTimeoutInSeconds",
            Some(self.response_timeout_secs.into()),
            DEFAULT_RESPONSE_TIMEOUT_SECS,
            RESPONSE_TIMEOUT_SECS,
        )?;
        timeout(
            "connectTimeoutInSeconds",
            Some(self.connect_timeout_secs.into()),
            DEFAULT_CONNECT_TIMEOUT_SECS,
            CONNECT_TIMEOUT_SECS,
        )?;
        Ok(())
    }
}

impl CloudToDeviceMethod {
    /// A request body with only the method name and payload (the hub's default timeouts).
    pub fn new(method_name: impl Into<String>, payload: JsonPayload) -> Self {
        CloudToDeviceMethod {
            method_name: method_name.into(),
            payload,
            ..CloudToDeviceMethod::default()
        }
    }

    /// Reads a request body. Errors are `ArgumentInvalid` (not JSON, wrong field types, a
    /// payload that is not JSON) or `MessageTooLarge` (payload over 128 KB).
    pub fn from_json(body: &[u8]) -> Result<Self, HubError> {
        let m: CloudToDeviceMethod = serde_json::from_slice(body).map_err(|e| {
            HubError::argument(format!(
                "the request body is not a valid method invocation (CloudToDeviceMethod): {e}"
            ))
        })?;
        if m.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(HubError::MessageTooLarge {
                size: m.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(m)
    }

    /// Checks the name and the timeouts and fills in the defaults. Range errors carry the hub's
    /// text, e.g. `responseTimeoutInSeconds must be within [5; 300].` (azure-iot-sdk-csharp#724).
    pub fn into_call(self) -> Result<MethodCall, HubError> {
        validate_method_name(&self.method_name).map_err(HubError::argument)?;
        let response_timeout_secs = timeout(
            "responseTimeoutInSeconds",
            self.response_timeout_in_seconds,
            DEFAULT_RESPONSE_TIMEOUT_SECS,
            RESPONSE_TIMEOUT_SECS,
        )?;
        let connect_timeout_secs = timeout(
            "connectTimeoutInSeconds",
            self.connect_timeout_in_seconds,
            DEFAULT_CONNECT_TIMEOUT_SECS,
            CONNECT_TIMEOUT_SECS,
        )?;
        let call = MethodCall {
            name: self.method_name,
            payload: self.payload,
            connect_timeout_secs,
            response_timeout_secs,
        };
        call.check()?;
        Ok(call)
    }
}

impl From<MethodCall> for CloudToDeviceMethod {
    fn from(call: MethodCall) -> Self {
        CloudToDeviceMethod {
            method_name: call.name,
            payload: call.payload,
            response_timeout_in_seconds: Some(call.response_timeout_secs.into()),
            connect_timeout_in_seconds: Some(call.connect_timeout_secs.into()),
        }
    }
}

/// Reads a payload of any size, so that [`CloudToDeviceMethod::from_json`] can answer an
/// oversized one with `MessageTooLarge` rather than a parse error.
fn any_size_payload<'de, D: Deserializer<'de>>(d: D) -> Result<JsonPayload, D::Error> {
    Box::<RawValue>::deserialize(d).map(JsonPayload)
}

fn timeout(
    field: &str,
    value: Option<i64>,
    default: u32,
    range: RangeInclusive<u32>,
) -> Result<u32, HubError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(HubError::argument(format!(
            "{field} must be within [{}; {}].",
            range.start(),
            range.end()
        ))),
    }
}

/// What the service gets back: the device's status and payload (SPEC
/// `CloudToDeviceMethodResult`), answered with HTTP 200 whatever the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudToDeviceMethodResult {
    /// The status the device answered with.
    pub status: i32,
    /// The device's payload, embedded as a JSON value (`null` for an empty body).
    #[serde(default)]
    pub payload: JsonPayload,
}

// ---------------------------------------------------------------------------------------------
// Method names

/// True when `c` may appear in a method name: printable US-ASCII except the separators the docs
/// exclude (`$ ( ) < > @ , ; : \ " / [ ] ? = { }`, space, tab) and the MQTT wildcards `#` and
/// `+`, which cannot appear in the request topic.
pub fn is_method_name_char(c: char) -> bool {
    c.is_ascii_graphic() && !"$()<>@,;:\\\"/[]?={}#+".contains(c)
}

/// Checks a method name. The character set is the one the direct-methods article gives for
/// names and values (D-DM); the hub's own checks are not documented (open question 10).
///
/// Returns a human-readable reason on failure, suitable for an `ArgumentInvalid` error.
pub fn validate_method_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("methodName is required and must not be empty".into());
    }
    if name.len() > MAX_METHOD_NAME_LEN {
        return Err(format!(
            "methodName is {} characters long; at most {MAX_METHOD_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_method_name_char(*c)) {
        return Err(format!(
            "methodName contains {bad:?}; only printable US-ASCII characters other than $ ( ) < > @ , ; : \\ \" / [ ] ? = {{ }} # + and spaces are allowed"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// MQTT topics

/// `$iothub/methods/POST/{name}/?$rid={rid}`: nothing after the rid, because the C and C#
/// SDKs take everything after `?$rid=` as the request id.
pub fn request_topic(name: &str, rid: &str) -> String {
    format!("{REQUEST_TOPIC_PREFIX}{name}/?$rid={rid}")
}

/// A method request topic, read the way a device does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTopic<'a> {
    /// The method name (as sent: not percent-decoded, like the Node and C SDKs).
    pub name: &'a str,
    /// The request id to answer with.
    pub rid: String,
}

/// Reads `$iothub/methods/POST/{name}/?$rid={rid}` (other query parameters are ignored, the
/// rid is percent-decoded). `None` if the topic is not a method request.
pub fn parse_request_topic(topic: &str) -> Option<RequestTopic<'_>> {
    let rest = topic.strip_prefix(REQUEST_TOPIC_PREFIX)?;
    let (path, query) = rest.split_once('?')?;
    let name = path.strip_suffix('/').unwrap_or(path);
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(RequestTopic {
        name,
        rid: rid_in(query)?,
    })
}

/// `$iothub/methods/res/{status}/?$rid={rid}`, as every SDK writes it.
pub fn response_topic(status: i32, rid: &str) -> String {
    format!("{RESPONSE_TOPIC_PREFIX}{status}/?$rid={rid}")
}

/// A device's answer topic, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTopic {
    /// The status the device answered with.
    pub status: i32,
    /// The request id it answers.
    pub rid: String,
}

/// Why a topic under [`RESPONSE_TOPIC_PREFIX`] is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseTopicError {
    /// The topic does not start with [`RESPONSE_TOPIC_PREFIX`].
    #[error("not a method response topic")]
    NotAResponse,
    /// The status segment is not a 32-bit integer.
    #[error("the status '{0}' in a method response topic is not an integer")]
    BadStatus(String),
    /// No `$rid` query parameter, or an empty one.
    #[error("a method response topic has no $rid")]
    NoRid,
}

/// Reads a method response topic leniently: `res/200/?$rid=1` (all SDKs), `res/200?$rid=1`,
/// extra query parameters in any order, and percent-encoded status and rid (Python quotes
/// both).
pub fn parse_response_topic(topic: &str) -> Result<ResponseTopic, ResponseTopicError> {
    let rest = topic
        .strip_prefix(RESPONSE_TOPIC_PREFIX)
        .ok_or(ResponseTopicError::NotAResponse)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let raw_status = path.strip_suffix('/').unwrap_or(path);
    let status = decode(raw_status)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ResponseTopicError::BadStatus(raw_status.to_owned()))?;
    let rid = rid_in(query).ok_or(ResponseTopicError::NoRid)?;
    Ok(ResponseTopic { status, rid })
}

/// The percent-decoded, non-empty value of `$rid` in a query string.
fn rid_in(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| decode(k).is_some_and(|k| k == "$rid"))
        .and_then(|(_, v)| decode(v))
        .filter(|v| !v.is_empty())
}

fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests;
