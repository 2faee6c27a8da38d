//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the AMQP code that
//! reads peer bytes before anything is authenticated.

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::performatives::{Attach, Performative};
use fe2o3_amqp_types::primitives::Value;
use fe2o3_amqp_types::sasl::SaslInit;

use super::frame_guard::{self, ReadGuard};
use super::sasl::HubSasl;
use super::stream::decode_frame;
use super::tokens::Tokens;
use crate::context::Context;

/// The frame guard over `data`, delivered in two reads split where the first byte says (that
/// byte is also the stream's first: a seed starts with `AMQP` and splits after 65 bytes): what
/// it forwards is decoded as fe2o3 would, and the emulator's answers are built.
pub fn frames(data: &[u8]) {
    let _ = guard_verdict(data);
}

/// [`frames`], returning why the guard refused the bytes (`None`: it forwarded them all).
fn guard_verdict(data: &[u8]) -> Option<frame_guard::Violation> {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut guard = ReadGuard::default();
    guard.push(&data[..cut]);
    guard.push(&data[cut..]);
    let mut rest = &guard.ready[..];
    while rest.first() == Some(&b'A') && rest.len() >= 8 {
        rest = &rest[8..];
    }
    let mut deliveries = Deliveries::default();
    while let Some(size) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
    {
        let Some(frame) = rest.get(..size) else { break };
        assert!(size >= 8, "the guard forwarded a {size}-byte frame");
        if let Some((channel, performative, payload)) = decode_frame(frame) {
            deliveries.take(channel, &performative, payload);
        }
        let _ = frame_guard::restore_link_name(frame);
        fe2o3_decodes(frame);
        rest = &rest[size..];
    }
    if let Some(v) = &guard.violation {
        let _ = frame_guard::refusal(v, data.len().is_multiple_of(2), "fuzz");
    }
    guard.violation
}

/// Messages as fe2o3's receiver links join and decode them from the forwarded frames, on the
/// handles fe2o3 knows (it drops transfers for others unread).
#[derive(Default)]
struct Deliveries(std::collections::HashMap<(u16, u32), Vec<u8>>);

impl Deliveries {
    fn take(&mut self, channel: u16, performative: &Performative, payload: &[u8]) {
        match performative {
            Performative::Attach(a) => {
                attach_readers(a);
                self.0.insert((channel, a.handle.0), Vec::new());
            }
            Performative::Detach(d) => {
                self.0.remove(&(channel, d.handle.0));
            }
            Performative::End(_) => self.0.retain(|(c, _), _| *c != channel),
            Performative::Transfer(t) => {
                let Some(joined) = self.0.get_mut(&(channel, t.handle.0)) else {
                    return;
                };
                if t.aborted {
                    joined.clear();
                    return;
                }
                joined.extend_from_slice(payload);
                if !t.more {
                    let reader = serde_amqp::read::IoReader::new(bytes::Buf::reader(&joined[..]));
                    let _ = Body::<Value>::decode_message_from_reader(reader);
                    joined.clear();
                }
            }
            _ => {}
        }
    }
}

/// What the emulator reads from a peer's attach before answering it: the node its address
/// names, and for an Event Hubs receiver the selector filter's start position and the owner
/// level.
fn attach_readers(attach: &Attach) {
    if let Some(address) = super::connection::address_of(attach) {
        addresses_in(&address);
    }
    let _ =
        super::eventhubs::receiver::request(attach, String::new(), String::new(), String::new());
}

/// Link addresses (IoT Hub and Event Hubs nodes, a C2D message's `to`) and Event Hubs selector
/// filters, over arbitrary text: what an attach's address and filter reach.
pub fn addresses(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        addresses_in(text);
        let _ = iothub_protocol::event_position::EventPosition::parse_selector(text);
    }
}

fn addresses_in(text: &str) {
    let _ = super::address::parse_node(text);
    let _ = super::address::c2d_target(Some(text));
    let _ = super::eventhubs::address::parse(text);
}

/// A forwarded frame through fe2o3's own decoders, as its transport hands it over (without
/// the size field): whatever the guard lets through must be safe for them too.
fn fe2o3_decodes(frame: &[u8]) {
    use tokio_util::codec::Decoder;
    let mut src = bytes::BytesMut::from(&frame[4..]);
    if frame[5] == 1 {
        let _ = fe2o3_amqp::frames::sasl::FrameCodec {}.decode(&mut src);
    } else {
        let _ = fe2o3_amqp::frames::amqp::FrameDecoder {}.decode(&mut src);
    }
}

/// A SASL init frame body as the emulator's SASL server answers it, once the frame guard
/// let it through.
pub fn sasl(data: &[u8]) {
    // The frame guard refuses SASL frames that are not whole, well-formed values before fe2o3
    // decodes them.
    if super::encoding::check_values(data).is_err() {
        return;
    }
    let Ok(init) = serde_amqp::from_slice::<SaslInit>(data) else {
        return;
    };
    let ctx = Context::for_tests(crate::hub::HubSettings::default());
    let mut sasl = HubSasl::new(ctx, Tokens::default());
    let _ = sasl.on_init(init);
}

#[cfg(test)]
mod tests {
    use super::frame_guard::Violation;

    fn seed(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../fuzz/corpus/amqp_frames/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The hand-written seeds are whole byte streams (the first byte is both the split point
    /// and the stream's first byte): each must reach the check it is named for, not die on its
    /// first four bytes, or the fuzzer and the replay test start from nothing.
    #[test]
    fn the_hand_written_seeds_reach_what_they_are_named_for() {
        let refused = |name: &str| super::guard_verdict(&seed(name));
        for name in ["open", "split", "sasl", "eventhubs_attach"] {
            assert_eq!(refused(name), None, "{name}");
        }
        let text = |v: Option<Violation>| match v {
            Some(Violation::Framing(t) | Violation::NotAllowed(t)) => t,
            other => panic!("unexpected verdict {other:?}"),
        };
        assert!(text(refused("channel")).contains("channel 300"));
        assert!(text(refused("short_frame")).contains("frame size 5"));
        assert!(text(refused("small_open")).contains("max-frame-size 511"));
    }

    /// The Event Hubs seed's attach carries a selector filter and an owner level, so the
    /// readers behind [`super::attach_readers`] see real values.
    #[test]
    fn the_event_hubs_seed_carries_a_filter_and_an_owner_level() {
        let bytes = seed("eventhubs_attach");
        let attach = bytes
            .windows(3)
            .position(|w| w == [0x00, 0x53, 0x12])
            .and_then(|i| serde_amqp::from_slice::<super::Attach>(&bytes[i..]).ok())
            .expect("an attach");
        let request = crate::amqp::eventhubs::receiver::request(
            &attach,
            String::new(),
            String::new(),
            String::new(),
        );
        assert_eq!(
            request.position,
            Ok(
                iothub_protocol::event_position::EventPosition::SequenceNumber {
                    sequence_number: 5,
                    inclusive: true
                }
            )
        );
        assert_eq!(request.owner_level, Some(3));
    }
}
