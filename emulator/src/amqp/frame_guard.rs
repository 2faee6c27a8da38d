//! The read side of [`super::stream`]: every frame header the peer sends is checked here before
//! fe2o3 sees it, because fe2o3's decoder panics on some of them (a size field of 4 to 7 leaves
//! it reading a header out of an empty buffer) and accepts others the spec forbids.
//!
//! What is checked, on every frame (AMQP 1.0 §2.3, §2.7.1):
//! * the size covers at least the 8-byte header, and the data offset lies inside the frame;
//! * the type is AMQP (or SASL before the peer's `open`);
//! * the channel is at most the negotiated `channel-max` (so a peer gets at most
//!   [`CHANNEL_MAX`] + 1 sessions);
//! * the peer's `open` offers a `max-frame-size` of at least 512;
//! * the performative (AMQP or SASL) is well-formed AMQP: no length or count beyond its
//!   container, no deep nesting ([`super::encoding`]; serde_amqp would allocate what a length
//!   claims, gigabytes, before finding the bytes missing), and reaches fe2o3 exactly as
//!   serde_amqp encodes it, since serde_amqp also accepts shapes it reads past the checked value
//!   (a performative's name as a plain string followed by its fields reads as an enum);
//! * a SASL frame's body is whole, well-formed values and nothing else;
//! * a delivery's message, joined from all its frames, is whole, well-formed values too; flows
//!   for link handles the peer has not attached are dropped ([`super::peer_links`]).
//!
//! A violation is reported as a [`Violation`]; the stream then answers with a `close` carrying
//! the condition (after an `open` of its own when fe2o3 has not sent one yet) and ends.
//!
//! One more rewrite lives here: a link is known to fe2o3 by its name alone, but AMQP names a
//! link by name *and* direction, so a peer may attach a sender and a receiver with the same
//! name (qpid-proton does by default). Names of the peer's receivers get [`RECEIVER_SUFFIX`]
//! on the way in, and lose it again on the attach the emulator answers with.

use bytes::{Buf, BytesMut};
use fe2o3_amqp_types::definitions::{AmqpError, ConnectionError, Error, ErrorCondition, Role};
use fe2o3_amqp_types::performatives::{Close, Open, Performative};

use super::stream::{decode_frame, encode_frame};

/// The highest channel a peer may begin a session on: 256 sessions per connection. The SDKs
/// use one to three.
pub const CHANNEL_MAX: u16 = 255;
/// The smallest `max-frame-size` AMQP allows (§2.7.1 MIN-MAX-FRAME-SIZE).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;
/// Appended to the name of every link the peer attaches as receiver, so that fe2o3, which keys
/// links by name only, keeps it apart from a sender of the same name.
pub const RECEIVER_SUFFIX: &str = "\u{0}r";
/// The largest frame the guard buffers whole to check (fe2o3's default `max-frame-size`, which
/// the emulator announces); larger ones pass unread, and fe2o3 refuses them for their size.
const SCAN_LIMIT: usize = 256 * 1024;
const HEADER_LEN: usize = 8;
const FRAME_TYPE_AMQP: u8 = 0;
const FRAME_TYPE_SASL: u8 = 1;
/// The small-ulong descriptor codes of the performatives the guard looks into.
const OPEN: u8 = 0x10;
const ATTACH: u8 = 0x12;

/// Why the peer's bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A frame header that cannot be a frame (size, offset or type).
    Framing(String),
    /// A well-formed frame the spec does not allow here.
    NotAllowed(String),
    /// A performative whose encoding is not well-formed ([`super::encoding`]).
    Decode(String),
    /// More held for the peer than it may have ([`super::peer_links`]).
    ResourceLimit(String),
}

impl Violation {
    /// The error the connection is closed with.
    pub fn error(&self) -> Error {
        let (condition, text): (ErrorCondition, &str) = match self {
            Violation::Framing(t) => (ConnectionError::FramingError.into(), t),
            Violation::NotAllowed(t) => (AmqpError::NotAllowed.into(), t),
            Violation::Decode(t) => (AmqpError::DecodeError.into(), t),
            Violation::ResourceLimit(t) => (AmqpError::ResourceLimitExceeded.into(), t),
        };
        Error::new(condition, text.to_owned(), None)
    }
}

/// Checks and forwards the peer's bytes, frame by frame.
#[derive(Debug)]
pub struct ReadGuard {
    /// Checked bytes, ready for fe2o3.
    pub ready: BytesMut,
    /// Bytes from the peer not yet checked.
    scan: BytesMut,
    /// Body bytes of the current frame still to forward unread.
    skip: usize,
    /// The peer's `open` was seen.
    opened: bool,
    channel_max: u16,
    /// The peer's `open` listed every field ([`super::full_lists`]).
    pub full_lists: bool,
    /// What went wrong; nothing is forwarded after it.
    pub violation: Option<Violation>,
    /// The peer's attached link handles and deliveries in progress.
    pub links: super::peer_links::PeerLinks,
}

impl Default for ReadGuard {
    fn default() -> Self {
        ReadGuard {
            ready: BytesMut::new(),
            scan: BytesMut::new(),
            skip: 0,
            opened: false,
            channel_max: CHANNEL_MAX,
            full_lists: false,
            violation: None,
            links: Default::default(),
        }
    }
}

impl ReadGuard {
    /// Adds bytes from the peer and checks every complete unit (protocol header or frame).
    pub fn push(&mut self, bytes: &[u8]) {
        self.scan.extend_from_slice(bytes);
        self.process();
    }

    /// True once the peer's `open` went through.
    pub fn opened(&self) -> bool {
        self.opened
    }

    fn fail(&mut self, v: Violation) {
        self.scan.clear();
        self.skip = 0;
        self.violation = Some(v);
    }

    fn process(&mut self) {
        while self.violation.is_none() {
            if self.skip > 0 {
                let n = self.skip.min(self.scan.len());
                if n == 0 {
                    return;
                }
                let body = self.scan.split_to(n);
                self.ready.extend_from_slice(&body);
                self.skip -= n;
                continue;
            }
            // Protocol headers come before the `open`: the first one, and the AMQP one after
            // SASL. After it the same bytes read as a frame size far above any limit.
            if !self.opened && self.scan.first() == Some(&b'A') {
                if self.scan.len() < HEADER_LEN {
                    return;
                }
                let header = self.scan.split_to(HEADER_LEN);
                self.ready.extend_from_slice(&header);
                continue;
            }
            let Some(size) = frame_size(&self.scan) else {
                return;
            };
            if size < HEADER_LEN {
                return self.fail(Violation::Framing(format!(
                    "frame size {size} is smaller than the 8-byte frame header"
                )));
            }
            if self.scan.len() < HEADER_LEN {
                return;
            }
            if let Err(v) = self.check_header(size) {
                return self.fail(v);
            }
            let doff = usize::from(self.scan[4]) * 4;
            // Every frame with a body is read whole and checked; heartbeats pass.
            if size == doff || size > SCAN_LIMIT {
                let head = self.scan.split_to(HEADER_LEN);
                self.ready.extend_from_slice(&head);
                self.skip = size - HEADER_LEN;
                continue;
            }
            if self.scan.len() < size {
                return;
            }
            let frame = self.scan.split_to(size);
            match self.check(&frame) {
                Ok(Some(rewritten)) => self.ready.extend_from_slice(&rewritten),
                Ok(None) => self.ready.extend_from_slice(&frame),
                Err(v) => return self.fail(v),
            }
        }
    }

    /// Checks a whole frame with a body. A SASL frame must be whole AMQP values and nothing
    /// else; an AMQP frame goes to [`Self::inspect`].
    fn check(&mut self, frame: &[u8]) -> Result<Option<BytesMut>, Violation> {
        let doff = usize::from(frame[4]) * 4;
        let body = &frame[doff..];
        let malformed = |m: super::encoding::Malformed| {
            Violation::Decode(format!("the frame is malformed: {}", m.0))
        };
        if frame[5] == FRAME_TYPE_SASL {
            // fe2o3 reads the SASL performative from the whole body, and serde_amqp may read
            // more than one value as one (see `super::stream::decode_frame`): so every byte it
            // could reach must be well-formed.
            super::encoding::check_values(body).map_err(malformed)?;
            return Ok(None);
        }
        super::encoding::value_len(body).map_err(malformed)?;
        self.inspect(frame)
    }

    fn check_header(&self, size: usize) -> Result<(), Violation> {
        let doff = usize::from(self.scan[4]) * 4;
        let kind = self.scan[5];
        let channel = u16::from_be_bytes([self.scan[6], self.scan[7]]);
        if doff < HEADER_LEN || doff > size {
            return Err(Violation::Framing(format!(
                "data offset {doff} lies outside the {size}-byte frame"
            )));
        }
        match kind {
            FRAME_TYPE_AMQP => {}
            FRAME_TYPE_SASL if !self.opened => {}
            _ => {
                return Err(Violation::Framing(format!(
                    "frame type {kind} is not allowed"
                )));
            }
        }
        if kind == FRAME_TYPE_AMQP && channel > self.channel_max {
            return Err(Violation::NotAllowed(format!(
                "channel {channel} is above the channel-max {}",
                self.channel_max
            )));
        }
        Ok(())
    }

    /// Looks into a whole AMQP frame: the peer's `open` (checked, and shown to fe2o3 with
    /// `max-frame-size` lowered by [`super::stream::HEADROOM`]) and attaches (receiver names
    /// suffixed); handles, flows and deliveries go through [`super::peer_links`]; every other
    /// performative goes on as serde_amqp itself encodes it ([`canonical`]). `Ok(None)`
    /// forwards the frame unchanged, `Ok(Some(empty))` drops it.
    fn inspect(&mut self, frame: &[u8]) -> Result<Option<BytesMut>, Violation> {
        let Some((channel, performative, payload)) = decode_frame(frame) else {
            return Err(Violation::Decode(
                "the frame's body does not begin with a performative".into(),
            ));
        };
        match performative {
            Performative::Open(mut open) if !self.opened => {
                self.opened = true;
                self.full_lists = super::full_lists::wants_full_lists(frame);
                let max = open.max_frame_size.0;
                if max < MIN_MAX_FRAME_SIZE {
                    return Err(Violation::NotAllowed(format!(
                        "max-frame-size {max} is below the minimum of {MIN_MAX_FRAME_SIZE}"
                    )));
                }
                self.channel_max = self.channel_max.min(open.channel_max.0);
                open.max_frame_size.0 = max
                    .saturating_sub(super::stream::HEADROOM)
                    .max(MIN_MAX_FRAME_SIZE);
                Ok(encode_frame(channel, &Performative::Open(open), payload))
            }
            _ if !self.opened => Err(Violation::NotAllowed(
                "the first AMQP frame must be an open".into(),
            )),
            Performative::Attach(mut attach) if attach.role == Role::Receiver => {
                self.links.attached(channel, attach.handle.0);
                attach.name.push_str(RECEIVER_SUFFIX);
                Ok(encode_frame(
                    channel,
                    &Performative::Attach(attach),
                    payload,
                ))
            }
            other => {
                match &other {
                    Performative::Attach(a) => self.links.attached(channel, a.handle.0),
                    Performative::Detach(d) => self.links.detached(channel, d.handle.0),
                    Performative::End(_) => self.links.ended(channel),
                    Performative::Flow(f) if !self.links.admits(channel, f) => {
                        return Ok(Some(BytesMut::new()));
                    }
                    Performative::Transfer(t) => self.links.transfer(channel, t, payload)?,
                    _ => {}
                }
                canonical(frame, channel, &other, payload)
            }
        }
    }
}

/// `None` when the frame holds the performative exactly as serde_amqp encodes it, so that
/// fe2o3's decoder reads those bytes and no further. Otherwise the frame rebuilt that way
/// (only a transfer keeps its payload; no other performative has one): serde_amqp accepts
/// other shapes too, some of which it reads past the value the guard checked, into bytes
/// nobody checked ([`super::stream::decode_frame`]).
fn canonical(
    frame: &[u8],
    channel: u16,
    performative: &Performative,
    payload: &[u8],
) -> Result<Option<BytesMut>, Violation> {
    let doff = usize::from(frame[4]) * 4;
    let as_read = &frame[doff..frame.len() - payload.len()];
    let encoded = serde_amqp::to_vec(performative)
        .map_err(|e| Violation::Decode(format!("the performative does not encode: {e}")))?;
    if doff == HEADER_LEN && encoded == as_read {
        return Ok(None);
    }
    let payload = match performative {
        Performative::Transfer(_) => payload,
        _ => &[],
    };
    encode_frame(channel, performative, payload)
        .map(Some)
        .ok_or_else(|| Violation::Decode("the performative does not encode".into()))
}

/// The attach the emulator answers with carries the name the peer gave: the name of a
/// duplicate link is cut back at [`super::duplicates::marker`], and [`RECEIVER_SUFFIX`] comes
/// off the answer to a peer receiver. `None` for any other frame.
pub fn restore_link_name(frame: &[u8]) -> Option<BytesMut> {
    let doff = usize::from(*frame.get(4)?) * 4;
    if frame.get(5) != Some(&FRAME_TYPE_AMQP) || frame.get(doff..doff + 3)? != [0, 0x53, ATTACH] {
        return None;
    }
    let (channel, performative, payload) = decode_frame(frame)?;
    let Performative::Attach(mut attach) = performative else {
        return None;
    };
    let renamed = super::duplicates::original_name(&attach.name);
    let name = renamed.unwrap_or(&attach.name);
    let name = match attach.role {
        Role::Sender => name.strip_suffix(RECEIVER_SUFFIX),
        Role::Receiver => None,
    }
    .or(renamed)?;
    attach.name = name.to_owned();
    encode_frame(channel, &Performative::Attach(attach), payload)
}

/// True for an AMQP `open` frame (as fe2o3 encodes it).
pub fn is_open(frame: &[u8]) -> bool {
    frame.get(5) == Some(&FRAME_TYPE_AMQP)
        && frame.get(4) == Some(&2)
        && frame.get(8..11) == Some(&[0x00, 0x53, OPEN][..])
}

/// What the emulator sends when the peer's bytes are refused: an `open` (only when none was
/// sent yet, since a `close` must follow one) and a `close` with the violation.
pub fn refusal(v: &Violation, open_sent: bool, container_id: &str) -> BytesMut {
    let mut out = BytesMut::new();
    if !open_sent {
        let open = Open {
            container_id: container_id.to_owned(),
            hostname: None,
            max_frame_size: MIN_MAX_FRAME_SIZE.into(),
            channel_max: 0.into(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        if let Some(f) = encode_frame(0, &Performative::Open(open), &[]) {
            out.extend_from_slice(&f);
        }
    }
    let close = Close {
        error: Some(v.error()),
    };
    if let Some(f) = encode_frame(0, &Performative::Close(close), &[]) {
        out.extend_from_slice(&f);
    }
    out
}

fn frame_size(buf: &[u8]) -> Option<usize> {
    let mut b = buf.get(..4)?;
    usize::try_from(b.get_u32()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::Handle;
    use fe2o3_amqp_types::performatives::{Attach, Begin};
    use proptest::prelude::*;

    const HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";

    fn open(max_frame_size: u32, channel_max: u16) -> Vec<u8> {
        let open = Open {
            container_id: "peer".into(),
            hostname: None,
            max_frame_size: max_frame_size.into(),
            channel_max: channel_max.into(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        encode_frame(0, &Performative::Open(open), &[])
            .unwrap()
            .to_vec()
    }

    fn begin(channel: u16) -> Vec<u8> {
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 10,
            outgoing_window: 10,
            handle_max: Default::default(),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        encode_frame(channel, &Performative::Begin(begin), &[])
            .unwrap()
            .to_vec()
    }

    fn attach(name: &str, role: Role) -> Attach {
        crate::amqp::test_frames::attach(name, role, 0)
    }

    fn opened() -> ReadGuard {
        let mut g = ReadGuard::default();
        g.push(HEADER);
        g.push(&open(65536, 65535));
        assert!(g.violation.is_none());
        g.ready.clear();
        g
    }

    #[test]
    fn sizes_below_the_header_are_framing_errors_at_any_point() {
        for size in 0u8..8 {
            let mut g = ReadGuard::default();
            g.push(HEADER);
            g.push(&[0, 0, 0, size]);
            assert!(matches!(g.violation, Some(Violation::Framing(_))), "{size}");
            let mut g = opened();
            g.push(&[0, 0, 0, size, 2, 0, 0, 0]);
            assert!(matches!(g.violation, Some(Violation::Framing(_))), "{size}");
            assert!(g.ready.is_empty());
        }
    }

    #[test]
    fn offsets_outside_the_frame_and_unknown_types_are_framing_errors() {
        for bad in [
            [0, 0, 0, 8, 1, 0, 0, 0],
            [0, 0, 0, 8, 3, 0, 0, 0],
            [0, 0, 0, 8, 2, 7, 0, 0],
            [0, 0, 0, 8, 2, 1, 0, 0],
        ] {
            let mut g = opened();
            g.push(&bad);
            assert!(
                matches!(g.violation, Some(Violation::Framing(_))),
                "{bad:?}"
            );
        }
        let mut g = opened();
        g.push(&[0, 0, 0, 8, 2, 0, 0, 0]);
        assert!(g.violation.is_none(), "an empty frame is a heartbeat");
    }

    #[test]
    fn open_below_the_minimum_frame_size_is_refused() {
        let mut g = ReadGuard::default();
        g.push(HEADER);
        g.push(&open(511, 10));
        assert!(matches!(g.violation, Some(Violation::NotAllowed(_))));
        let mut g = ReadGuard::default();
        g.push(HEADER);
        g.push(&open(512, 10));
        assert!(g.violation.is_none());
    }

    #[test]
    fn begin_above_channel_max_is_refused() {
        let mut g = opened();
        g.push(&begin(CHANNEL_MAX));
        assert!(g.violation.is_none());
        g.push(&begin(CHANNEL_MAX + 1));
        assert!(matches!(g.violation, Some(Violation::NotAllowed(_))));
        // The peer's own channel-max counts too.
        let mut g = ReadGuard::default();
        g.push(HEADER);
        g.push(&open(65536, 1));
        g.push(&begin(1));
        assert!(g.violation.is_none());
        g.push(&begin(2));
        assert!(g.violation.is_some());
    }

    #[test]
    fn a_performative_claiming_more_bytes_than_it_has_is_a_decode_error() {
        let mut g = ReadGuard::default();
        g.push(HEADER);
        g.push(&open(65536, 255));
        // A detach (0x16) whose error condition is a sym32 claiming 3 GB: serde_amqp would
        // allocate the 3 GB first (the amqp_frames fuzz crash).
        let body = [
            0x00, 0x53, 0x16, 0xc0, 9, 2, 0x43, 0xb3, 0xb3, 0xb3, 0xb3, 0xb3, 1,
        ];
        let mut frame = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[2, 0, 0, 0]);
        frame.extend_from_slice(&body);
        let forwarded = g.ready.len();
        g.push(&frame);
        assert!(
            matches!(g.violation, Some(Violation::Decode(_))),
            "{:?}",
            g.violation
        );
        assert_eq!(g.ready.len(), forwarded, "nothing of it reaches fe2o3");
        assert_eq!(
            g.violation.unwrap().error().condition,
            AmqpError::DecodeError.into()
        );
    }

    /// The amqp_frames OOM (`fuzz/corpus/amqp_frames/oom-dc118c35…`): a frame whose body starts
    /// with the performative's *name* as a plain string, then a described value whose
    /// descriptor is a sym32 claiming 3 GB. The string alone is a well-formed value, but
    /// serde_amqp reads a name followed by a value as an enum, so it went on past it and
    /// allocated the 3 GB.
    #[test]
    fn a_performative_read_past_its_first_value_is_a_decode_error() {
        let input = include_bytes!(
            "../../../fuzz/corpus/amqp_frames/oom-dc118c35ff515ad9d0f5e717a154dec4ef24a84f"
        );
        let mut g = ReadGuard::default();
        g.push(&input[..8]);
        g.push(&input[8..]);
        assert!(
            matches!(g.violation, Some(Violation::Decode(_))),
            "{:?}",
            g.violation
        );
        assert_eq!(
            &g.ready[..],
            &input[..8],
            "only the protocol header went through"
        );
        assert!(decode_frame(&input[8..]).is_none());

        // The same shape after a valid open, with the name as str8 and as sym8.
        for code in [0xa1u8, 0xa3] {
            let mut g = opened();
            let mut body = vec![code, 21];
            body.extend_from_slice(b"amqp:disposition:list");
            body.extend_from_slice(&[0x00, 0xb3, 0xbf, 0xb6, 0xf2, 0xfc, 0xff]);
            let mut frame = ((8 + body.len()) as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&[2, 0, 0, 0]);
            frame.extend_from_slice(&body);
            g.push(&frame);
            assert!(
                matches!(g.violation, Some(Violation::Decode(_))),
                "{code:#x}: {:?}",
                g.violation
            );
            assert!(g.ready.is_empty());
        }
    }

    /// Other encodings of a performative reach fe2o3 as serde_amqp writes it, so its decoder
    /// reads exactly the bytes the guard checked.
    #[test]
    fn performatives_in_other_encodings_are_forwarded_as_serde_amqp_writes_them() {
        let detach = Performative::Detach(fe2o3_amqp_types::performatives::Detach {
            handle: Handle(3),
            closed: true,
            error: None,
        });
        let canonical = encode_frame(1, &detach, &[]).unwrap();
        // The descriptor as a symbol, an extended header, and trailing bytes.
        let mut body = vec![0x00, 0xa3, 16];
        body.extend_from_slice(b"amqp:detach:list");
        body.extend_from_slice(&canonical[11..]);
        body.extend_from_slice(&[0x40, 0x40]);
        let mut frame = ((12 + body.len()) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[3, 0, 0, 1, 0, 0, 0, 0]);
        frame.extend_from_slice(&body);
        let mut g = opened();
        g.push(&frame);
        assert!(g.violation.is_none(), "{:?}", g.violation);
        assert_eq!(&g.ready[..], &canonical[..]);
        // Already canonical: forwarded as it is.
        let mut g = opened();
        g.push(&canonical);
        assert_eq!(&g.ready[..], &canonical[..]);
    }

    #[test]
    fn receiver_names_get_a_suffix_that_the_answer_loses() {
        let mut g = opened();
        let sender =
            encode_frame(0, &Performative::Attach(attach("x", Role::Sender)), &[]).unwrap();
        let receiver =
            encode_frame(0, &Performative::Attach(attach("x", Role::Receiver)), &[]).unwrap();
        g.push(&sender);
        g.push(&receiver);
        assert_eq!(
            &g.ready[..sender.len()],
            &sender[..],
            "senders keep their name"
        );
        let (_, p, _) = decode_frame(&g.ready[sender.len()..]).unwrap();
        let Performative::Attach(a) = p else { panic!() };
        assert_eq!(a.name, "x\u{0}r");
        // The emulator's answer to the receiver is a sender attach with the suffixed name.
        let answer =
            encode_frame(0, &Performative::Attach(attach(&a.name, Role::Sender)), &[]).unwrap();
        let restored = restore_link_name(&answer).unwrap();
        let (_, p, _) = decode_frame(&restored).unwrap();
        let Performative::Attach(a) = p else { panic!() };
        assert_eq!(a.name, "x");
        let to_sender =
            encode_frame(0, &Performative::Attach(attach("x", Role::Receiver)), &[]).unwrap();
        assert!(restore_link_name(&to_sender).is_none());
    }

    #[test]
    fn renamed_duplicates_get_the_peers_name_back_in_either_direction() {
        let marker = super::super::duplicates::marker();
        for (role, name) in [(Role::Sender, "x\u{0}r"), (Role::Receiver, "x")] {
            let renamed = format!("{name}{marker}2");
            let answer =
                encode_frame(0, &Performative::Attach(attach(&renamed, role)), &[]).unwrap();
            let restored = restore_link_name(&answer).unwrap();
            let (_, p, _) = decode_frame(&restored).unwrap();
            let Performative::Attach(a) = p else { panic!() };
            assert_eq!(a.name, "x");
        }
    }

    fn flow(handle: Option<u32>) -> BytesMut {
        let flow = crate::amqp::test_frames::flow(handle);
        encode_frame(0, &Performative::Flow(flow), &[]).unwrap()
    }

    fn transfer(handle: u32, delivery: Option<u32>, more: bool, payload: &[u8]) -> BytesMut {
        let t = crate::amqp::test_frames::transfer(handle, delivery, more);
        encode_frame(0, &Performative::Transfer(t), payload).unwrap()
    }

    fn attach_frame(handle: u32) -> BytesMut {
        let mut a = attach(&format!("link{handle}"), Role::Sender);
        a.handle = Handle(handle);
        encode_frame(0, &Performative::Attach(a), &[]).unwrap()
    }

    /// A data section of `n` bytes, claiming `claim` bytes.
    fn data_section(claim: u32, n: usize) -> Vec<u8> {
        let mut d = vec![0x00, 0x53, 0x75, 0xb0];
        d.extend_from_slice(&claim.to_be_bytes());
        d.extend(std::iter::repeat_n(7u8, n));
        d
    }

    #[test]
    fn flows_for_handles_not_attached_never_reach_fe2o3() {
        let mut g = opened();
        g.push(&begin(0));
        g.ready.clear();
        for _ in 0..10_000 {
            g.push(&flow(Some(7)));
        }
        assert!(g.violation.is_none());
        assert!(g.ready.is_empty(), "fe2o3 would keep every one of them");
        // The session's own flow, and flows for an attached handle, go on.
        g.push(&flow(None));
        assert_eq!(&g.ready[..], &flow(None)[..]);
        g.ready.clear();
        g.push(&attach_frame(7));
        g.push(&flow(Some(7)));
        assert!(g.ready.ends_with(&flow(Some(7))));
        assert_eq!(g.links.handles(), 1);
        // Detached: dropped again, and nothing is left of the handle.
        let detach = fe2o3_amqp_types::performatives::Detach {
            handle: Handle(7),
            closed: true,
            error: None,
        };
        g.push(&encode_frame(0, &Performative::Detach(detach), &[]).unwrap());
        g.ready.clear();
        g.push(&flow(Some(7)));
        assert!(g.ready.is_empty());
        assert_eq!(g.links.handles(), 0);
    }

    #[test]
    fn a_delivery_is_checked_whole_before_its_last_frame_goes_on() {
        let mut g = opened();
        g.push(&begin(0));
        g.push(&attach_frame(0));
        // Well-formed, over three frames: passes, and nothing is held afterwards.
        let section = data_section(1000, 1000);
        g.push(&transfer(0, Some(0), true, &section[..400]));
        g.push(&transfer(0, None, true, &section[400..800]));
        assert_eq!(g.links.partial_bytes(), 800);
        g.push(&transfer(0, None, false, &section[800..]));
        assert!(g.violation.is_none(), "{:?}", g.violation);
        assert_eq!(g.links.partial_bytes(), 0);
        // A section claiming 3 GB, split so that no frame alone shows the claim whole.
        g.ready.clear();
        let hostile = data_section(0xbfff_ffff, 40);
        g.push(&transfer(0, Some(1), true, &hostile[..6]));
        let first = g.ready.len();
        assert!(first > 0, "an incomplete frame cannot be judged yet");
        g.push(&transfer(0, None, false, &hostile[6..]));
        assert!(
            matches!(g.violation, Some(Violation::Decode(_))),
            "{:?}",
            g.violation
        );
        assert_eq!(g.ready.len(), first, "the last frame never reaches fe2o3");
        // In one frame as well.
        let mut g = opened();
        g.push(&begin(0));
        g.push(&attach_frame(0));
        g.push(&transfer(0, Some(0), false, &hostile));
        assert!(matches!(g.violation, Some(Violation::Decode(_))));
    }

    #[test]
    fn incomplete_deliveries_are_bounded_per_connection() {
        let mut g = opened();
        g.push(&begin(0));
        let chunk = vec![0x40u8; 200 * 1024];
        let mut handle = 0;
        while g.violation.is_none() && handle < 40 {
            g.push(&attach_frame(handle));
            // Just under the link's own limit, which fe2o3 enforces by itself.
            for i in 0..5 {
                g.push(&transfer(handle, (i == 0).then_some(handle), true, &chunk));
            }
            handle += 1;
            assert!(g.links.partial_bytes() <= super::super::peer_links::MAX_PARTIAL_BYTES);
            g.ready.clear();
        }
        assert!(matches!(g.violation, Some(Violation::ResourceLimit(_))));
        assert!(handle > 8, "{handle} links");
    }

    #[test]
    fn refusal_opens_only_when_no_open_was_sent() {
        let v = Violation::Framing("x".into());
        let both = refusal(&v, false, "c");
        let close_only = refusal(&v, true, "c");
        assert!(is_open(&both));
        assert!(!is_open(&close_only));
        assert!(both.ends_with(&close_only));
    }

    proptest! {
        /// Whatever the peer sends, in whatever pieces, the guard forwards a prefix of it made of
        /// whole checked units (or refuses), and never panics.
        #[test]
        fn any_bytes_in_any_split_are_forwarded_or_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            cut in 0usize..400,
        ) {
            let mut whole = opened();
            whole.push(&bytes);
            let mut split = opened();
            let cut = cut.min(bytes.len());
            split.push(&bytes[..cut]);
            split.push(&bytes[cut..]);
            prop_assert_eq!(&whole.ready, &split.ready);
            prop_assert_eq!(whole.violation.is_some(), split.violation.is_some());
        }
    }
}
