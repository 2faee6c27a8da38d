//! Device twins over MQTT (iothub-beyond-c2d.md 1.4): GET and reported PATCH as requests on
//! `$iothub/twin/...?$rid=`, their answers on `$iothub/twin/res/{status}/?$rid=..`, and desired
//! patches on `$iothub/twin/PATCH/properties/desired/?$version=..`.
//!
//! Requests go out at QoS 0 (as the Node and C SDKs send them) right after the SUBSCRIBE to
//! the response filter: the hub handles a connection's packets in order, so the subscription
//! is in place when the request arrives. A request made while offline waits for the next
//! connection; one whose connection drops before the answer is answered by the client's
//! timeout. Desired patches are not queued by the hub while the device is away: after a
//! reconnect an application reads the whole twin and compares `$version`s.

use std::collections::HashMap;

use bytes::Bytes;
use iothub_protocol::ErrorCode;
use iothub_protocol::client::HubReply;
use rumqttc::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::connection::Connection;
use super::driver::Driver;
use crate::error::Error;

/// Responses to twin requests.
pub(crate) const RESPONSE_FILTER: &str = "$iothub/twin/res/#";
/// Desired-property patches.
pub(crate) const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";
const DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";
const RESPONSE_PREFIX: &str = "$iothub/twin/res/";

/// A desired-property patch as the hub sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUpdate {
    /// `properties.desired.$version` after the change.
    pub version: i64,
    /// The patch: changed keys, `null` for removed ones, and `$version`.
    pub patch: Value,
}

/// The answer to a twin request: the status's body, and `$version` for a PATCH.
pub(crate) type TwinAnswer = (Option<i64>, Bytes);
type Reply = oneshot::Sender<Result<TwinAnswer, Error>>;

/// What the client asks of the twin side of the driver.
pub(crate) enum TwinCommand {
    /// `GET` (no payload) or reported `PATCH` (JSON payload).
    Request { patch: Option<Bytes>, reply: Reply },
    /// Send desired patches here from now on (replacing an earlier receiver), and subscribe.
    Desired(mpsc::UnboundedSender<DesiredUpdate>),
}

/// A twin PUBLISH from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TwinInbound {
    Response {
        status: u16,
        rid: String,
        version: Option<i64>,
    },
    Desired,
}

/// Reads a twin topic; `None` when it is not one.
pub(super) fn parse_inbound(topic: &str) -> Option<TwinInbound> {
    if topic.starts_with(DESIRED_PREFIX) {
        return Some(TwinInbound::Desired);
    }
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
    let status = status.parse().ok()?;
    let query = query.trim_start_matches('?');
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Some(TwinInbound::Response {
        status,
        rid: param("$rid")?.to_owned(),
        version: param("$version").and_then(|v| v.parse().ok()),
    })
}

/// The twin side of the driver.
#[derive(Default)]
pub(super) struct TwinState {
    next_rid: u64,
    pending: HashMap<String, Reply>,
    /// Requests made while offline, sent on the next connection.
    queued: Vec<(Option<Bytes>, Reply)>,
    desired: Option<mpsc::UnboundedSender<DesiredUpdate>>,
}

/// The error a failed twin answer stands for: its body's `errorCode` and `message`.
pub(super) fn answer_error(status: u16, body: &[u8]) -> Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v["errorCode"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .and_then(ErrorCode::from_code);
    let message = v["message"].as_str().map_or_else(
        || format!("twin request failed with status {status}"),
        str::to_owned,
    );
    Error::from_reply(
        HubReply {
            status: Some(status),
            code,
            condition: None,
            message,
        },
        "",
        None,
    )
}

impl Driver {
    /// A twin command, online (`conn`) or offline.
    pub(super) fn on_twin_command(&mut self, conn: Option<&mut Connection>, cmd: TwinCommand) {
        match cmd {
            TwinCommand::Request { patch, reply } => match conn {
                Some(conn) => self.send_twin_request(conn, patch, reply),
                None => self.twin.queued.push((patch, reply)),
            },
            TwinCommand::Desired(tx) => {
                self.twin.desired = Some(tx);
                self.want_subscription(conn, DESIRED_FILTER, QoS::AtLeastOnce, None);
            }
        }
    }

    /// Sends the requests made while offline (called once a connection is up).
    pub(super) fn twin_connected(&mut self, conn: &mut Connection) {
        // Answers of the old connection will not come.
        self.twin.pending.clear();
        for (patch, reply) in std::mem::take(&mut self.twin.queued) {
            self.send_twin_request(conn, patch, reply);
        }
    }

    fn send_twin_request(&mut self, conn: &mut Connection, patch: Option<Bytes>, reply: Reply) {
        self.want_subscription(Some(&mut *conn), RESPONSE_FILTER, QoS::AtMostOnce, None);
        self.twin.pending.retain(|_, r| !r.is_closed());
        self.twin.next_rid += 1;
        let rid = self.twin.next_rid.to_string();
        let (topic, payload) = match patch {
            Some(p) => (
                format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
                p,
            ),
            None => (
                format!("$iothub/twin/GET/?$rid={rid}"),
                Bytes::from_static(b" "),
            ),
        };
        conn.publish_qos0(topic, payload);
        self.twin.pending.insert(rid, reply);
    }

    /// A twin PUBLISH from the hub.
    pub(super) fn on_twin_publish(&mut self, inbound: TwinInbound, topic: &str, payload: &[u8]) {
        match inbound {
            TwinInbound::Response {
                status,
                rid,
                version,
            } => {
                let Some(reply) = self.twin.pending.remove(&rid) else {
                    tracing::debug!(%rid, "twin response for no pending request");
                    return;
                };
                let result = if (200..300).contains(&status) {
                    Ok((version, Bytes::copy_from_slice(payload)))
                } else {
                    Err(answer_error(status, payload))
                };
                let _ = reply.send(result);
            }
            TwinInbound::Desired => {
                let patch: Value = match serde_json::from_slice(payload) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "dropping a desired patch that is not JSON");
                        return;
                    }
                };
                let version = patch["$version"].as_i64().unwrap_or_else(|| {
                    topic
                        .rsplit("$version=")
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                });
                if let Some(tx) = &self.twin.desired
                    && tx.send(DesiredUpdate { version, patch }).is_err()
                {
                    self.twin.desired = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_twin_topics_are_read() {
        assert_eq!(
            parse_inbound("$iothub/twin/res/204/?$rid=7&$version=3"),
            Some(TwinInbound::Response {
                status: 204,
                rid: "7".into(),
                version: Some(3)
            })
        );
        assert_eq!(
            parse_inbound("$iothub/twin/res/200/?$rid=1"),
            Some(TwinInbound::Response {
                status: 200,
                rid: "1".into(),
                version: None
            })
        );
        assert_eq!(
            parse_inbound("$iothub/twin/PATCH/properties/desired/?$version=4"),
            Some(TwinInbound::Desired)
        );
        assert_eq!(parse_inbound("$iothub/twin/res/200/"), None);
        assert_eq!(parse_inbound("devices/d/messages/devicebound/"), None);
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let e = answer_error(400, br#"{"errorCode":400004,"message":"bad key"}"#);
        assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");
        let e = answer_error(500, b"");
        assert!(
            matches!(
                e,
                Error::Hub {
                    status: Some(500),
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
