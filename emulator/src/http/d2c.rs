//! Device-to-cloud telemetry over HTTPS: `POST /devices/{id}/messages/events`.
//!
//! Reference: iothub-protocol.md 4.3. A single message is the body plus `iothub-*` headers. A
//! batch is `Content-Type: application/vnd.microsoft.iothub.json` with a JSON array of
//! `{"body": "<base64>", "base64Encoded": true|false, "properties": {"iothub-app-k": "v", ...}}`
//! (`base64Encoded` defaults to true, as the C# SDK omits it; with `false` the body is the JSON
//! string's text, or the JSON value itself for the C SDK). The hub checks sizes and accepts a
//! batch all or nothing (`hub/telemetry.rs`); this file only decodes. Both answer 204 and need
//! the device's token (or a policy with DeviceConnect).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::message::MAX_D2C_SIZE;
use iothub_protocol::{HubError, Message};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::extract::{DeviceIdParam, media_type, parse_json, read_body};
use super::message_headers::{apply_property, message_from_headers};
use crate::auth::Need;
use crate::hub::{Identity, Origin};

/// Content type that marks a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.json";
/// Largest batch body: 256 KB of data grows by a third in base64, plus JSON and properties.
pub const BATCH_BODY_LIMIT: usize = MAX_D2C_SIZE / 3 * 4 + 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    body: Value,
    #[serde(default = "yes")]
    base64_encoded: bool,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
}

fn yes() -> bool {
    true
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl BatchItem {
    fn into_message(self, index: usize) -> Result<Message, HubError> {
        let body = match (&self.body, self.base64_encoded) {
            (Value::String(s), true) => STANDARD.decode(s).map_err(|_| {
                HubError::argument(format!(
                    "batch item {index}: body is not valid base64 (set \"base64Encoded\": false for a plain body)"
                ))
            })?,
            (_, true) => {
                return Err(HubError::argument(format!(
                    "batch item {index}: a base64-encoded body must be a JSON string"
                )));
            }
            (Value::String(s), false) => s.clone().into_bytes(),
            (other, false) => other.to_string().into_bytes(),
        };
        let mut m = Message::new(body);
        for (name, value) in &self.properties {
            apply_property(&mut m, name, &text_of(value))?;
        }
        Ok(m)
    }
}

pub(super) fn parse_batch(bytes: &[u8]) -> Result<Vec<Message>, HubError> {
    let items: Vec<BatchItem> = parse_json(bytes, "D2C batch (a JSON array of messages)")?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| item.into_message(i))
        .collect()
}

/// `POST /devices/{id}/messages/events`, single or batch.
pub async fn send_event(
    State(st): State<AppState>,
    token: Token,
    DeviceIdParam(id): DeviceIdParam,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let grant = token.authorize(&st.ctx, Need::Device(&id))?;
    let origin = Origin {
        identity: Identity::device(id.as_str()),
        auth: grant.auth_method(),
    };
    record(&st, &origin, &headers, body).await
}

/// Records one message or a batch from `origin` (a device, or a module: `modules.rs`).
pub(super) async fn record(
    st: &AppState,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    if media_type(headers).as_deref() == Some(BATCH_CONTENT_TYPE) {
        let bytes = read_body(body, headers, BATCH_BODY_LIMIT).await?;
        let messages = parse_batch(&bytes)?;
        st.ctx
            .hub
            .run(|hub, now| hub.send_telemetry_batch(origin, messages, now))?;
    } else {
        let bytes = read_body(body, headers, MAX_D2C_SIZE).await?;
        let message = message_from_headers(headers, bytes.to_vec())?;
        st.ctx
            .hub
            .run(|hub, now| hub.send_telemetry(origin, message, now))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items_decode_and_carry_properties() {
        let body = br#"[
            {"body":"aGk=","properties":{"iothub-app-k":"v","iothub-messageid":"m1"}},
            {"body":"plain","base64Encoded":false},
            {"body":{"t":1},"base64Encoded":false}
        ]"#;
        let ms = parse_batch(body).unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].body, b"hi");
        assert_eq!(ms[0].properties.get("k"), Some("v"));
        assert_eq!(ms[0].system.message_id, Some("m1".into()));
        assert_eq!(ms[1].body, b"plain");
        assert_eq!(ms[2].body, br#"{"t":1}"#);
    }

    #[test]
    fn bad_batches_are_refused() {
        assert!(matches!(
            parse_batch(b"{}"),
            Err(HubError::ArgumentInvalid { .. })
        ));
        assert!(matches!(
            parse_batch(br#"[{"body":"!!"}]"#),
            Err(HubError::ArgumentInvalid { .. })
        ));
    }
}
