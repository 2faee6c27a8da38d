//! The peer's link handles on each session, as the frame guard ([`super::frame_guard`]) sees
//! its `attach`, `detach` and `end` frames, and what that makes safe to hand to fe2o3:
//!
//! * **Flows for handles never attached.** fe2o3's acceptor keeps a `flow` naming a handle it
//!   does not know, in case the link's attach is still on its way to the application, and
//!   keeps it until that handle attaches: for ever, if it never does. A peer sending such
//!   flows without end grows the emulator without end. fe2o3 registers a handle when the
//!   peer attaches it and forgets it when the peer detaches it, as tracked here, so a flow for
//!   a handle not attached now can only pile up and is dropped (the spec's alternative,
//!   ending the session with `amqp:session:unattached-handle`, is harsher for the same peer).
//! * **Multi-frame deliveries.** fe2o3 joins the payloads of a delivery's frames (`more`) and
//!   serde_amqp decodes the message from the joined bytes, allocating whatever a length in
//!   them claims. So the guard keeps a copy of each delivery in progress and checks the joined
//!   bytes as it checks a performative ([`super::encoding::check_values`]) before the last
//!   frame goes on; a single-frame delivery's payload is checked the same way. A delivery
//!   past the link's [`MAX_MESSAGE_SIZE`] is no longer copied (fe2o3 detaches its link before
//!   decoding it), and all deliveries in progress on a connection together may hold at most
//!   [`MAX_PARTIAL_BYTES`].

use std::collections::HashMap;

use bytes::BytesMut;
use fe2o3_amqp_types::definitions::DeliveryTag;
use fe2o3_amqp_types::performatives::{Flow, Transfer};

use super::connection::MAX_MESSAGE_SIZE;
use super::frame_guard::Violation;

/// The most bytes a connection's incomplete deliveries may hold together (sixteen messages
/// of the largest size a link accepts; an SDK has one or two in progress).
pub const MAX_PARTIAL_BYTES: usize = 16 * MAX_MESSAGE_SIZE as usize;

/// Attached handles per channel, each with its delivery in progress.
#[derive(Debug, Default)]
pub struct PeerLinks {
    sessions: HashMap<u16, HashMap<u32, Option<Partial>>>,
    /// Bytes held by all [`Partial`]s.
    partial_bytes: usize,
}

/// The frames of a delivery received so far.
#[derive(Debug)]
struct Partial {
    delivery_id: Option<u32>,
    tag: Option<DeliveryTag>,
    bytes: BytesMut,
    /// Past the link's size limit: fe2o3 refuses it, so it is no longer copied or checked.
    oversized: bool,
}

impl PeerLinks {
    /// The peer attached `handle` on `channel` (again: any delivery in progress is gone).
    pub fn attached(&mut self, channel: u16, handle: u32) {
        let old = self
            .sessions
            .entry(channel)
            .or_default()
            .insert(handle, None);
        self.release(old.flatten());
    }

    /// The peer detached `handle` on `channel`.
    pub fn detached(&mut self, channel: u16, handle: u32) {
        let old = self
            .sessions
            .get_mut(&channel)
            .and_then(|s| s.remove(&handle));
        self.release(old.flatten());
    }

    /// The peer ended the session on `channel`: its handles are gone.
    pub fn ended(&mut self, channel: u16) {
        for (_, partial) in self.sessions.remove(&channel).unwrap_or_default() {
            self.release(partial);
        }
    }

    /// Whether `flow` may go to fe2o3: a session-level flow, or one for an attached handle.
    pub fn admits(&self, channel: u16, flow: &Flow) -> bool {
        flow.handle.as_ref().is_none_or(|h| {
            self.sessions
                .get(&channel)
                .is_some_and(|s| s.contains_key(&h.0))
        })
    }

    /// Takes one transfer frame; refuses a delivery whose bytes are not whole, well-formed
    /// AMQP values once complete, or that names another delivery while one is in progress.
    pub fn transfer(
        &mut self,
        channel: u16,
        transfer: &Transfer,
        payload: &[u8],
    ) -> Result<(), Violation> {
        let Self {
            sessions,
            partial_bytes,
        } = self;
        // fe2o3 drops transfers for handles it does not know, unread.
        let Some(slot) = sessions
            .get_mut(&channel)
            .and_then(|s| s.get_mut(&transfer.handle.0))
        else {
            return Ok(());
        };
        if let Some(p) = slot.as_ref() {
            let other_id = transfer
                .delivery_id
                .is_some_and(|id| Some(id) != p.delivery_id);
            let other_tag = transfer
                .delivery_tag
                .as_ref()
                .is_some_and(|t| Some(t) != p.tag.as_ref());
            if other_id || other_tag {
                return Err(Violation::NotAllowed(
                    "a transfer names another delivery while one is incomplete".into(),
                ));
            }
        }
        if transfer.aborted || !transfer.more {
            let done = slot.take();
            *partial_bytes -= done.as_ref().map_or(0, |p| p.bytes.len());
            if transfer.aborted {
                return Ok(());
            }
            let checked = match done {
                None => super::encoding::check_values(payload),
                Some(p) if p.oversized => Ok(()),
                Some(mut p) => {
                    p.bytes.extend_from_slice(payload);
                    super::encoding::check_values(&p.bytes)
                }
            };
            return checked.map_err(|m| {
                Violation::Decode(format!("a delivery's message is malformed: {}", m.0))
            });
        }
        let p = slot.get_or_insert_with(|| Partial {
            delivery_id: transfer.delivery_id,
            tag: transfer.delivery_tag.clone(),
            bytes: BytesMut::new(),
            oversized: false,
        });
        if p.oversized {
            return Ok(());
        }
        if (p.bytes.len() + payload.len()) as u64 > MAX_MESSAGE_SIZE {
            *partial_bytes -= p.bytes.len();
            p.bytes = BytesMut::new();
            p.oversized = true;
            return Ok(());
        }
        if *partial_bytes + payload.len() > MAX_PARTIAL_BYTES {
            return Err(Violation::ResourceLimit(format!(
                "incomplete deliveries hold more than {MAX_PARTIAL_BYTES} bytes"
            )));
        }
        p.bytes.extend_from_slice(payload);
        *partial_bytes += payload.len();
        Ok(())
    }

    /// Bytes held for incomplete deliveries.
    #[cfg(test)]
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// Handles attached, over all sessions.
    #[cfg(test)]
    pub fn handles(&self) -> usize {
        self.sessions.values().map(HashMap::len).sum()
    }

    fn release(&mut self, partial: Option<Partial>) {
        self.partial_bytes -= partial.map_or(0, |p| p.bytes.len());
    }
}
