//! The `$cbs` node: put-token requests in, status replies out (iothub-protocol.md 5.3).
//!
//! A client attaches a sender with target `$cbs` (its requests) and a receiver with source `$cbs`
//! (our replies). Each request is accepted as a delivery and answered with a reply whose
//! `correlation-id` is the request's `message-id` in the same AMQP type (ulong for uamqp and
//! fe2o3, string for Node) and whose application property `status-code` is an AMQP int: 200 for a
//! stored token (Node insists on exactly 200), 401 for a token that does not check out, 400 for a
//! request that is not a put-token. A renewed token is simply put again.

use std::sync::Arc;

use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use iothub_protocol::HubError;
use tokio_util::sync::CancellationToken;

use super::connection::Conn;
use super::convert::Incoming;
use super::inbound;
use super::replies::Reply;
use super::tokens::{check_audience, check_token};

/// The token types the hub accepts in put-token (`type` application property).
const TOKEN_TYPES: [&str; 2] = [
    "servicebus.windows.net:sastoken",
    "azure-devices.net:sastoken",
];
/// Serves the client's request link (its sender to `$cbs`).
pub async fn serve_requests(conn: Arc<Conn>, receiver: Receiver) {
    let never = CancellationToken::new();
    inbound::run(&conn, receiver, None, never, |request: Incoming| {
        let reply = answer(&conn, request);
        let tx = conn.cbs.sender();
        // The request itself is always accepted; its verdict travels in the reply.
        Box::pin(async move {
            let _ = tx.send(reply).await;
            Ok(())
        })
    })
    .await;
}

/// Serves the client's reply link (its receiver from `$cbs`).
pub async fn serve_replies(conn: Arc<Conn>, sender: Sender) {
    conn.cbs.serve(&conn, sender, "$cbs").await;
}

/// Handles one put-token request: checks the token, stores it, and builds the reply.
pub(super) fn answer(conn: &Conn, request: Incoming) -> Reply {
    let (reply_to, message_id) = match &request.properties {
        Some(p) => (p.reply_to.clone(), p.message_id.clone()),
        None => (None, None),
    };
    let (status, description) = match put_token(conn, request) {
        Ok(()) => (200, "OK".to_owned()),
        Err(PutTokenError::BadRequest(d)) => (400, d),
        Err(PutTokenError::Unauthorized(e)) => (401, e.to_string()),
    };
    tracing::debug!(peer = %conn.peer, status, %description, "CBS put-token");
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
        .value(Value::Null)
        .build()
}

enum PutTokenError {
    BadRequest(String),
    Unauthorized(HubError),
}

fn put_token(conn: &Conn, request: Incoming) -> Result<(), PutTokenError> {
    let prop = |name: &str| -> Option<String> {
        let app = request.application_properties.as_ref()?;
        match app.0.get(name)? {
            SimpleValue::String(s) => Some(s.clone()),
            SimpleValue::Symbol(s) => Some(s.0.clone()),
            _ => None,
        }
    };
    let operation = prop("operation").unwrap_or_default();
    if operation != "put-token" {
        return Err(PutTokenError::BadRequest(format!(
            "unsupported $cbs operation '{operation}'; only put-token is"
        )));
    }
    let kind = prop("type").unwrap_or_default();
    if !TOKEN_TYPES.iter().any(|t| t.eq_ignore_ascii_case(&kind)) {
        return Err(PutTokenError::BadRequest(format!(
            "unsupported token type '{kind}'; use servicebus.windows.net:sastoken or azure-devices.net:sastoken"
        )));
    }
    let token = match request.body {
        Body::Value(AmqpValue(Value::String(s))) => s,
        Body::Value(AmqpValue(Value::Symbol(s))) => s.0,
        _ => {
            return Err(PutTokenError::BadRequest(
                "the put-token body must be the token as an amqp-value string".into(),
            ));
        }
    };
    check_token(&conn.ctx, &token).map_err(PutTokenError::Unauthorized)?;
    let audience = check_audience(&conn.ctx, &token, prop("name").as_deref())
        .map_err(PutTokenError::Unauthorized)?;
    conn.tokens.put(&token, audience);
    Ok(())
}
