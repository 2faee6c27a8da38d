//! The HTTPS transport (iothub-protocol.md 4): telemetry as `POST .../messages/events`, C2D by
//! polling `GET .../messages/deviceBound`, settled with `DELETE` (complete), `DELETE ...?reject`
//! and `POST .../abandon`.
//!
//! One HTTP/1.1 connection (hyper over tokio-rustls) is kept open and reused; requests take
//! turns on it, and it is reopened when the hub or the network closes it. Each request
//! carries a SAS token, re-signed when it is due for renewal.

mod headers;
mod poll;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use iothub_protocol::Message;
use iothub_protocol::client::display_chain;
use iothub_protocol::device_id::encode_path_segment as segment;
use iothub_protocol::tls::{describe_handshake_failure, server_name};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::{API_VERSION, CLIENT_TYPE};
use crate::error::Error;
use crate::runtime::Runtime;
use crate::state::{ConnectionState, DisconnectReason};
use crate::token::{Auth, TokenCache};

pub(crate) use poll::{Demand, poll_loop};

/// Fixed facts about the HTTPS endpoint.
pub(crate) struct Params {
    pub device_id: String,
    /// The module id, when the client is a module identity (telemetry only: the hub has no
    /// C2D for modules, and the client never polls for it).
    pub module_id: Option<String>,
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// An answer from the hub.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// The HTTPS side of a client; shared by the client, the poller and received messages.
pub(crate) struct Https {
    device_id: String,
    module_id: Option<String>,
    host: String,
    port: u16,
    authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    tokens: std::sync::Mutex<TokenCache>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    runtime: Runtime,
}

impl Https {
    pub fn new(params: Params, auth: Auth, runtime: Runtime) -> Result<Https, Error> {
        let authority = if params.port == 443 {
            params.host.clone()
        } else {
            format!("{}:{}", params.host, params.port)
        };
        Ok(Https {
            server_name: server_name(&params.host)?,
            device_id: params.device_id,
            module_id: params.module_id,
            host: params.host,
            port: params.port,
            authority,
            connector: TlsConnector::from(params.tls),
            connect_timeout: params.connect_timeout,
            request_timeout: params.request_timeout,
            tokens: std::sync::Mutex::new(TokenCache::new(auth)),
            conn: tokio::sync::Mutex::new(None),
            runtime,
        })
    }

    /// Cancelled when the client stops.
    pub fn shutdown(&self) -> tokio_util::sync::CancellationToken {
        self.runtime.shutdown.clone()
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    fn base(&self) -> String {
        format!("/devices/{}/messages", segment(&self.device_id))
    }

    /// Opens the connection now, so TLS problems show at connect time.
    pub async fn open(&self) -> Result<(), Error> {
        let sender = self.connect().await?;
        *self.conn.lock().await = Some(sender);
        self.runtime.state.set(ConnectionState::Connected);
        Ok(())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let endpoint = format!("{}:{}", self.host, self.port);
        let open = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Error::connection(format!("cannot connect to {endpoint}"), e))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| match describe_handshake_failure(&e, &self.host) {
                    Some(tls) => Error::from(tls),
                    None => Error::connection(format!("TLS with {endpoint} failed"), e),
                })?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| Error::connection(format!("HTTP with {endpoint} failed"), e))?;
            let shutdown = self.runtime.shutdown.clone();
            self.runtime.tasks.spawn(async move {
                tokio::select! {
                    _ = connection => {}
                    _ = shutdown.cancelled() => {}
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| Error::Timeout {
                operation: "opening the HTTPS connection",
                after: self.connect_timeout,
            })?
    }

    /// Sends one request and reads the whole answer. Reconnects (once) when the kept
    /// connection turns out to be closed.
    async fn request(
        &self,
        method: Method,
        path_and_query: String,
        extra: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Answer, Error> {
        let token = {
            let mut tokens = self
                .tokens
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            tokens.get(SystemTime::now())
        };
        let token = self.check(token)?;
        let mut guard = self.conn.lock().await;
        let mut retried = false;
        loop {
            if guard.as_ref().is_none_or(|s| s.is_closed()) {
                *guard = None;
                let sender = self.connect().await.inspect_err(|e| self.lost(e))?;
                *guard = Some(sender);
            }
            let Some(sender) = guard.as_mut() else {
                continue;
            };
            if sender.ready().await.is_err() {
                *guard = None;
                if retried {
                    let e = Error::Connection {
                        message: format!("{}:{}: the connection closed", self.host, self.port),
                        source: None,
                    };
                    self.lost(&e);
                    return Err(e);
                }
                retried = true;
                continue;
            }
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path_and_query.as_str())
                .header(header::HOST, self.authority.as_str())
                .header(header::USER_AGENT, CLIENT_TYPE)
                .header(header::AUTHORIZATION, token.as_str());
            for (name, value) in &extra {
                req = req.header(name, value);
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| Error::ArgumentInvalid {
                    message: format!(
                        "the message cannot be sent: cannot build the HTTP request: {e}"
                    ),
                })?;
            let exchange = async {
                let resp = sender.send_request(req).await?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, hyper::Error>((parts, body))
            };
            match tokio::time::timeout(self.request_timeout, exchange).await {
                Err(_) => {
                    *guard = None;
                    let e = Error::Timeout {
                        operation: "an HTTPS request",
                        after: self.request_timeout,
                    };
                    self.lost(&e);
                    return Err(e);
                }
                Ok(Err(e)) => {
                    *guard = None;
                    if !retried && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) {
                        retried = true;
                        continue;
                    }
                    let e = Error::connection(
                        format!("the request to {}:{} failed", self.host, self.port),
                        e,
                    );
                    self.lost(&e);
                    return Err(e);
                }
                Ok(Ok((parts, body))) => {
                    self.runtime.state.set(ConnectionState::Connected);
                    return Ok(Answer {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        body,
                    });
                }
            }
        }
    }

    fn lost(&self, e: &Error) {
        self.runtime.state.set(ConnectionState::Disconnected {
            reason: DisconnectReason::ConnectionLost {
                detail: display_chain(e),
            },
            retrying: true,
        });
    }

    /// Stops the client on an error no retry can fix.
    fn check<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &r
            && e.is_fatal()
        {
            tracing::warn!(device = %self.device_id, error = %e, "HTTPS client stopped");
            self.runtime.state.set(ConnectionState::Disconnected {
                reason: DisconnectReason::Refused(e.clone()),
                retrying: false,
            });
            self.runtime.shutdown.cancel();
        }
        r
    }

    fn error(&self, a: &Answer, sent: Option<usize>) -> Error {
        headers::error_from_response(a.status, &a.headers, &a.body, &self.device_id, sent)
    }

    /// Sends telemetry; resolves when the hub answered 2xx. A module posts to
    /// `/devices/{id}/modules/{mid}/messages/events`.
    pub async fn send_event(&self, msg: &Message) -> Result<(), Error> {
        let (to, base) = match &self.module_id {
            None => (
                format!("/devices/{}/messages/events", self.device_id),
                self.base(),
            ),
            Some(m) => (
                format!("/devices/{}/modules/{m}/messages/events", self.device_id),
                format!(
                    "/devices/{}/modules/{}/messages",
                    segment(&self.device_id),
                    segment(m)
                ),
            ),
        };
        let extra = headers::d2c_headers(&to, msg)?;
        let path = format!("{base}/events?api-version={API_VERSION}");
        let a = self
            .request(Method::POST, path, extra, Bytes::from(msg.body.clone()))
            .await?;
        let r = if (200..300).contains(&a.status) {
            Ok(())
        } else {
            Err(self.error(&a, Some(msg.size())))
        };
        self.check(r)
    }

    /// Fetches and locks the next C2D message, if there is one.
    pub async fn receive(&self) -> Result<Option<Message>, Error> {
        let to =
            HeaderValue::from_str(&format!("/devices/{}/messages/devicebound", self.device_id))
                .ok();
        let extra = to
            .map(|v| (HeaderName::from_static("iothub-to"), v))
            .into_iter()
            .collect();
        let path = format!("{}/deviceBound?api-version={API_VERSION}", self.base());
        let a = self.request(Method::GET, path, extra, Bytes::new()).await?;
        let r = match a.status {
            200 => headers::c2d_from_response(&a.headers, a.body.to_vec()).map(Some),
            204 => Ok(None),
            s if (200..300).contains(&s) => Ok(None),
            _ => Err(self.error(&a, None)),
        };
        self.check(r)
    }

    async fn settle(&self, method: Method, path: String, lock_token: &str) -> Result<(), Error> {
        let if_match = HeaderValue::from_str(&format!("\"{lock_token}\""))
            .map_err(|_| Error::lock_lost("the lock token is not a valid header value"))?;
        let a = self
            .request(
                method,
                path,
                vec![(header::IF_MATCH, if_match)],
                Bytes::new(),
            )
            .await?;
        let r = if (200..300).contains(&a.status) {
            Ok(())
        } else {
            Err(self.error(&a, None))
        };
        self.check(r)
    }

    /// `DELETE .../deviceBound/{lock}`.
    pub async fn complete(&self, lock_token: &str) -> Result<(), Error> {
        let path = format!(
            "{}/deviceBound/{}?api-version={API_VERSION}",
            self.base(),
            segment(lock_token)
        );
        self.settle(Method::DELETE, path, lock_token).await
    }

    /// `DELETE .../deviceBound/{lock}?reject`.
    pub async fn reject(&self, lock_token: &str) -> Result<(), Error> {
        let path = format!(
            "{}/deviceBound/{}?api-version={API_VERSION}&reject",
            self.base(),
            segment(lock_token)
        );
        self.settle(Method::DELETE, path, lock_token).await
    }

    /// `POST .../deviceBound/{lock}/abandon`.
    pub async fn abandon(&self, lock_token: &str) -> Result<(), Error> {
        let path = format!(
            "{}/deviceBound/{}/abandon?api-version={API_VERSION}",
            self.base(),
            segment(lock_token)
        );
        self.settle(Method::POST, path, lock_token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("dev:1$a b"), "dev%3A1%24a%20b");
        assert_eq!(segment("abc-1.2_3~"), "abc-1.2_3~");
    }
}
