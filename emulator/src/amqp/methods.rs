//! Direct methods over AMQP (iothub-beyond-c2d.md 2.3): a device attaches two links to
//! `/devices/{id}/methods/devicebound` (any case: Node writes `devicebound`, C# `deviceBound`).
//!
//! - Its receiver gets the requests: the device listens for methods while it is attached.
//!   Each request carries the correlation id as an AMQP **uuid** (the C and C# SDKs parse it as
//!   one), the application property `IoThub-methodname`, and the JSON payload as one data
//!   section (never empty: `null`).
//! - Its sender carries the answers: the correlation id echoed (uuid or string), the status in
//!   `IoThub-status` (int, long or text), the payload as the body. Every answer is accepted;
//!   the hub drops late or unknown ones.
//!
//! The link properties the SDKs send (`com.microsoft:api-version`,
//! `com.microsoft:channel-correlation-id`) need no answer. The two links are separate tasks;
//! the request link leaves its [`MethodResponder`] in [`Responders`] for the answer link.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use fe2o3_amqp::link::SendError;
use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::definitions::Error as AmqpError;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Message as AmqpMessage, MessageId as AmqpMessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::Binary;
use futures_util::stream::{FuturesUnordered, StreamExt};
use iothub_protocol::HubError;
use iothub_protocol::amqp::message_from_amqp;

use super::connection::Conn;
use super::convert::{Incoming, Outgoing};
use super::errors::error_for;
use super::inbound::{self, DETACH_TIMEOUT, revoked_error};
use super::outbound;
use super::tokens::Access;
use crate::driver::{DeviceProtocol, MethodResponder};
use crate::hub::{Identity, MethodRequest};

/// Application property naming the method of a request.
pub const METHOD_NAME: &str = "IoThub-methodname";
/// Application property carrying the status of an answer.
pub const STATUS: &str = "IoThub-status";

/// The answering side of each device's (or module's, `{device}/{module}`) request link on
/// one connection.
#[derive(Default)]
pub struct Responders(Mutex<HashMap<String, MethodResponder>>);

impl Responders {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, MethodResponder>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type OutcomeFut = Pin<Box<dyn Future<Output = Result<Outcome, SendError>> + Send>>;

/// Serves the method receiver of a device or module: requests go out as the hub hands them
/// to this link.
pub async fn serve_requests(conn: Arc<Conn>, mut sender: Sender, identity: Identity) {
    let mut auth = match conn.tokens.authorize_link(&conn.ctx, Access::of(&identity)) {
        Ok(auth) => auth,
        Err(e) => return outbound::refuse(sender, error_for(&e)).await,
    };
    let hub = conn.ctx.hub.clone();
    // Keyed `{device}` or `{device}/{module}`, as the MQTT client id.
    let device_id = identity.to_string();
    let registration = hub.register_connection(&device_id, DeviceProtocol::Amqp);
    let mut listener = match hub.listen_methods(&identity) {
        Ok(l) => l,
        Err(e) => return outbound::refuse(sender, error_for(&e)).await,
    };
    let responder = listener.responder();
    conn.methods
        .lock()
        .insert(device_id.clone(), responder.clone());
    // The device's dispositions say nothing the hub acts on; they are only collected.
    let mut outcomes: FuturesUnordered<OutcomeFut> = FuturesUnordered::new();
    let ending: Option<Option<AmqpError>> = loop {
        let request = tokio::select! {
            _ = conn.cancel.cancelled() => break Some(None),
            _ = registration.cancelled().cancelled() => {
                break Some(Some(error_for(&revoked_error())));
            }
            _ = auth.tick() => match auth.check() {
                Ok(()) => continue,
                Err(e) => break Some(Some(error_for(&e))),
            },
            Some(_) = outcomes.next(), if !outcomes.is_empty() => continue,
            _ = sender.on_detach() => break None,
            r = listener.recv() => r,
        };
        let Some(request) = request else {
            break Some(None);
        };
        tracing::debug!(device = %device_id, method = %request.name, rid = %request.rid, "method request (AMQP)");
        let sent = tokio::select! {
            _ = conn.cancel.cancelled() => break Some(None),
            r = sender.send_batchable(request_message(&request)) => r,
        };
        match sent {
            Ok(fut) => outcomes.push(Box::pin(fut)),
            Err(SendError::LinkStateError(_) | SendError::Detached(_)) => break None,
            Err(e) => break Some(Some(super::errors::cannot_send(&e))),
        }
    };
    {
        let mut responders = conn.methods.lock();
        if responders
            .get(&device_id)
            .is_some_and(|r| r.same_listener(&responder))
        {
            responders.remove(&device_id);
        }
    }
    // Requests still unanswered fail as on a disconnect.
    drop(listener);
    drop(registration);
    if let Some(error) = ending {
        let close = async move {
            match error {
                Some(e) => sender.close_with_error(e).await,
                None => sender.close().await,
            }
        };
        let _ = tokio::time::timeout(DETACH_TIMEOUT, close).await;
    }
}

/// Serves the method sender of a device or module: each answer goes to the hub.
pub async fn serve_responses(conn: Arc<Conn>, receiver: Receiver, identity: Identity) {
    let auth = match conn.tokens.authorize_link(&conn.ctx, Access::of(&identity)) {
        Ok(auth) => auth,
        Err(e) => return inbound::refuse(receiver, error_for(&e)).await,
    };
    let device_id = identity.to_string();
    let registration = conn
        .ctx
        .hub
        .register_connection(&device_id, DeviceProtocol::Amqp);
    let revoked = registration.cancelled().clone();
    let answers = conn.clone();
    inbound::run(&conn, receiver, Some(auth), revoked, |m: Incoming| {
        inbound::done(answer(&answers, &device_id, m))
    })
    .await;
}

/// The AMQP message for a request.
pub fn request_message(request: &MethodRequest) -> Outgoing {
    let properties = Properties {
        correlation_id: Some(AmqpMessageId::Uuid(
            (*request.rid.to_uuid().as_bytes()).into(),
        )),
        ..Properties::default()
    };
    let app = ApplicationProperties::builder()
        .insert(METHOD_NAME, request.name.clone())
        .build();
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(app)
        .data(Binary::from(request.payload.as_bytes().to_vec()))
        .build()
}

/// Passes one answer to the hub. Errors reject the delivery: an answer the hub cannot read.
pub(super) fn answer(conn: &Conn, device_id: &str, m: Incoming) -> Result<(), HubError> {
    let message = message_from_amqp(m)?;
    let rid = message
        .system
        .correlation_id
        .as_ref()
        .map(|c| c.canonical())
        .ok_or_else(|| HubError::argument("a method answer needs the request's correlation id"))?;
    let status = message
        .properties
        .get(STATUS)
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| {
            HubError::argument(format!(
                "a method answer needs an integer application property '{STATUS}'"
            ))
        })?;
    let responder = conn.methods.lock().get(device_id).cloned();
    match responder {
        Some(r) => {
            let disposition = r.respond(&rid, status, &message.body);
            tracing::debug!(device = %device_id, %rid, status, ?disposition, "method answer (AMQP)");
        }
        None => {
            tracing::debug!(device = %device_id, %rid, "method answer without a request link dropped")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ConnectionId, InvocationId, RequestId};
    use fe2o3_amqp_types::messaging::Body;
    use fe2o3_amqp_types::primitives::Value;
    use iothub_protocol::method::JsonPayload;

    #[test]
    fn requests_carry_a_uuid_correlation_id_the_name_and_a_json_body() {
        let request = MethodRequest {
            invocation: InvocationId(1),
            connection: ConnectionId(1),
            identity: Identity::device("d1"),
            rid: RequestId(42),
            name: "reboot".into(),
            payload: JsonPayload::null(),
        };
        let m = request_message(&request);
        let Some(AmqpMessageId::Uuid(u)) = m.properties.as_ref().unwrap().correlation_id.clone()
        else {
            panic!("correlation id is not a uuid");
        };
        let u = uuid::Uuid::from_bytes(u.into_inner());
        assert_eq!(RequestId::parse(&u.to_string()), Some(RequestId(42)));
        let app = m.application_properties.as_ref().unwrap();
        assert_eq!(
            app.0.get(METHOD_NAME),
            Some(&fe2o3_amqp_types::primitives::SimpleValue::String(
                "reboot".into()
            ))
        );
        assert_eq!(m.body.0.as_ref(), b"null");
        let _: Body<Value> = Body::Empty;
    }
}
