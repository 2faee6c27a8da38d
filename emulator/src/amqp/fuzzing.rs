//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the AMQP code that
//! reads peer bytes before anything is authenticated.

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp_types::sasl::SaslInit;

use super::frame_guard::{self, ReadGuard};
use super::sasl::HubSasl;
use super::stream::decode_frame;
use super::tokens::Tokens;
use crate::context::Context;

/// The frame guard over `data`, delivered in two pieces split where the first byte says: what
/// it forwards is decoded as fe2o3 would, and the emulator's answers are built.
pub fn frames(data: &[u8]) {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut guard = ReadGuard::default();
    guard.push(&data[..cut]);
    guard.push(&data[cut..]);
    let mut rest = &guard.ready[..];
    while rest.first() == Some(&b'A') && rest.len() >= 8 {
        rest = &rest[8..];
    }
    while let Some(size) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
    {
        let Some(frame) = rest.get(..size) else { break };
        assert!(size >= 8, "the guard forwarded a {size}-byte frame");
        let _ = decode_frame(frame);
        let _ = frame_guard::restore_link_name(frame);
        fe2o3_decodes(frame);
        rest = &rest[size..];
    }
    if let Some(v) = &guard.violation {
        let _ = frame_guard::refusal(v, data.len().is_multiple_of(2), "fuzz");
    }
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
