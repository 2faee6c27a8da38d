//! The reply channel of a request/response node (`$cbs`, `$management`).
//!
//! A client sends requests on one link and reads the answers on another link of the same
//! connection. Request handling queues each reply here; the connection's one reply link takes
//! the receiver while it is attached and gives it back when it detaches, so a re-attached reply
//! link sees what is still queued and a second one at the same time is refused.

use std::sync::Mutex;

use fe2o3_amqp::Sender;
use fe2o3_amqp_types::messaging::{AmqpValue, Message as AmqpMessage};
use fe2o3_amqp_types::primitives::Value;
use iothub_protocol::HubError;
use tokio::sync::mpsc;

use super::connection::Conn;
use super::errors::error_for;
use super::outbound;

/// Replies waiting for the node's reply link.
const REPLY_QUEUE: usize = 16;

/// A reply of a request/response node.
pub type Reply = AmqpMessage<AmqpValue<Value>>;

/// The reply channel of one node on one connection.
pub struct Replies {
    tx: mpsc::Sender<Reply>,
    rx: Mutex<Option<mpsc::Receiver<Reply>>>,
}

impl Default for Replies {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        Replies {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Replies {
    /// Where request handling queues its replies.
    pub fn sender(&self) -> mpsc::Sender<Reply> {
        self.tx.clone()
    }

    /// Sends the queued replies on the client's reply link until it detaches; `node` names the
    /// node in the refusal of a second reply link.
    pub async fn serve(&self, conn: &Conn, sender: Sender, node: &str) {
        let taken = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(rx) = taken else {
            let e = HubError::InvalidOperation {
                detail: format!("this connection already has a {node} reply link"),
            };
            outbound::refuse(sender, error_for(&e)).await;
            return;
        };
        let rx = outbound::forward(conn, sender, rx).await;
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    }
}
