//! Device twins over AMQP (iothub-beyond-c2d.md 1.5): the twin node `/devices/{id}/twin`,
//! where a device attaches a sender for requests and a receiver for responses and
//! desired-property notifications.
//!
//! A request carries message annotations `operation` (`GET`, `PATCH`, `PUT`, `DELETE`) and
//! `resource` (`/properties/reported` for PATCH, `/notifications/twin/properties/desired` for
//! PUT and DELETE) and a `correlation-id`. The response goes out on the receiver link of the
//! same connection and device, with the correlation id echoed in its own AMQP type,
//! annotation `status` as an AMQP int (C rejects anything else, C# reads a long as missing),
//! `version` as a long after a PATCH, and one data section. After a `PUT` every desired change
//! arrives on the same link as a message without correlation id.
//!
//! The SDKs mark the two links with the same `com.microsoft:channel-correlation-id`; since one
//! device opens one twin channel per connection, the links are paired by connection and device
//! instead, and responses wait in a bounded queue until the receiver link attaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{Message as AmqpMessage, MessageAnnotations, Properties};
use fe2o3_amqp_types::primitives::{Symbol, Value};
use iothub_protocol::HubError;
use iothub_protocol::amqp::body_bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::Conn;
use super::convert::{Incoming, Outgoing};
use super::errors::error_for;
use super::inbound;
use super::outbound;
use super::tokens::Access;
use crate::driver::{DeviceProtocol, DeviceTwinOp, TwinReply};
use crate::hub::Identity;

/// Responses and notifications waiting for a device's twin receiver link.
const QUEUE: usize = 256;
/// `resource` of the desired-notification subscription.
pub const DESIRED_RESOURCE: &str = "/notifications/twin/properties/desired";
/// `resource` of a reported-properties patch.
pub const REPORTED_RESOURCE: &str = "/properties/reported";

struct Channel {
    tx: mpsc::Sender<Outgoing>,
    /// Taken by the receiver link while it is attached.
    rx: Option<mpsc::Receiver<Outgoing>>,
}

/// The twin channels of one connection, per device or module (`{device}/{module}`).
#[derive(Default)]
pub struct Channels {
    by_device: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    fn with<R>(&self, device_id: &str, f: impl FnOnce(&mut Channel) -> R) -> R {
        let mut map = self
            .by_device
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ch = map.entry(device_id.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            Channel { tx, rx: Some(rx) }
        });
        f(ch)
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Twin(DeviceTwinOp),
    Subscribe,
    Unsubscribe,
}

fn annotation(m: &Incoming, name: &str) -> Option<String> {
    let annotations = m.message_annotations.as_ref()?;
    annotations.iter().find_map(|(k, v)| match (k, v) {
        (OwnedKey::Symbol(s), Value::String(t)) if s.as_str() == name => Some(t.clone()),
        (OwnedKey::Symbol(s), Value::Symbol(t)) if s.as_str() == name => {
            Some(t.as_str().to_owned())
        }
        _ => None,
    })
}

pub(super) fn parse_request(m: &Incoming) -> Result<Request, HubError> {
    let op = annotation(m, "operation").unwrap_or_default();
    let resource = annotation(m, "resource").unwrap_or_default();
    let resource = resource.trim_end_matches('/');
    match (op.to_ascii_uppercase().as_str(), resource) {
        ("GET", _) => Ok(Request::Twin(DeviceTwinOp::Get)),
        ("PATCH", REPORTED_RESOURCE) => Ok(Request::Twin(DeviceTwinOp::PatchReported)),
        ("PUT", DESIRED_RESOURCE) => Ok(Request::Subscribe),
        ("DELETE", DESIRED_RESOURCE) => Ok(Request::Unsubscribe),
        _ => Err(HubError::argument(format!(
            "twin request with operation '{op}' and resource '{resource}'; the hub knows GET, PATCH {REPORTED_RESOURCE}, PUT and DELETE {DESIRED_RESOURCE}"
        ))),
    }
}

/// The response message: correlation id echoed, `status` (int), `version` (long), one data
/// section.
fn response(request: &Incoming, reply: TwinReply) -> Outgoing {
    let correlation_id = request
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.clone());
    let mut annotations =
        MessageAnnotations::builder().insert(Symbol::from("status"), i32::from(reply.status));
    if let Some(v) = reply.version {
        annotations = annotations.insert(Symbol::from("version"), v);
    }
    AmqpMessage::builder()
        .properties(Properties {
            correlation_id,
            ..Properties::default()
        })
        .message_annotations(annotations.build())
        .data(reply.body)
        .build()
}

fn notification(patch: &serde_json::Value, version: i64) -> Outgoing {
    // Serializing a `Value` cannot fail.
    let body = serde_json::to_vec(patch).unwrap_or_default();
    AmqpMessage::builder()
        .message_annotations(
            MessageAnnotations::builder()
                .insert(Symbol::from("version"), version)
                .build(),
        )
        .data(body)
        .build()
}

fn status_only(status: u16) -> TwinReply {
    TwinReply {
        status,
        version: None,
        body: Vec::new(),
    }
}

/// Serves the request link (the peer's sender on the twin node) of a device or module.
pub async fn serve_requests(conn: Arc<Conn>, receiver: Receiver, identity: Identity) {
    let auth = match conn.tokens.authorize_link(&conn.ctx, Access::of(&identity)) {
        Ok(auth) => auth,
        Err(e) => return inbound::refuse(receiver, error_for(&e)).await,
    };
    let hub = conn.ctx.hub.clone();
    // Keyed `{device}` or `{device}/{module}`, as the MQTT client id.
    let key = identity.to_string();
    let registration = hub.register_connection(&key, DeviceProtocol::Amqp);
    let revoked = registration.cancelled().clone();
    let tx = conn.twins.with(&key, |ch| ch.tx.clone());
    // The desired-notification forwarder while subscribed; cancelled on DELETE or link end.
    let mut forwarder: Option<CancellationToken> = None;
    let link_done = CancellationToken::new();
    let _stop_forwarder = link_done.clone().drop_guard();
    inbound::run(&conn, receiver, Some(auth), revoked, |m: Incoming| {
        let reply = match parse_request(&m) {
            Ok(Request::Twin(op)) => {
                let payload = match body_bytes(&m.body) {
                    Ok(p) => p,
                    Err(e) => return inbound::done(Err(e)),
                };
                hub.device_twin_request(&identity, op, &payload)
            }
            Ok(Request::Subscribe) => {
                if forwarder.is_none() {
                    let stop = link_done.child_token();
                    let mut sub = hub.subscribe_desired(&identity);
                    let tx = tx.clone();
                    let cancel = conn.cancel.clone();
                    let s = stop.clone();
                    let overflow = sub.overflowed().clone();
                    conn.ctx.tasks.spawn(async move {
                        loop {
                            let n = tokio::select! {
                                _ = s.cancelled() => return,
                                _ = cancel.cancelled() => return,
                                _ = overflow.cancelled() => return,
                                n = sub.recv() => n,
                            };
                            if tx.send(notification(&n.patch, n.version)).await.is_err() {
                                return;
                            }
                        }
                    });
                    forwarder = Some(stop);
                }
                status_only(200)
            }
            Ok(Request::Unsubscribe) => {
                if let Some(stop) = forwarder.take() {
                    stop.cancel();
                }
                status_only(200)
            }
            Err(e) => {
                let tracking = uuid::Uuid::new_v4().simple().to_string();
                TwinReply {
                    status: e.code().http_status(),
                    version: None,
                    body: iothub_protocol::twin::device_error_body(&e, &tracking, hub.now()),
                }
            }
        };
        let out = response(&m, reply);
        let tx = tx.clone();
        let hub = hub.clone();
        Box::pin(async move {
            // Acknowledged means durable: the answer waits for the disk.
            hub.synced().await.map_err(|e| HubError::ServerError {
                detail: e.to_string(),
            })?;
            // The receiver link may not be attached yet; the queue holds the answer.
            let _ = tx.send(out).await;
            Ok(())
        })
    })
    .await;
    drop(registration);
}

/// Serves the response link (the peer's receiver on the twin node) of a device or module.
pub async fn serve_responses(conn: Arc<Conn>, sender: Sender, identity: Identity) {
    if let Err(e) = conn.tokens.authorize_link(&conn.ctx, Access::of(&identity)) {
        return outbound::refuse(sender, error_for(&e)).await;
    }
    let key = identity.to_string();
    let Some(rx) = conn.twins.with(&key, |ch| ch.rx.take()) else {
        let e = HubError::InvalidOperation {
            detail: format!("'{key}' already has a twin receiver link on this connection"),
        };
        return outbound::refuse(sender, error_for(&e)).await;
    };
    let rx = outbound::forward(&conn, sender, rx).await;
    conn.twins.with(&key, |ch| ch.rx = Some(rx));
}
