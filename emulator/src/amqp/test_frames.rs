//! Performatives for the frame-level unit tests (`frame_guard`, `handles`): one builder each,
//! with every field a test does not care about set to its plainest value.

use fe2o3_amqp_types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp_types::performatives::{Attach, Detach, Flow, Transfer};

/// An attach of `name` in `role` on `handle`.
pub fn attach(name: &str, role: Role, handle: u32) -> Attach {
    Attach {
        name: name.into(),
        handle: Handle(handle),
        role,
        snd_settle_mode: SenderSettleMode::Mixed,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: None,
        target: None,
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// A flow granting credit on `handle`, or a session-only flow for `None`.
pub fn flow(handle: Option<u32>) -> Flow {
    Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: handle.map(Handle),
        delivery_count: Some(0),
        link_credit: Some(10),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    }
}

/// A transfer on `handle`; `delivery` names the delivery (its id and tag), as the first
/// frame of a delivery must, and `None` leaves both out, as a continuation frame may.
pub fn transfer(handle: u32, delivery: Option<u32>, more: bool) -> Transfer {
    Transfer {
        handle: Handle(handle),
        delivery_id: delivery,
        delivery_tag: delivery.map(|d| d.to_be_bytes().to_vec().into()),
        message_format: delivery.map(|_| 0),
        settled: None,
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

/// A closing detach of `handle`.
pub fn detach(handle: u32) -> Detach {
    Detach {
        handle: Handle(handle),
        closed: true,
        error: None,
    }
}
