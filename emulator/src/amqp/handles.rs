//! The write side's record of which link handles the emulator has attached, so that no frame
//! naming a handle goes out after the handle's `detach` (AMQP 1.0 §2.6.2: a handle is only
//! valid between attach and detach; the peer ends the session with `unattached-handle`
//! otherwise).
//!
//! fe2o3 can break that rule. A receiver link sets its first credit with a `flow` it queues on
//! the link's own channel right after the `attach`; when the peer detaches at once (a client
//! cycling links), the session engine answers the `detach` from its incoming path before it
//! gets to that queued `flow`, which then goes out for a handle that is gone. The client ends
//! its session (seen as `SessionStopped(Ended)` in fe2o3 clients). Here every outgoing `attach`,
//! `detach` and `end` is tracked per channel, and a `flow` or `transfer` naming a handle that
//! is not attached is dropped: the link it belonged to is over, so nothing is lost.

use std::collections::HashSet;

use fe2o3_amqp_types::performatives::Performative;

use super::stream::decode_frame;

const FRAME_TYPE_AMQP: u8 = 0;
const ATTACH: u8 = 0x12;
const FLOW: u8 = 0x13;
const TRANSFER: u8 = 0x14;
const DETACH: u8 = 0x16;
const END: u8 = 0x17;

/// Handles the emulator attached, by channel.
#[derive(Debug, Default)]
pub struct OutgoingHandles {
    attached: HashSet<(u16, u32)>,
    dropped: u64,
}

impl OutgoingHandles {
    /// Records what `frame` (one whole frame the emulator is about to send) does to the link
    /// handles; false when it names a handle that is not attached and must not be sent.
    pub fn admit(&mut self, frame: &[u8]) -> bool {
        let Some((channel, code, body)) = performative_code(frame) else {
            return true;
        };
        let known = |h: Option<u32>| h.is_none_or(|h| self.attached.contains(&(channel, h)));
        let admitted = match code {
            ATTACH => {
                if let Some((_, Performative::Attach(a), _)) = decode_frame(frame) {
                    self.attached.insert((channel, a.handle.0));
                }
                true
            }
            DETACH => {
                if let Some(h) = first_uint(body) {
                    self.attached.remove(&(channel, h));
                }
                true
            }
            END => {
                self.attached.retain(|(c, _)| *c != channel);
                true
            }
            TRANSFER => known(first_uint(body)),
            FLOW => match decode_frame(frame) {
                Some((_, Performative::Flow(f), _)) => known(f.handle.map(|h| h.0)),
                _ => true,
            },
            _ => true,
        };
        if !admitted {
            self.dropped += 1;
            tracing::debug!(
                channel,
                code,
                dropped = self.dropped,
                "frame for a detached link handle not sent"
            );
        }
        admitted
    }
}

/// The channel, the performative's descriptor code and the bytes after the descriptor of an
/// AMQP frame (as fe2o3 encodes it: a small-ulong descriptor).
fn performative_code(frame: &[u8]) -> Option<(u16, u8, &[u8])> {
    let doff = usize::from(*frame.get(4)?) * 4;
    if *frame.get(5)? != FRAME_TYPE_AMQP {
        return None;
    }
    let channel = u16::from_be_bytes([*frame.get(6)?, *frame.get(7)?]);
    match frame.get(doff..doff + 3)? {
        [0x00, 0x53, code] => Some((channel, *code, frame.get(doff + 3..)?)),
        _ => None,
    }
}

/// The first field of a described list when it is a `uint` (the handle of `transfer` and
/// `detach`); `None` for anything else.
fn first_uint(list: &[u8]) -> Option<u32> {
    let field = match *list.first()? {
        0xc0 if *list.get(2)? > 0 => list.get(3..)?,
        0xd0 if u32::from_be_bytes(list.get(5..9)?.try_into().ok()?) > 0 => list.get(9..)?,
        _ => return None,
    };
    match *field.first()? {
        0x43 => Some(0),
        0x52 => field.get(1).map(|b| u32::from(*b)),
        0x70 => Some(u32::from_be_bytes(field.get(1..5)?.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::stream::encode_frame;
    use crate::amqp::test_frames;
    use fe2o3_amqp_types::definitions::Role;
    use fe2o3_amqp_types::performatives::End;

    fn attach(handle: u32) -> Performative {
        Performative::Attach(test_frames::attach("l", Role::Receiver, handle))
    }

    fn flow(handle: Option<u32>) -> Performative {
        Performative::Flow(test_frames::flow(handle))
    }

    fn transfer(handle: u32) -> Performative {
        Performative::Transfer(test_frames::transfer(handle, Some(0), false))
    }

    fn detach(handle: u32) -> Performative {
        Performative::Detach(test_frames::detach(handle))
    }

    fn send(h: &mut OutgoingHandles, channel: u16, p: Performative) -> bool {
        h.admit(&encode_frame(channel, &p, b"").unwrap())
    }

    #[test]
    fn a_flow_after_the_detach_of_its_handle_is_not_sent() {
        let mut h = OutgoingHandles::default();
        assert!(send(&mut h, 1, attach(0)));
        assert!(send(&mut h, 1, flow(Some(0))));
        assert!(send(&mut h, 1, detach(0)));
        // The credit fe2o3 queued before the peer's detach was answered.
        assert!(!send(&mut h, 1, flow(Some(0))));
        assert!(!send(&mut h, 1, transfer(0)));
        // Session flows name no handle.
        assert!(send(&mut h, 1, flow(None)));
        // The handle is attached again for the next link.
        assert!(send(&mut h, 1, attach(0)));
        assert!(send(&mut h, 1, flow(Some(0))));
        assert!(send(&mut h, 1, transfer(0)));
    }

    #[test]
    fn handles_are_per_channel_and_end_with_the_session() {
        let mut h = OutgoingHandles::default();
        assert!(send(&mut h, 0, attach(300)));
        assert!(
            !send(&mut h, 1, flow(Some(300))),
            "another session's handle"
        );
        assert!(send(&mut h, 0, transfer(300)), "a large handle is read");
        assert!(send(&mut h, 0, Performative::End(End { error: None })));
        assert!(!send(&mut h, 0, transfer(300)));
    }

    #[test]
    fn frames_it_cannot_read_pass() {
        let mut h = OutgoingHandles::default();
        assert!(h.admit(&[0, 0, 0, 8, 2, 0, 0, 0]), "heartbeat");
        assert!(h.admit(b"AMQP\x00\x01\x00\x00"));
        assert!(h.admit(&[0, 0, 0, 12, 2, 0, 0, 1, 0, 0x53, 0x14, 0x45]));
    }
}
