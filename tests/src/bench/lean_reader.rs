//! A lean Event Hubs reader for the d2c-e2e scenario: just enough AMQP 1.0 over TLS (SASL
//! PLAIN, open, begin, a receiver per partition, flow) to take the endpoint's pre-settled
//! transfers and hand each event's first data section to the [`EventSink`].
//!
//! Why it exists: the bench's devices, its reader and the emulator share two cores, so what
//! the reader spends per event is taken from the server being measured. A general client
//! (fe2o3, like the official ones) decodes every message into maps of annotations and
//! properties and passes it through a connection task, a session task and a link; that cost
//! 5 to 6 µs per event and held the in-memory end-to-end rate below what the devices got
//! acknowledged. This reader walks the frame bytes instead: it reads the transfer's handle and
//! `more` flag and skips every section but the body by its encoded length. It is no client for
//! anything but this bench (no dispositions, no redirects, no token renewal); the official
//! clients are proven against the endpoint in `tests/sdk-compat`, and `--reader fe2o3` runs
//! the scenario with fe2o3's receiver.

use bytes::{Buf, BytesMut};
use fe2o3_amqp_types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::{Source, Target};
use fe2o3_amqp_types::performatives::{Attach, Begin, ChannelMax, Flow, MaxFrameSize, Open};
use fe2o3_amqp_types::primitives::{Binary, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use iothub_emulator::amqp::encoding;

use super::events::EventSink;
use super::{BenchResult, ctx};

const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
/// Largest frame either side may send.
const MAX_FRAME: u32 = 256 * 1024;
/// The session window the reader grants, renewed with every flow.
const WINDOW: u32 = 1 << 20;

/// Performative descriptor codes (AMQP 1.0 part 2.7).
const OPEN: u64 = 0x10;
const BEGIN: u64 = 0x11;
const ATTACH: u64 = 0x12;
const TRANSFER: u64 = 0x14;
const DETACH: u64 = 0x16;
const END: u64 = 0x17;
const CLOSE: u64 = 0x18;
/// The data section's descriptor.
const DATA: u64 = 0x75;

/// One partition receiver on a connection.
struct Link {
    partition: usize,
    /// The receiver's delivery count (the sender's initial count plus what came since).
    delivery_count: u32,
    /// Deliveries since the last flow.
    since_flow: u32,
    /// The body of a delivery whose transfer said `more`.
    partial: Option<Vec<u8>>,
}

/// What one connection reads: its address, credentials and partitions.
pub struct LeanPlan {
    pub hub_name: String,
    pub username: String,
    pub token: String,
    pub partitions: Vec<usize>,
    pub credit: u32,
}

/// Opens the connection on `io`, attaches a receiver per partition of `plan`, calls `ready`
/// once every receiver has credit, and reads until the stream ends or the peer detaches, ends
/// or closes. `sink` gives the current run's sink.
pub async fn read<IO, F, R>(mut io: IO, plan: LeanPlan, sink: F, ready: R) -> BenchResult<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> std::sync::Arc<EventSink>,
    R: FnOnce(),
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    sasl_plain(&mut io, &mut buf, &plan).await?;

    io.write_all(AMQP_HEADER)
        .await
        .map_err(ctx("AMQP header"))?;
    expect_header(&mut io, &mut buf, AMQP_HEADER).await?;
    let open = Open {
        container_id: format!("iothub-bench-lean-{}", plan.partitions[0]),
        hostname: Some("localhost".into()),
        max_frame_size: MaxFrameSize(MAX_FRAME),
        channel_max: ChannelMax(0),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    send(&mut io, 0, &open).await?;
    next_of(&mut io, &mut buf, OPEN).await?;
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: WINDOW,
        outgoing_window: 0,
        handle_max: Handle(u32::MAX),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    send(&mut io, 0, &begin).await?;
    let theirs: Begin = decode(&next_of(&mut io, &mut buf, BEGIN).await?)?;
    // The transfer id the sender gives next: what each flow reports back.
    let mut next_incoming = theirs.next_outgoing_id;

    let mut links = Vec::new();
    for (h, &p) in plan.partitions.iter().enumerate() {
        let attach = Attach {
            name: format!("bench-lean-partition-{p}"),
            handle: Handle(h as u32),
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(
                Source::builder()
                    .address(format!(
                        "{}/ConsumerGroups/$Default/Partitions/{p}",
                        plan.hub_name
                    ))
                    .build(),
            )),
            target: Some(Box::new(
                Target::builder().address("iothub-bench").build().into(),
            )),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        send(&mut io, 0, &attach).await?;
        let theirs: Attach = decode(&next_of(&mut io, &mut buf, ATTACH).await?)?;
        if theirs.source.is_none() {
            return Err(format!("the endpoint refused the partition {p} receiver"));
        }
        links.push(Link {
            partition: p,
            delivery_count: theirs.initial_delivery_count.unwrap_or(0),
            since_flow: 0,
            partial: None,
        });
    }
    for (h, link) in links.iter().enumerate() {
        send(&mut io, 0, &flow(next_incoming, h, link, plan.credit)).await?;
    }
    ready();

    loop {
        let body = next_frame(&mut io, &mut buf).await?;
        let Some((code, fields)) = descriptor(&body) else {
            continue; // an empty frame: a heartbeat
        };
        match code {
            TRANSFER => {
                next_incoming = next_incoming.wrapping_add(1);
                let (handle, more, payload) = transfer(&body, fields)
                    .ok_or_else(|| "a transfer the reader cannot parse".to_owned())?;
                let link = links
                    .get_mut(handle as usize)
                    .ok_or_else(|| format!("a transfer on unknown handle {handle}"))?;
                let whole = match (link.partial.take(), more) {
                    (None, false) => None,
                    (Some(mut acc), more) => {
                        acc.extend_from_slice(payload);
                        if more {
                            link.partial = Some(acc);
                            continue;
                        }
                        Some(acc)
                    }
                    (None, true) => {
                        link.partial = Some(payload.to_vec());
                        continue;
                    }
                };
                let message = whole.as_deref().unwrap_or(payload);
                if let Some(data) = first_data(message) {
                    sink().on_body(link.partition, data);
                }
                link.delivery_count = link.delivery_count.wrapping_add(1);
                link.since_flow += 1;
                if link.since_flow >= plan.credit / 2 {
                    link.since_flow = 0;
                    let f = flow(next_incoming, handle as usize, link, plan.credit);
                    send(&mut io, 0, &f).await?;
                }
            }
            DETACH | END | CLOSE => {
                return Err(format!("the endpoint sent performative {code:#x}"));
            }
            _ => {}
        }
    }
}

async fn sasl_plain<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    plan: &LeanPlan,
) -> BenchResult<()> {
    io.write_all(SASL_HEADER)
        .await
        .map_err(ctx("SASL header"))?;
    expect_header(io, buf, SASL_HEADER).await?;
    next_frame(io, buf).await?; // sasl-mechanisms: PLAIN is offered
    let mut response = vec![0u8];
    response.extend_from_slice(plan.username.as_bytes());
    response.push(0);
    response.extend_from_slice(plan.token.as_bytes());
    let init = SaslInit {
        mechanism: Symbol::from("PLAIN"),
        initial_response: Some(Binary::from(response)),
        hostname: Some("localhost".into()),
    };
    write_frame(
        io,
        1,
        0,
        &serde_amqp::to_vec(&init).map_err(ctx("sasl-init"))?,
    )
    .await?;
    let outcome: SaslOutcome = decode(&next_frame(io, buf).await?)?;
    match outcome.code {
        SaslCode::Ok => Ok(()),
        other => Err(format!("SASL PLAIN refused: {other:?}")),
    }
}

fn flow(next_incoming: u32, handle: usize, link: &Link, credit: u32) -> Flow {
    Flow {
        next_incoming_id: Some(next_incoming),
        incoming_window: WINDOW,
        next_outgoing_id: 0,
        outgoing_window: 0,
        handle: Some(Handle(handle as u32)),
        delivery_count: Some(link.delivery_count),
        link_credit: Some(credit),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    }
}

async fn send<IO: AsyncWrite + Unpin, T: Serialize>(
    io: &mut IO,
    channel: u16,
    performative: &T,
) -> BenchResult<()> {
    let body = serde_amqp::to_vec(performative).map_err(ctx("encoding a performative"))?;
    write_frame(io, 0, channel, &body).await
}

async fn write_frame<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    kind: u8,
    channel: u16,
    body: &[u8],
) -> BenchResult<()> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    f.extend_from_slice(&[2, kind]);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(body);
    io.write_all(&f).await.map_err(ctx("writing a frame"))?;
    io.flush().await.map_err(ctx("flushing a frame"))
}

async fn fill<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut, n: usize) -> BenchResult<()> {
    while buf.len() < n {
        if io.read_buf(buf).await.map_err(ctx("reading"))? == 0 {
            return Err("the endpoint closed the connection".into());
        }
    }
    Ok(())
}

async fn expect_header<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    header: &[u8; 8],
) -> BenchResult<()> {
    fill(io, buf, 8).await?;
    let got = buf.split_to(8);
    if &got[..] == header {
        Ok(())
    } else {
        Err(format!("the endpoint answered with header {got:?}"))
    }
}

/// The next frame's body (after its header and extended header).
async fn next_frame<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
) -> BenchResult<BytesMut> {
    fill(io, buf, 8).await?;
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let data_offset = usize::from(buf[4]) * 4;
    if size < 8 || data_offset < 8 || data_offset > size || size > MAX_FRAME as usize {
        return Err(format!("a frame of {size} bytes with offset {data_offset}"));
    }
    fill(io, buf, size).await?;
    let mut frame = buf.split_to(size);
    frame.advance(data_offset);
    Ok(frame)
}

/// The body of the next frame that carries performative `code`, skipping others.
async fn next_of<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    code: u64,
) -> BenchResult<BytesMut> {
    loop {
        let body = next_frame(io, buf).await?;
        match descriptor(&body) {
            Some((c, _)) if c == code => return Ok(body),
            Some((c, _)) if matches!(c, DETACH | END | CLOSE) => {
                return Err(format!(
                    "the endpoint sent performative {c:#x} while opening"
                ));
            }
            _ => {}
        }
    }
}

fn decode<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> BenchResult<T> {
    serde_amqp::from_slice(body).map_err(ctx("decoding a frame"))
}

/// A described value's descriptor code and where its value starts (for a frame body: the
/// performative's code and where its field list starts; `None` for an empty frame).
fn descriptor(b: &[u8]) -> Option<(u64, usize)> {
    match b {
        [0x00, 0x53, code, ..] => Some((u64::from(*code), 3)),
        [0x00, 0x80, rest @ ..] => Some((u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10)),
        _ => None,
    }
}

/// The encoded length of the AMQP value at the start of `b`, every length in it checked
/// against the bytes there (the emulator's own check for what peers send).
fn value_len(b: &[u8]) -> Option<usize> {
    encoding::value_len(b).ok()
}

/// A transfer's handle, its `more` flag and the message bytes after the performative.
fn transfer(body: &[u8], fields: usize) -> Option<(u32, bool, &[u8])> {
    let list = body.get(fields..)?;
    let total = value_len(list)?;
    let (count, mut at) = match list.first()? {
        0xc0 => (usize::from(*list.get(2)?), 3),
        0xd0 => (
            u32::from_be_bytes(list.get(5..9)?.try_into().ok()?) as usize,
            9,
        ),
        _ => return None,
    };
    let mut handle = None;
    let mut more = false;
    for i in 0..count.min(6) {
        let v = list.get(at..)?;
        match i {
            0 => {
                handle = Some(match v {
                    [0x43, ..] => 0,
                    [0x52, x, ..] => u32::from(*x),
                    [0x70, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => return None,
                })
            }
            5 => more = matches!(v, [0x41, ..] | [0x56, 0x01, ..]),
            _ => {}
        }
        at += value_len(v)?;
    }
    Some((handle?, more, body.get(fields + total..)?))
}

/// The first data section of an encoded message.
fn first_data(mut m: &[u8]) -> Option<&[u8]> {
    while !m.is_empty() {
        let (code, at) = descriptor(m)?;
        let value = m.get(at..)?;
        if code == DATA {
            return match value {
                [0xa0, n, rest @ ..] => rest.get(..usize::from(*n)),
                [0xb0, a, b, c, d, rest @ ..] => {
                    rest.get(..u32::from_be_bytes([*a, *b, *c, *d]) as usize)
                }
                _ => None,
            };
        }
        m = value.get(value_len(value)?..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::{Message, MessageAnnotations};
    use fe2o3_amqp_types::performatives::Transfer;
    use fe2o3_amqp_types::primitives::{OrderedMap, Value};

    fn encoded_event(body: &[u8]) -> Vec<u8> {
        let mut ann = MessageAnnotations(OrderedMap::new());
        ann.0.insert(
            Symbol::from("x-opt-offset").into(),
            Value::String("12".into()),
        );
        ann.0
            .insert(Symbol::from("x-opt-sequence-number").into(), Value::Long(3));
        let m = Message::builder()
            .message_annotations(ann)
            .properties(
                fe2o3_amqp_types::messaging::Properties::builder()
                    .message_id(String::from("m1"))
                    .build(),
            )
            .data(Binary::from(body.to_vec()))
            .build();
        serde_amqp::to_vec(&fe2o3_amqp_types::messaging::message::__private::Serializable(m))
            .unwrap()
    }

    #[test]
    fn the_first_data_section_is_found_past_annotations_and_properties() {
        let m = encoded_event(b"0123456789abcdefpayload");
        assert_eq!(first_data(&m), Some(&b"0123456789abcdefpayload"[..]));
        let big = vec![7u8; 300];
        assert_eq!(first_data(&encoded_event(&big)), Some(&big[..]));
        // Cut short: no body rather than a panic.
        assert_eq!(first_data(&m[..m.len() - 3]), None);
    }

    #[test]
    fn a_transfer_gives_its_handle_more_flag_and_payload() {
        let t = Transfer {
            handle: Handle(3),
            delivery_id: Some(1000),
            delivery_tag: Some(Binary::from(vec![1, 2, 3, 4])),
            message_format: Some(0),
            settled: Some(true),
            more: true,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let mut body = serde_amqp::to_vec(&t).unwrap();
        body.extend_from_slice(b"rest");
        let (code, fields) = descriptor(&body).unwrap();
        assert_eq!(code, TRANSFER);
        let (handle, more, payload) = transfer(&body, fields).unwrap();
        assert_eq!((handle, more, payload), (3, true, &b"rest"[..]));
    }
}
