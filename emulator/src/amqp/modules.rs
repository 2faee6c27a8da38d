//! Module links under `/devices/{id}/modules/{mid}` (iothub-beyond-c2d.md 4): telemetry on
//! `messages/events`, the twin on `twin`, direct methods on `methods/devicebound`. Each works
//! exactly as the device's link does, for the module's [`Identity`]: the links need a token for
//! the module itself (its key, or a DeviceConnect policy covering it), which the device's key
//! never is, and the module counts as connected while one is attached.
//!
//! IoT Hub sends modules nothing: the Node SDK's input-message receiver (a receiver on the
//! module's own `messages/events`, which only IoT Edge's hub feeds) is refused, and there is no
//! module `messages/devicebound` node at all.

use std::sync::Arc;

use fe2o3_amqp::acceptor::LinkEndpoint;
use iothub_protocol::HubError;

use super::address::ModuleNode;
use super::connection::Conn;
use super::errors::error_for;
use super::tokens::Access;
use super::{device, methods, outbound, twin};
use crate::hub::Identity;

/// Serves one link on a module node.
pub async fn serve(conn: Arc<Conn>, link: LinkEndpoint, module: Identity, node: ModuleNode) {
    match (node, link) {
        (ModuleNode::Events, LinkEndpoint::Receiver(r)) => {
            device::serve_telemetry(conn, r, module).await
        }
        (ModuleNode::Events, LinkEndpoint::Sender(s)) => {
            // The token is checked first, so a peer learns nothing about a module it may
            // not use.
            let e = match conn.tokens.authorize_link(&conn.ctx, Access::of(&module)) {
                Err(e) => e,
                Ok(_) => no_input_messages(&module),
            };
            outbound::refuse(s, error_for(&e)).await
        }
        (ModuleNode::Twin, LinkEndpoint::Receiver(r)) => {
            twin::serve_requests(conn, r, module).await
        }
        (ModuleNode::Twin, LinkEndpoint::Sender(s)) => twin::serve_responses(conn, s, module).await,
        (ModuleNode::Methods, LinkEndpoint::Sender(s)) => {
            methods::serve_requests(conn, s, module).await
        }
        (ModuleNode::Methods, LinkEndpoint::Receiver(r)) => {
            methods::serve_responses(conn, r, module).await
        }
    }
}

/// Why a module cannot receive on its events node.
fn no_input_messages(module: &Identity) -> HubError {
    HubError::InvalidOperation {
        detail: format!(
            "IoT Hub sends no messages to module '{module}': cloud-to-device messages are for devices, and input messages come from IoT Edge"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::errors::error_for;
    use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition};

    #[test]
    fn input_message_receivers_are_refused_as_not_allowed() {
        let e = error_for(&no_input_messages(&Identity::module("d1", "m1")));
        assert_eq!(
            e.condition,
            ErrorCondition::AmqpError(AmqpError::NotAllowed)
        );
        assert!(e.description.unwrap_or_default().contains("'d1/m1'"));
    }
}
