//! The built-in Event Hubs-compatible endpoint: what `azure-eventhub`, `@azure/event-hubs` and
//! the other Event Hubs clients use to read device telemetry (iothub-beyond-c2d.md 3).
//!
//! It shares the AMQP stack of the IoT Hub endpoint (SASL, CBS put-token, sessions) and adds:
//!
//! * [`address`]: the nodes, as each client spells them.
//! * [`receiver`]: partition receivers with their start position and owner level.
//! * [`management`]: `$management` entity and partition information.
//! * [`message`]: the AMQP message of an event.
//! * [`redirect`]: `amqp:link:redirect` for `messages/events` on the hub host.
//! * [`listener`]: plain AMQP on 5672 for `UseDevelopmentEmulator=true` connection strings.
//!
//! Every listener serves every node: the Event Hubs-compatible host is the hub's own host.
//! The Event Hubs clients sign `sb://` audiences with the key text as the HMAC key; the
//! authenticator accepts that for `sb://` audiences only.

pub(super) mod address;
pub mod listener;
pub(super) mod management;
mod message;
pub(super) mod receiver;
mod redirect;

use std::sync::Arc;

use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp_types::definitions::Role;
use fe2o3_amqp_types::performatives::Attach;

use super::connection::Conn;
use super::errors::unknown_address;
use super::{inbound, outbound};
use address::EhNode;

/// An Event Hubs link, recognised from its attach before the link is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EhLink {
    /// A partition receiver.
    Partition(receiver::PartitionRequest),
    /// Either side of the management node.
    Management,
    /// A receiver on `messages/events/{suffix}` to redirect.
    Redirect(String),
}

/// The Event Hubs link an attach asks for, or `None` when it names an IoT Hub node.
pub fn classify(attach: &Attach, address: Option<&str>) -> Option<EhLink> {
    match (address.and_then(address::parse)?, &attach.role) {
        (
            EhNode::Partition {
                entity,
                consumer_group,
                partition_id,
            },
            _,
        ) => Some(EhLink::Partition(receiver::request(
            attach,
            entity,
            consumer_group,
            partition_id,
        ))),
        (EhNode::Management, _) => Some(EhLink::Management),
        // The peer receives: it wants events from the hub host.
        (EhNode::Redirect(suffix), Role::Receiver) => Some(EhLink::Redirect(suffix)),
        (EhNode::Redirect(_), Role::Sender) => None,
    }
}

/// Serves an accepted Event Hubs link until it ends.
pub async fn serve(conn: Arc<Conn>, link: LinkEndpoint, eh: EhLink, address: Option<String>) {
    match (eh, link) {
        (EhLink::Partition(request), LinkEndpoint::Sender(s)) => {
            receiver::serve(conn, s, request).await
        }
        (EhLink::Management, LinkEndpoint::Receiver(r)) => {
            management::serve_requests(conn, r).await
        }
        (EhLink::Management, LinkEndpoint::Sender(s)) => management::serve_replies(conn, s).await,
        (EhLink::Redirect(suffix), LinkEndpoint::Sender(s)) => {
            redirect::serve(&conn, s, &suffix).await
        }
        (_, link) => {
            let error = unknown_address(address.as_deref().unwrap_or_default());
            match link {
                LinkEndpoint::Sender(s) => outbound::refuse(s, error).await,
                LinkEndpoint::Receiver(r) => inbound::refuse(r, error).await,
            }
        }
    }
}
