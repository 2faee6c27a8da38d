//! The identity registry and queue purge over HTTPS (iothub-protocol.md 6, 1.7).
//!
//! Requests are what the Node and C# service SDKs send: `api-version=2021-04-12`, the service
//! SAS token in `Authorization`, JSON bodies, no `If-Match` on create, `If-Match: "*"` for a
//! forced update or delete, a quoted etag for a conditional one. hyper's pooled client runs over
//! rustls with ring (HTTP/1.1 or HTTP/2, as ALPN decides).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use iothub_protocol::registry::{Device, PurgeMessageQueueResult};
use serde::de::DeserializeOwned;

use crate::Error;
use crate::amqp::convert::encode_segment;
use crate::token::TokenSource;

/// The api-version the current service SDKs send.
pub const API_VERSION: &str = "2021-04-12";

/// Device fields only the hub writes; never sent.
const READ_ONLY_FIELDS: &[&str] = &[
    "connectionState",
    "connectionStateUpdatedTime",
    "statusUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
];

/// The response header naming the hub's error code.
const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// Which stored version of a device an update or delete applies to (`If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// Whatever the stored etag is: a forced update or delete (`If-Match: "*"`).
    Any,
    /// Only if the stored etag is still this one; otherwise the hub answers 412 and the call
    /// fails with [`Error::PreconditionFailed`]. Given bare or quoted.
    Etag(String),
}

impl IfMatch {
    /// The device's etag when it has one (as returned by a get, create or update), else
    /// [`IfMatch::Any`].
    pub fn from_device(device: &Device) -> IfMatch {
        match device.etag.as_deref() {
            Some(e) if !e.is_empty() => IfMatch::Etag(e.to_owned()),
            _ => IfMatch::Any,
        }
    }

    /// The header value: `"*"`, or the etag in quotes (kept as is when already quoted or
    /// weak).
    pub fn header_value(&self) -> String {
        match self {
            IfMatch::Any => "\"*\"".to_owned(),
            IfMatch::Etag(e) => {
                let e = e.trim();
                if e.starts_with('"') || e.starts_with("W/") {
                    e.to_owned()
                } else {
                    format!("\"{e}\"")
                }
            }
        }
    }
}

/// The HTTPS half of the client.
pub(crate) struct Registry {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    tokens: Arc<TokenSource>,
    timeout: Duration,
}

impl Registry {
    pub fn new(
        host: &str,
        port: u16,
        tls: rustls::ClientConfig,
        tokens: Arc<TokenSource>,
        timeout: Duration,
    ) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let base = if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        Registry {
            client,
            base,
            tokens,
            timeout,
        }
    }

    fn device_path(device_id: &str) -> String {
        format!("/devices/{}", encode_segment(device_id))
    }

    /// Sends one request and returns the status and body of a 2xx answer, or the typed error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        if_match: Option<&IfMatch>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let uri = format!("{}{path}?{query}api-version={API_VERSION}", self.base);
        let token = self.tokens.current()?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, token)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("iothub-service-rs/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(m) = if_match {
            builder = builder.header(header::IF_MATCH, m.header_value());
        }
        if body.is_some() {
            builder = builder.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::config(format!("cannot build the request for {uri}: {e}")))?;
        let what = format!("{method} {path}");
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Error::connection(format!("{what} to {} failed", self.base), e))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| Error::connection(format!("reading the answer to {what}"), e))?
                .to_bytes();
            Ok::<_, Error>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                operation: "a registry request",
                after: self.timeout,
            })??;
        if parts.status.is_success() {
            return Ok((parts.status, bytes));
        }
        let code = parts
            .headers
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok());
        Err(Error::from_http(parts.status.as_u16(), code, &bytes))
    }

    fn json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::protocol(format!(
                "the hub's answer to {what} is not the expected JSON: {e}"
            ))
        })
    }

    /// The JSON sent for a create or update: the device without the fields only the hub
    /// writes (connection state, timestamps, queue length) and without nulls, close to what
    /// the Node SDK sends (a real hub's JSON reader does not take `null` for its timestamps).
    fn body(device: &Device) -> Result<Vec<u8>, Error> {
        let mut value = serde_json::to_value(device)
            .map_err(|e| Error::config(format!("cannot serialize the device: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            for read_only in READ_ONLY_FIELDS {
                map.remove(*read_only);
            }
            map.retain(|_, v| !v.is_null());
            if let Some(auth) = map
                .get_mut("authentication")
                .and_then(|a| a.as_object_mut())
            {
                for part in ["symmetricKey", "x509Thumbprint"] {
                    if let Some(obj) = auth.get_mut(part).and_then(|p| p.as_object_mut()) {
                        obj.retain(|_, v| !v.is_null());
                    }
                }
                if auth
                    .get("x509Thumbprint")
                    .and_then(|t| t.as_object())
                    .is_some_and(|t| t.is_empty())
                {
                    auth.remove("x509Thumbprint");
                }
            }
        }
        serde_json::to_vec(&value)
            .map_err(|e| Error::config(format!("cannot serialize the device: {e}")))
    }

    pub async fn create_device(&self, device: &Device) -> Result<Device, Error> {
        let path = Self::device_path(&device.device_id);
        let (_, bytes) = self
            .call(Method::PUT, &path, "", None, Some(Self::body(device)?))
            .await?;
        Self::json("create device", &bytes)
    }

    pub async fn get_device(&self, device_id: &str) -> Result<Device, Error> {
        let path = Self::device_path(device_id);
        let (_, bytes) = self.call(Method::GET, &path, "", None, None).await?;
        Self::json("get device", &bytes)
    }

    pub async fn update_device(
        &self,
        device: &Device,
        if_match: &IfMatch,
    ) -> Result<Device, Error> {
        let path = Self::device_path(&device.device_id);
        let (_, bytes) = self
            .call(
                Method::PUT,
                &path,
                "",
                Some(if_match),
                Some(Self::body(device)?),
            )
            .await?;
        Self::json("update device", &bytes)
    }

    pub async fn delete_device(&self, device_id: &str, if_match: &IfMatch) -> Result<(), Error> {
        let path = Self::device_path(device_id);
        self.call(Method::DELETE, &path, "", Some(if_match), None)
            .await?;
        Ok(())
    }

    pub async fn list_devices(&self, top: usize) -> Result<Vec<Device>, Error> {
        let (_, bytes) = self
            .call(Method::GET, "/devices", &format!("top={top}&"), None, None)
            .await?;
        Self::json("list devices", &bytes)
    }

    pub async fn purge_c2d(&self, device_id: &str) -> Result<PurgeMessageQueueResult, Error> {
        let path = format!("{}/commands", Self::device_path(device_id));
        let (_, bytes) = self.call(Method::DELETE, &path, "", None, None).await?;
        Self::json("purge", &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_values() {
        assert_eq!(IfMatch::Any.header_value(), "\"*\"");
        assert_eq!(IfMatch::Etag("AAA=".into()).header_value(), "\"AAA=\"");
        assert_eq!(IfMatch::Etag("\"AAA=\"".into()).header_value(), "\"AAA=\"");
        assert_eq!(IfMatch::Etag("W/\"x\"".into()).header_value(), "W/\"x\"");
        let mut d = Device::new("d");
        assert_eq!(IfMatch::from_device(&d), IfMatch::Any);
        d.etag = Some("MQ==".into());
        assert_eq!(IfMatch::from_device(&d), IfMatch::Etag("MQ==".into()));
    }

    #[test]
    fn bodies_carry_only_what_a_caller_sets() {
        let body = Registry::body(&Device::new("d1")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "deviceId": "d1",
                "status": "enabled",
                "authentication": {"symmetricKey": {}, "type": "sas"},
                "capabilities": {"iotEdge": false},
            })
        );
        let mut d = Device::new("d2");
        d.etag = Some("MQ==".into());
        d.generation_id = Some("g".into());
        d.status_reason = Some("why".into());
        d.cloud_to_device_message_count = 3;
        d.authentication.symmetric_key.primary_key = Some("a2V5".into());
        d.authentication.x509_thumbprint.primary_thumbprint = Some("AB".into());
        let v: serde_json::Value = serde_json::from_slice(&Registry::body(&d).unwrap()).unwrap();
        assert_eq!(v["etag"], "MQ==");
        assert_eq!(v["generationId"], "g");
        assert_eq!(v["statusReason"], "why");
        assert!(v.get("cloudToDeviceMessageCount").is_none());
        assert_eq!(
            v["authentication"]["symmetricKey"],
            serde_json::json!({"primaryKey": "a2V5"})
        );
        assert_eq!(
            v["authentication"]["x509Thumbprint"],
            serde_json::json!({"primaryThumbprint": "AB"})
        );
    }

    #[test]
    fn device_paths_are_encoded() {
        assert_eq!(Registry::device_path("a#b c"), "/devices/a%23b%20c");
    }
}
