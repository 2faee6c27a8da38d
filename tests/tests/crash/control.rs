//! Reads the emulator's test-control API (`/_emulator/...`, iothubowner) over HTTPS: the C2D
//! queues with message ids and the telemetry counters, which no service API shows.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use iothub_protocol::FeedbackRecord;
use iothub_protocol::connection_string::ServiceConnectionString;
use iothub_protocol::tls::Trust;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An HTTPS reader of the control API.
pub struct Control {
    port: u16,
    tls: TlsConnector,
    authorization: String,
}

impl Control {
    pub fn new(port: u16, ca_pem: &str, service_connection_string: &str) -> Result<Self, String> {
        let cs: ServiceConnectionString = service_connection_string
            .parse()
            .map_err(|e| format!("service connection string: {e}"))?;
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 3600;
        let authorization =
            iothub_protocol::sas::build_token(&cs.host_name, &cs.key, Some(&cs.key_name), expiry)
                .map_err(|e| format!("SAS token: {e}"))?;
        let mut trust = Trust::default();
        trust
            .platform_roots(false)
            .from_env(false)
            .add_ca_pem(ca_pem.as_bytes());
        let config = trust
            .load()
            .and_then(|r| r.client_config(&[b"http/1.1"]))
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Control {
            port,
            tls: TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&config)),
            authorization,
        })
    }

    /// `GET path`, answered 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, String> {
        let (status, _, body) = self.call("GET", path).await?;
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|x| format!("GET {path}: JSON: {x}"))
    }

    /// One request without a body: status, `ETag` (unquoted) and body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(hyper::StatusCode, Option<String>, Bytes), String> {
        tokio::time::timeout(Duration::from_secs(10), self.request(method, path))
            .await
            .map_err(|_| format!("{method} {path}: no answer within 10 s"))?
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(hyper::StatusCode, Option<String>, Bytes), String> {
        let e = |what: &str| {
            let what = what.to_owned();
            move |x: &dyn std::fmt::Display| format!("{method} {path}: {what}: {x}")
        };
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|x| e("connect")(&x))?;
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|x| e("server name")(&x))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|x| e("TLS")(&x))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|x| e("handshake")(&x))?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", &self.authorization)
            .body(Empty::<Bytes>::new())
            .map_err(|x| e("request")(&x))?;
        let resp = send.send_request(req).await.map_err(|x| e("send")(&x))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|x| e("body")(&x))?
            .to_bytes();
        driver.abort();
        Ok((status, etag, body))
    }

    /// Takes the next feedback batch over HTTPS and completes it: its records, or `None` when
    /// the feedback queue is empty (204), which an AMQP receiver cannot tell from "not yet".
    pub async fn take_feedback(&self) -> Result<Option<Vec<FeedbackRecord>>, String> {
        const PATH: &str = "/messages/serviceBound/feedback?api-version=2021-04-12";
        let (status, etag, body) = self.call("GET", PATH).await?;
        match status {
            hyper::StatusCode::NO_CONTENT => return Ok(None),
            hyper::StatusCode::OK => {}
            other => {
                return Err(format!(
                    "GET feedback: {other}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        let records: Vec<FeedbackRecord> =
            serde_json::from_slice(&body).map_err(|x| format!("feedback JSON: {x}"))?;
        let lock = etag.ok_or("a feedback batch without an ETag (lock token)")?;
        let done = format!("/messages/serviceBound/feedback/{lock}?api-version=2021-04-12");
        let (status, _, body) = self.call("DELETE", &done).await?;
        if status != hyper::StatusCode::NO_CONTENT {
            return Err(format!(
                "complete feedback: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(Some(records))
    }

    /// The message ids pending (enqueued or locked) in a device's C2D queue, oldest first.
    pub async fn pending_c2d(&self, device: &str) -> Result<Vec<String>, String> {
        let v = self
            .get_json(&format!("/_emulator/devices/{device}/c2d"))
            .await?;
        let items = v.as_array().ok_or("c2d view is not an array")?;
        Ok(items
            .iter()
            .map(|m| {
                m.get("messageId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
            .collect())
    }

    /// Every device's telemetry counter.
    pub async fn telemetry_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, String> {
        let v = self.get_json("/_emulator/devices").await?;
        let items = v.as_array().ok_or("devices view is not an array")?;
        Ok(items
            .iter()
            .filter_map(|d| {
                Some((
                    d.get("deviceId")?.as_str()?.to_owned(),
                    d.get("deviceToCloudMessageCount")?.as_u64()?,
                ))
            })
            .collect())
    }
}
