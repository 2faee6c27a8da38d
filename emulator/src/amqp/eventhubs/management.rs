//! The `$management` node: `READ` of `com.microsoft:eventhub` (name, creation time, partition
//! ids) and `com.microsoft:partition` (runtime information), in the request and response shapes
//! of iothub-beyond-c2d.md 3.3.
//!
//! Python attaches its request sender and reply receiver to `$management`, JS to
//! `{eh}/$management` with the reply receiver's target as `reply-to`. Either way the replies of
//! one connection go out on its management receiver link, each with `correlation-id` = the
//! request's `message-id` in the same AMQP type (a UUID from pyamqp, a string from JS) and the
//! application properties `status-code` (int) and `status-description`. The body is a map with
//! string keys; offsets are strings, sequence numbers longs, times timestamps, partition ids an
//! array of strings.

use std::sync::Arc;

use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{ApplicationProperties, Message as AmqpMessage, Properties};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};
use tokio_util::sync::CancellationToken;

use crate::amqp::connection::Conn;
use crate::amqp::convert::Incoming;
use crate::amqp::inbound;
use crate::amqp::replies::Reply;
use crate::amqp::tokens::Access;
use crate::auth::Need;
use crate::credentials::Permissions;
use crate::hub::EventLogError;
use crate::hub::event_log::{EventHubInfo, PartitionInfo, unix_ms};

/// `type` of an entity information request.
pub const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";
/// `type` of a partition information request.
pub const PARTITION_TYPE: &str = "com.microsoft:partition";
/// Serves the client's request link (its sender to the management node).
pub async fn serve_requests(conn: Arc<Conn>, receiver: Receiver) {
    let never = CancellationToken::new();
    inbound::run(&conn, receiver, None, never, |request: Incoming| {
        let reply = answer(&conn, &request);
        let tx = conn.management.sender();
        Box::pin(async move {
            let _ = tx.send(reply).await;
            Ok(())
        })
    })
    .await;
}

/// Serves the client's reply link (its receiver from the management node).
pub async fn serve_replies(conn: Arc<Conn>, sender: Sender) {
    conn.management.serve(&conn, sender, "$management").await;
}

/// A failed request: its status code and description.
struct Failure(i32, String);

impl From<EventLogError> for Failure {
    fn from(e: EventLogError) -> Self {
        let status = match e {
            EventLogError::ConsumerGroupNotFound { .. } => 404,
            _ => 400,
        };
        Failure(status, e.to_string())
    }
}

pub(in crate::amqp) fn answer(conn: &Conn, request: &Incoming) -> Reply {
    let (reply_to, message_id) = match &request.properties {
        Some(p) => (p.reply_to.clone(), p.message_id.clone()),
        None => (None, None),
    };
    let (status, description, body) = match read(conn, request) {
        Ok(body) => (200, "OK".to_owned(), body),
        Err(Failure(status, d)) => (status, d, Value::Null),
    };
    tracing::debug!(peer = %conn.peer, status, %description, "Event Hubs management request");
    let properties = Properties {
        correlation_id: message_id,
        to: reply_to,
        ..Properties::default()
    };
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert("status-description", description)
                .build(),
        )
        .value(body)
        .build()
}

fn app_string(request: &Incoming, name: &str) -> Option<String> {
    let app = request.application_properties.as_ref()?;
    match app.0.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// True when the connection holds a ServiceConnect token, or the request carries one in
/// `security_token` (both clients send it).
fn authorized(conn: &Conn, request: &Incoming) -> Result<(), Failure> {
    let resource = format!("{}/$management", conn.ctx.hub_name);
    if conn
        .tokens
        .authorize_link(&conn.ctx, Access::EventHub(resource.clone()))
        .is_ok()
    {
        return Ok(());
    }
    let token = app_string(request, "security_token").unwrap_or_default();
    let ctx = &conn.ctx;
    let now = ctx.now_unix();
    ctx.hub
        .read(|hub| {
            ctx.auth.authorize(
                hub,
                &token,
                Need::Scoped {
                    permissions: Permissions::SERVICE_CONNECT,
                    resource: &resource,
                },
                now,
            )
        })
        .map(|_| ())
        .map_err(|e| Failure(401, e.to_string()))
}

fn read(conn: &Conn, request: &Incoming) -> Result<Value, Failure> {
    authorized(conn, request)?;
    let operation = app_string(request, "operation").unwrap_or_default();
    if !operation.eq_ignore_ascii_case("READ") {
        return Err(Failure(
            400,
            format!("unsupported management operation '{operation}'; only READ is"),
        ));
    }
    let name = app_string(request, "name").unwrap_or_default();
    if !name.eq_ignore_ascii_case(&conn.ctx.hub_name) {
        let shown: String = name.chars().take(64).collect();
        return Err(Failure(
            404,
            format!(
                "The messaging entity '{shown}' could not be found. This hub's Event Hubs-compatible name is '{}'.",
                conn.ctx.hub_name
            ),
        ));
    }
    let kind = app_string(request, "type").unwrap_or_default();
    if kind.eq_ignore_ascii_case(EVENTHUB_TYPE) {
        Ok(eventhub_body(
            &conn.ctx.hub.read(|hub| hub.event_hub_info()),
        ))
    } else if kind.eq_ignore_ascii_case(PARTITION_TYPE) {
        let partition = app_string(request, "partition").unwrap_or_default();
        let info = conn.ctx.hub.read(|hub| hub.partition_info(&partition))?;
        Ok(partition_body(&info, &conn.ctx.hub_name))
    } else {
        Err(Failure(
            400,
            format!("unsupported type '{kind}'; use {EVENTHUB_TYPE} or {PARTITION_TYPE}"),
        ))
    }
}

fn timestamp(t: time::OffsetDateTime) -> Value {
    Value::Timestamp(Timestamp::from_milliseconds(unix_ms(t)))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(m)
}

/// The `com.microsoft:eventhub` body.
pub fn eventhub_body(info: &EventHubInfo) -> Value {
    let ids: Vec<Value> = info
        .partition_ids
        .iter()
        .map(|p| Value::String(p.clone()))
        .collect();
    map(vec![
        ("name", Value::String(info.name.clone())),
        ("type", Value::String(EVENTHUB_TYPE.to_owned())),
        ("created_at", timestamp(info.created_at)),
        ("partition_count", Value::Int(ids.len() as i32)),
        ("partition_ids", Value::Array(Array::from(ids))),
    ])
}

/// The `com.microsoft:partition` body.
pub fn partition_body(info: &PartitionInfo, hub_name: &str) -> Value {
    map(vec![
        ("name", Value::String(hub_name.to_owned())),
        ("type", Value::String(PARTITION_TYPE.to_owned())),
        ("partition", Value::String(info.partition_id.clone())),
        (
            "begin_sequence_number",
            Value::Long(info.begin_sequence_number),
        ),
        (
            "last_enqueued_sequence_number",
            Value::Long(info.last_enqueued_sequence_number),
        ),
        (
            "last_enqueued_offset",
            Value::String(info.last_enqueued_offset.clone()),
        ),
        ("last_enqueued_time_utc", timestamp(info.last_enqueued_time)),
        ("is_partition_empty", Value::Bool(info.is_empty)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn get<'a>(body: &'a Value, key: &str) -> &'a Value {
        let Value::Map(m) = body else {
            panic!("not a map")
        };
        m.get(&Value::String(key.to_owned())).unwrap()
    }

    #[test]
    fn bodies_have_the_types_the_clients_read() {
        let e = eventhub_body(&EventHubInfo {
            name: "hub".into(),
            created_at: datetime!(2026-01-01 0:00 UTC),
            partition_ids: vec!["0".into(), "1".into()],
        });
        assert_eq!(get(&e, "partition_count"), &Value::Int(2));
        assert_eq!(
            get(&e, "partition_ids"),
            &Value::Array(Array::from(vec![
                Value::String("0".into()),
                Value::String("1".into())
            ]))
        );
        let p = partition_body(
            &PartitionInfo {
                partition_id: "1".into(),
                begin_sequence_number: 0,
                last_enqueued_sequence_number: 4,
                last_enqueued_offset: "900".into(),
                last_enqueued_time: datetime!(2026-01-01 0:00 UTC),
                is_empty: false,
            },
            "hub",
        );
        assert_eq!(
            get(&p, "last_enqueued_offset"),
            &Value::String("900".into())
        );
        assert_eq!(get(&p, "last_enqueued_sequence_number"), &Value::Long(4));
        assert_eq!(get(&p, "is_partition_empty"), &Value::Bool(false));
    }
}
