//! The HTTPS half of the client: one pooled hyper client (rustls on ring, HTTP/1.1 or HTTP/2 as
//! ALPN decides) and [`Https::call`], the one way a REST route is called.
//!
//! Every request is what the Node and C# service SDKs send: `api-version=2021-04-12`, the
//! service SAS token in `Authorization`, JSON bodies, `If-Match` when the route is
//! conditional. A route module (the registry today; twins, direct methods and jobs later) only
//! builds its path and body and reads its answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use iothub_protocol::tls::describe_handshake_failure;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::token::TokenSource;

/// The api-version the current service SDKs send.
pub const API_VERSION: &str = "2021-04-12";

/// The response header naming the hub's error code.
const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// Which stored version an update or delete applies to (`If-Match`).
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
    pub fn from_device(device: &iothub_protocol::registry::Device) -> IfMatch {
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

/// One REST request: `method path?query&api-version=...`, optionally conditional, optionally
/// with a JSON body.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub method: Method,
    /// The path, already percent-encoded where it holds ids.
    pub path: &'a str,
    /// Query parameters before `api-version`, already encoded (`top=10`), or empty.
    pub query: &'a str,
    pub if_match: Option<&'a IfMatch>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// More request headers (query paging).
    pub headers: Vec<(&'static str, String)>,
    /// How long this call may take, when not the client's request timeout (a direct method
    /// waits for the device).
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    /// A request without query, condition or body.
    pub fn new(method: Method, path: &'a str) -> Self {
        Call {
            method,
            path,
            query: "",
            if_match: None,
            body: None,
            headers: Vec::new(),
            timeout: None,
        }
    }
}

/// The pooled HTTPS client and what every request needs.
pub(crate) struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    host: String,
    tokens: Arc<TokenSource>,
    request_timeout: Duration,
}

impl Https {
    /// A client for `https://host[:port]`. `connect_timeout` bounds opening a TCP connection;
    /// `request_timeout` bounds each call as a whole.
    pub fn new(
        host: &str,
        port: u16,
        tls: rustls::ClientConfig,
        tokens: Arc<TokenSource>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let base = if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        Https {
            client,
            base,
            host: host.to_owned(),
            tokens,
            request_timeout,
        }
    }

    /// Sends one request and returns the body of a 2xx answer, or the typed error.
    pub async fn call(&self, call: Call<'_>) -> Result<Bytes, Error> {
        Ok(self.call_with_headers(call).await?.1)
    }

    /// [`Https::call`], also returning the answer's headers.
    pub async fn call_with_headers(
        &self,
        call: Call<'_>,
    ) -> Result<(http::HeaderMap, Bytes), Error> {
        let Call {
            method,
            path,
            query,
            if_match,
            body,
            headers,
            timeout,
        } = call;
        let limit = timeout.unwrap_or(self.request_timeout);
        let sep = if query.is_empty() { "" } else { "&" };
        let uri = format!("{}{path}?{query}{sep}api-version={API_VERSION}", self.base);
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
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if body.is_some() {
            builder = builder.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::ArgumentInvalid {
                message: format!("cannot build the request {uri}: {e}"),
            })?;
        let what = format!("{method} {path}");
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(
                    |e| match describe_handshake_failure(&e, &self.host) {
                        Some(tls) => Error::from(tls),
                        None => Error::connection(format!("{what} to {} failed", self.base), e),
                    },
                )?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| Error::connection(format!("reading the answer to {what}"), e))?
                .to_bytes();
            Ok::<_, Error>((parts, bytes))
        };
        let (parts, bytes) =
            tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| Error::Timeout {
                    operation: "an HTTPS request",
                    after: limit,
                })??;
        if parts.status.is_success() {
            return Ok((parts.headers, bytes));
        }
        let code = parts
            .headers
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok());
        Err(Error::from_http(parts.status.as_u16(), code, &bytes))
    }

    /// Calls a route whose answer is JSON and reads it; `what` names the route in errors.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        what: &str,
        call: Call<'_>,
    ) -> Result<T, Error> {
        let bytes = self.call(call).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::protocol(format!(
                "the hub's answer to {what} is not the expected JSON: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_protocol::registry::Device;

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
}
