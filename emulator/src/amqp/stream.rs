//! The byte stream fe2o3 runs on. It replays the protocol header the connection already read,
//! and does what fe2o3's acceptor cannot be told to do:
//!
//! * **Delivery tags.** fe2o3 tags each outgoing delivery with a 4-byte counter. The C# SDKs read
//!   the tag of a C2D or feedback delivery as a GUID (`new Guid(tag)`), which needs exactly 16
//!   bytes (iothub-protocol.md 2.3, 5.6). Every message the hub sends carries its lock token as
//!   `x-opt-lock-token` (a delivery or message annotation, see [`super::convert`]); here the
//!   first transfer frame of such a delivery gets the token's 16 bytes as its tag. Dispositions
//!   name deliveries by id, not tag, so nothing else changes.
//! * **Frame size.** A 16-byte tag makes a transfer frame [`TAG_GROWTH`] bytes longer than fe2o3
//!   sized it. So the peer's `open` is shown to fe2o3 with a `max-frame-size` [`HEADROOM`] bytes
//!   smaller, and fe2o3 leaves room for the longer tag.
//! * **Closing.** After fe2o3 sends `close` it waits for the peer's `close`, which a broken peer
//!   never sends. Once a `close` has gone out, the peer has [`CLOSE_GRACE`] to answer; then the
//!   stream reads as ended and fe2o3 lets the connection go.
//! * **Detached handles.** No `flow` or `transfer` goes out for a link handle after its
//!   `detach` (fe2o3 can queue one; see [`super::handles`]).
//! * **Ending.** fe2o3 runs each connection on a task of its own that the emulator does not
//!   track. When the token given to [`HubStream::new`] is cancelled (the connection's task is
//!   done), every read and write fails, so that task ends too and the socket is dropped.
//! * **Batching.** fe2o3 flushes after every frame; the frames go to a writer task that writes
//!   whatever has gathered in one go ([`iothub_protocol::outbox`]).
//!
//! Only the first AMQP frame from the peer (its `open`) and the transfer frames fe2o3 writes are
//! decoded; everything else passes through byte for byte. Anything this layer does not
//! understand is passed on unchanged and left for fe2o3 to reject.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use fe2o3_amqp_types::definitions::DeliveryTag;
use fe2o3_amqp_types::performatives::Performative;
use fe2o3_amqp_types::primitives::Value;
use serde::{Deserialize, Serialize};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::convert::{LOCK_TOKEN, lock_token_tag};
use super::frame_guard::{self, ReadGuard};
use iothub_protocol::outbox::Outbox;

/// How much smaller than the peer's `max-frame-size` fe2o3 is told to keep its frames.
pub const HEADROOM: u32 = 32;
/// The most a transfer frame grows when its 4-byte tag becomes 16 bytes (12), plus the
/// performative's list switching to a 4-byte size (6).
pub const TAG_GROWTH: u32 = 18;
/// How long the peer may take to answer our `close` before the stream reads as ended.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
const FRAME_TYPE_AMQP: u8 = 0;
/// The descriptor code of `transfer`, as fe2o3 encodes it (a small ulong).
const TRANSFER: u8 = 0x14;
/// The container id of the `open` sent ahead of a refusal when fe2o3 has not sent its own.
const REFUSAL_CONTAINER: &str = "iothub-emulator";
const HEADER_LEN: usize = 8;

const _: () = assert!(TAG_GROWTH <= HEADROOM);

/// A stream with the AMQP adjustments described in the module docs.
pub struct HubStream<IO> {
    io: ReadHalf<IO>,
    /// Where framed bytes go; a task of their own writes them.
    outbox: Outbox,
    read: ReadGuard,
    write: WriteSide,
    /// Runs from the moment our `close` was written.
    close_grace: Option<Pin<Box<Sleep>>>,
    /// Completes when the connection is over: all I/O fails from then on.
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The peer broke the framing rules and was told so.
    refused: bool,
}

impl<IO> std::fmt::Debug for HubStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStream")
            .field("read", &self.read)
            .field("write", &self.write)
            .field("closing", &self.close_grace.is_some())
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + AsyncWrite + Send + 'static> HubStream<IO> {
    /// Wraps `io`; `prefix` is what was already read from it (the protocol header) and is read
    /// again first. Cancelling `ended` makes all further I/O fail. Starts the writer task.
    pub fn new(io: IO, prefix: &[u8], ended: CancellationToken) -> Self {
        let mut read = ReadGuard::default();
        read.push(prefix);
        let (io, write) = tokio::io::split(io);
        HubStream {
            io,
            outbox: Outbox::spawn(write, ended.clone(), CLOSE_GRACE),
            read,
            write: WriteSide::default(),
            close_grace: None,
            ended: Box::pin(ended.cancelled_owned()),
            refused: false,
        }
    }
}

#[derive(Debug, Default)]
struct WriteSide {
    /// Bytes from fe2o3 not yet framed.
    pending: BytesMut,
    /// Bytes ready for the peer, on their way to the outbox.
    out: BytesMut,
    /// Framing was lost: pass everything through.
    raw: bool,
    /// A `close` performative was written.
    close_sent: bool,
    /// An `open` performative was written.
    open_sent: bool,
    /// Write every performative with all its fields ([`super::full_lists`]).
    full_lists: bool,
    /// Link handles attached, so nothing goes out for a detached one.
    handles: super::handles::OutgoingHandles,
}

impl WriteSide {
    fn process(&mut self) {
        loop {
            if self.raw {
                let rest = self.pending.split();
                self.emit(rest);
                return;
            }
            if self.pending.first() == Some(&b'A') {
                if self.pending.len() < HEADER_LEN {
                    return;
                }
                let header = self.pending.split_to(HEADER_LEN);
                self.emit(header);
                continue;
            }
            let Some(size) = frame_size(&self.pending) else {
                return;
            };
            if size < HEADER_LEN {
                self.raw = true;
                continue;
            }
            if self.pending.len() < size {
                return;
            }
            let frame = self.pending.split_to(size);
            if !self.handles.admit(&frame) {
                continue;
            }
            self.close_sent |= is_close(&frame);
            self.open_sent |= frame_guard::is_open(&frame);
            let frame = frame_guard::restore_link_name(&frame).unwrap_or(frame);
            let frame = retag_transfer(&frame).unwrap_or(frame);
            // Our `open` may go out before the peer's arrives, so it is always written in full
            // (trailing defaults change nothing for any peer); the rest only for peers that
            // write full lists themselves.
            let full = self.full_lists || super::full_lists::is_open(&frame);
            match full.then(|| super::full_lists::pad(&frame)).flatten() {
                Some(full) => self.emit(full),
                None => self.emit(frame),
            }
        }
    }

    /// Appends `bytes` to what goes out. Frames passed on unchanged were split off `pending`
    /// one after the other, so joining them again moves no bytes.
    fn emit(&mut self, bytes: BytesMut) {
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.unsplit(bytes);
        }
    }
}

/// True for an AMQP frame carrying `close` (descriptor 0x18, as fe2o3 encodes it).
fn is_close(frame: &[u8]) -> bool {
    frame.get(5) == Some(&FRAME_TYPE_AMQP)
        && frame.get(4).is_some_and(|d| *d == 2)
        && frame.get(8..11) == Some(&[0x00, 0x53, 0x18][..])
}

fn frame_size(buf: &[u8]) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

/// Splits an AMQP frame into channel, performative and payload. The performative is the first
/// well-formed AMQP value of the body ([`super::encoding::value_len`]), and serde_amqp reads
/// only those bytes: it would otherwise read on into the payload wherever it accepts more than
/// one value (a performative's name as a plain string, then its list, reads as an enum), and
/// allocate whatever a length there claims.
pub(super) fn decode_frame(frame: &[u8]) -> Option<(u16, Performative, &[u8])> {
    let doff = usize::from(*frame.get(4)?) * 4;
    if *frame.get(5)? != FRAME_TYPE_AMQP || doff < HEADER_LEN {
        return None;
    }
    let channel = u16::from_be_bytes([*frame.get(6)?, *frame.get(7)?]);
    let body = frame.get(doff..)?;
    if body.is_empty() {
        return None;
    }
    let n = super::encoding::value_len(body).ok()?;
    let mut performative_bytes = &body[..n];
    let performative = read_one::<Performative>(&mut performative_bytes)?;
    Some((channel, performative, &body[n..]))
}

/// Deserializes one value from the front of `buf` and advances it past that value.
fn read_one<T: for<'de> Deserialize<'de>>(buf: &mut &[u8]) -> Option<T> {
    let reader = serde_amqp::read::IoReader::new(buf.reader());
    let mut de = serde_amqp::de::Deserializer::new(reader);
    T::deserialize(&mut de).ok()
}

pub(super) fn encode_frame(
    channel: u16,
    performative: &Performative,
    payload: &[u8],
) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    out.put_u32(0);
    out.put_u8(2);
    out.put_u8(FRAME_TYPE_AMQP);
    out.put_u16(channel);
    let mut ser = serde_amqp::ser::Serializer::from((&mut out).writer());
    performative.serialize(&mut ser).ok()?;
    out.put_slice(payload);
    let size = u32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// The transfer frame with its delivery tag replaced by the lock token's 16 bytes; `None` when
/// the frame is not the first frame of a delivery that carries a lock token.
///
/// Most transfers carry none (Event Hubs events, method requests, twin answers): a byte search
/// for the annotation's name turns them away before anything is decoded, which under load was
/// a fifth of the emulator's CPU.
fn retag_transfer(frame: &[u8]) -> Option<BytesMut> {
    if !may_carry_lock_token(frame) {
        return None;
    }
    let (channel, performative, payload) = decode_frame(frame)?;
    let Performative::Transfer(mut transfer) = performative else {
        return None;
    };
    if transfer.delivery_tag.as_ref().is_none_or(|t| t.len() == 16) {
        return None;
    }
    let tag = lock_token_in(payload)?;
    transfer.delivery_tag = Some(DeliveryTag::from(tag.to_vec()));
    encode_frame(channel, &Performative::Transfer(transfer), payload)
}

/// True unless `frame` is certainly not a transfer carrying `x-opt-lock-token`: it is not a
/// transfer, or the name appears nowhere in it.
fn may_carry_lock_token(frame: &[u8]) -> bool {
    let doff = frame.get(4).map_or(0, |d| usize::from(*d) * 4);
    frame.get(doff..doff + 3) == Some(&[0x00, 0x53, TRANSFER][..])
        && memchr::memmem::find(frame, LOCK_TOKEN.as_bytes()).is_some()
}

/// Section descriptors that may come before the bare message: header, delivery annotations,
/// message annotations.
const HEADER: u64 = 0x70;
const DELIVERY_ANNOTATIONS: u64 = 0x71;
const MESSAGE_ANNOTATIONS: u64 = 0x72;

/// The `x-opt-lock-token` of an encoded message, from its delivery or message annotations.
fn lock_token_in(mut payload: &[u8]) -> Option<[u8; 16]> {
    while !payload.is_empty() {
        let section = read_one::<Described<Value>>(&mut payload)?;
        match section.descriptor {
            Descriptor::Code(HEADER) => continue,
            Descriptor::Code(DELIVERY_ANNOTATIONS | MESSAGE_ANNOTATIONS) => {
                let Value::Map(map) = section.value else {
                    continue;
                };
                let key = Value::Symbol(LOCK_TOKEN.into());
                if let Some(Value::String(token)) = map.get(&key) {
                    return lock_token_tag(token);
                }
            }
            _ => return None,
        }
    }
    None
}

impl<IO: AsyncRead> AsyncRead for HubStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_alive(cx))?;
        if let Some(grace) = this.close_grace.as_mut()
            && grace.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ok(()));
        }
        loop {
            let r = &mut this.read;
            if !r.ready.is_empty() {
                let n = r.ready.len().min(out.remaining());
                out.put_slice(&r.ready[..n]);
                r.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(v) = r.violation.clone() {
                return this.poll_refuse(v);
            }
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                // The peer is gone; a partial frame at the end is not handed on.
                return Poll::Ready(Ok(()));
            }
            r.push(buf.filled());
        }
    }
}

impl<IO> HubStream<IO> {
    /// Ready(Err) once the connection is over; Ready(Ok) until then.
    fn poll_alive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.ended.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into())),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }
}

impl<IO> HubStream<IO> {
    /// Sends the peer why its bytes are refused (once), then fails every read: fe2o3 ends the
    /// connection without ever decoding the bad frame.
    fn poll_refuse(&mut self, v: frame_guard::Violation) -> Poll<io::Result<()>> {
        if !self.refused {
            self.refused = true;
            tracing::debug!(violation = ?v, "AMQP peer refused");
            // Before any `open` (protocol header, SASL) no AMQP frame can be sent.
            if self.read.opened() || self.write.open_sent {
                let reply = frame_guard::refusal(&v, self.write.open_sent, REFUSAL_CONTAINER);
                self.write.out.extend_from_slice(&reply);
                self.write.close_sent = true;
            }
        }
        // The writer task gets it out, also after this stream is dropped.
        self.outbox.push(&mut self.write.out);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{v:?}"),
        )))
    }
}

impl<IO> AsyncWrite for HubStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_alive(cx))?;
        if this.refused {
            // Our `close` went out already; whatever fe2o3 says after it is not sent.
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(this.outbox.poll_ready(cx))?;
        this.write.pending.extend_from_slice(buf);
        this.write.full_lists = this.read.full_lists;
        this.write.process();
        if this.write.close_sent && this.close_grace.is_none() {
            this.close_grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        }
        this.outbox.push(&mut this.write.out);
        Poll::Ready(Ok(buf.len()))
    }

    /// Ready at once: the writer task writes what the outbox holds without being asked, so a
    /// flush after every frame no longer means a write after every frame.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_alive(cx))?;
        this.outbox.push(&mut this.write.out);
        Poll::Ready(this.outbox.check())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_alive(cx))?;
        this.outbox.push(&mut this.write.out);
        this.outbox.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::performatives::{Open, Transfer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "00112233-4455-6677-8899-aabbccddeeff";

    fn open(max_frame_size: u32) -> Open {
        Open {
            container_id: "peer".into(),
            hostname: None,
            max_frame_size: max_frame_size.into(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    fn frame(p: Performative, payload: &[u8]) -> Vec<u8> {
        encode_frame(1, &p, payload).unwrap().to_vec()
    }

    fn attach_handle_0() -> fe2o3_amqp_types::performatives::Attach {
        use fe2o3_amqp_types::definitions::Role;
        // A sender names its first delivery count.
        fe2o3_amqp_types::performatives::Attach {
            initial_delivery_count: Some(0),
            ..crate::amqp::test_frames::attach("c2d", Role::Sender, 0)
        }
    }

    fn transfer(tag: &[u8]) -> Transfer {
        Transfer {
            handle: 0.into(),
            delivery_id: Some(3),
            delivery_tag: Some(DeliveryTag::from(tag.to_vec())),
            message_format: Some(0),
            settled: Some(false),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: true,
        }
    }

    fn encoded(m: &super::super::convert::Outgoing) -> Vec<u8> {
        use fe2o3_amqp_types::messaging::message::__private::Serializable;
        serde_amqp::to_vec(&Serializable(m)).unwrap()
    }

    fn c2d_payload() -> Vec<u8> {
        let mut m = iothub_protocol::Message::new("body");
        m.system.lock_token = Some(TOKEN.into());
        m.system.sequence_number = Some(1);
        m.system.delivery_count = Some(0);
        encoded(&super::super::convert::c2d_delivery(&m).unwrap())
    }

    #[test]
    fn first_transfer_of_a_locked_delivery_gets_the_guid_tag() {
        let payload = c2d_payload();
        let f = frame(Performative::Transfer(transfer(&[0, 0, 0, 1])), &payload);
        let out = retag_transfer(&f).unwrap();
        assert!(out.len() <= f.len() + TAG_GROWTH as usize);
        let (channel, p, rest) = decode_frame(&out).unwrap();
        assert_eq!(channel, 1);
        assert_eq!(rest, &payload[..]);
        let Performative::Transfer(t) = p else {
            panic!("not a transfer")
        };
        assert_eq!(
            t.delivery_tag.unwrap().to_vec(),
            lock_token_tag(TOKEN).unwrap().to_vec()
        );
        assert_eq!(t.delivery_id, Some(3));
    }

    #[test]
    fn feedback_lock_token_in_delivery_annotations_is_found() {
        let batch = iothub_protocol::FeedbackBatch {
            enqueued_time: time::OffsetDateTime::UNIX_EPOCH,
            user_id: "hub".into(),
            records: vec![],
        };
        let d = crate::hub::FeedbackDelivery {
            lock_token: TOKEN.into(),
            batch,
            delivery_count: 0,
        };
        let payload = encoded(&super::super::convert::feedback_delivery(&d, "hub"));
        assert_eq!(lock_token_in(&payload), lock_token_tag(TOKEN));
    }

    #[test]
    fn only_transfers_naming_the_lock_token_are_decoded() {
        let c2d = frame(
            Performative::Transfer(transfer(&[0, 0, 0, 1])),
            &c2d_payload(),
        );
        assert!(may_carry_lock_token(&c2d));
        let event = frame(
            Performative::Transfer(transfer(&[0, 0, 0, 1])),
            b"\x00Su\xa0\x05event",
        );
        assert!(!may_carry_lock_token(&event));
        // The name in a body is decoded and then found to be no annotation.
        let body = frame(
            Performative::Transfer(transfer(&[0, 0, 0, 1])),
            b"\x00Su\xa0\x10x-opt-lock-token",
        );
        assert!(may_carry_lock_token(&body));
        assert!(retag_transfer(&body).is_none());
        assert!(!may_carry_lock_token(&frame(
            Performative::Open(open(512)),
            LOCK_TOKEN.as_bytes()
        )));
    }

    #[test]
    fn other_frames_pass_unchanged() {
        let no_token = frame(
            Performative::Transfer(transfer(&[0, 0, 0, 1])),
            b"\x00Su\xa0\x01x",
        );
        assert!(retag_transfer(&no_token).is_none());
        let continuation = {
            let mut t = transfer(&[]);
            t.delivery_tag = None;
            frame(Performative::Transfer(t), &c2d_payload())
        };
        assert!(retag_transfer(&continuation).is_none());
        let open = frame(Performative::Open(open(u32::MAX)), &[]);
        assert!(retag_transfer(&open).is_none());
        assert!(retag_transfer(b"\x00\x00\x00\x08\x02\x00\x00\x00").is_none());
    }

    /// The open as the guard hands it to fe2o3.
    fn shrink_open(frame: &[u8]) -> Option<BytesMut> {
        let (channel, p, payload) = decode_frame(frame)?;
        let Performative::Open(mut o) = p else {
            return None;
        };
        o.max_frame_size.0 -= HEADROOM;
        encode_frame(channel, &Performative::Open(o), payload)
    }

    #[test]
    fn open_max_frame_size_shrinks_by_the_headroom() {
        let mut g = ReadGuard::default();
        g.push(b"AMQP\x00\x01\x00\x00");
        g.push(&frame(Performative::Open(open(65536)), &[]));
        let (_, p, _) = decode_frame(&g.ready[8..]).unwrap();
        let Performative::Open(o) = p else {
            panic!("not an open")
        };
        assert_eq!(o.max_frame_size.0, 65536 - HEADROOM);
    }

    #[tokio::test]
    async fn read_side_replays_the_prefix_and_rewrites_only_the_open() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut s = HubStream::new(io, b"AMQP\x03\x01\x00\x00", CancellationToken::new());
        // A SASL frame the guard passes as it is: a described empty list.
        let sasl_frame = [0u8, 0, 0, 12, 2, 1, 0, 0, 0x00, 0x53, 0x44, 0x45];
        let open_frame = frame(Performative::Open(open(100_000)), &[]);
        let later = frame(Performative::Open(open(u32::MAX)), &[]);
        peer.write_all(&sasl_frame).await.unwrap();
        peer.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
        peer.write_all(&open_frame).await.unwrap();
        peer.write_all(&later).await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let mut expected = b"AMQP\x03\x01\x00\x00".to_vec();
        expected.extend_from_slice(&sasl_frame);
        expected.extend_from_slice(b"AMQP\x00\x01\x00\x00");
        expected.extend_from_slice(&shrink_open(&open_frame).unwrap());
        expected.extend_from_slice(&later);
        assert_eq!(got, expected);
    }

    #[test]
    fn close_frames_are_recognised() {
        let close = Performative::Close(fe2o3_amqp_types::performatives::Close { error: None });
        assert!(is_close(&frame(close, &[])));
        assert!(!is_close(&frame(Performative::Open(open(512)), &[])));
    }

    #[tokio::test(start_paused = true)]
    async fn after_our_close_the_peer_has_a_grace_period() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut s = HubStream::new(io, b"", CancellationToken::new());
        let close = Performative::Close(fe2o3_amqp_types::performatives::Close { error: None });
        s.write_all(&frame(close, &[])).await.unwrap();
        let mut sink = vec![0u8; 64];
        let _ = peer.read(&mut sink).await.unwrap();
        let mut buf = [0u8; 8];
        let started = tokio::time::Instant::now();
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(n, 0, "reads as ended");
        assert!(started.elapsed() >= CLOSE_GRACE);
    }

    #[tokio::test]
    async fn io_fails_once_the_connection_is_over() {
        let (_peer, io) = tokio::io::duplex(64);
        let ended = CancellationToken::new();
        let mut s = HubStream::new(io, b"", ended.clone());
        let mut buf = [0u8; 8];
        let pending = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await;
        assert!(pending.is_err(), "blocks while the peer is quiet");
        ended.cancel();
        assert!(s.read(&mut buf).await.is_err());
        assert!(s.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused_after_the_header() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut s = HubStream::new(io, b"AMQP\x00\x01\x00\x00", CancellationToken::new());
        peer.write_all(b"\xff\xff\xff\xffgarbage").await.unwrap();
        let mut got = [0u8; 8];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"AMQP\x00\x01\x00\x00");
        assert!(s.read(&mut got).await.is_err());
    }

    #[tokio::test]
    async fn a_short_frame_after_open_is_answered_with_a_framing_error() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut s = HubStream::new(io, b"AMQP\x00\x01\x00\x00", CancellationToken::new());
        peer.write_all(&frame(Performative::Open(open(65536)), &[]))
            .await
            .unwrap();
        peer.write_all(&[0, 0, 0, 5, 2]).await.unwrap();
        let mut sink = vec![0u8; 4096];
        let mut got = Vec::new();
        let err = loop {
            match s.read(&mut sink).await {
                Ok(n) => got.extend_from_slice(&sink[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(s);
        let mut reply = Vec::new();
        peer.read_to_end(&mut reply).await.unwrap();
        let (_, p, _) = decode_frame(&reply).expect("an open first");
        assert!(matches!(p, Performative::Open(_)));
        let size = frame_size(&reply).unwrap();
        let (_, p, _) = decode_frame(&reply[size..]).expect("then a close");
        let Performative::Close(close) = p else {
            panic!("not a close: {p:?}")
        };
        let e = close.error.unwrap();
        assert_eq!(
            e.condition,
            fe2o3_amqp_types::definitions::ConnectionError::FramingError.into()
        );
    }

    #[tokio::test]
    async fn write_side_retags_across_split_writes() {
        let (io, mut peer) = tokio::io::duplex(1 << 20);
        let mut s = HubStream::new(io, b"", CancellationToken::new());
        let f = frame(
            Performative::Transfer(transfer(&[0, 0, 0, 1])),
            &c2d_payload(),
        );
        // The link's handle is attached first: nothing goes out for a detached handle.
        let attach = frame(Performative::Attach(attach_handle_0()), &[]);
        let mut all = b"AMQP\x00\x01\x00\x00".to_vec();
        all.extend_from_slice(&attach);
        all.extend_from_slice(&f);
        all.extend_from_slice(&frame(Performative::Open(open(u32::MAX)), &[]));
        for chunk in all.chunks(7) {
            s.write_all(chunk).await.unwrap();
        }
        s.flush().await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        let mut expected = b"AMQP\x00\x01\x00\x00".to_vec();
        expected.extend_from_slice(&attach);
        expected.extend_from_slice(&retag_transfer(&f).unwrap());
        // Our `open` always goes out with every field (see `WriteSide::process`).
        let open = frame(Performative::Open(open(u32::MAX)), &[]);
        expected.extend_from_slice(&super::super::full_lists::pad(&open).unwrap());
        assert_eq!(got, expected);
    }
}
