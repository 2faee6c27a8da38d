//! Full performative lists for peers that index fields instead of decoding them.
//!
//! AMQP lets an encoder drop a performative's trailing null fields, and fe2o3 does. pyamqp (the
//! pure-Python AMQP stack of `azure-eventhub` 5.x) reads fields by position: `frame[9]` of an
//! `open` (properties), `frame[13]` of an `attach`, and for a `transfer` the payload sits at
//! `frame[11]` only when all eleven fields were on the wire. A shortened list is an
//! `IndexError` or a payload in the wrong slot. pyamqp itself always writes every field, so a
//! peer whose `open` carries all ten fields gets the same from us: [`wants_full_lists`] tells the
//! stream, and [`pad`] appends the missing nulls to each frame it writes.
//!
//! Only list lengths change: the fields present are copied byte for byte, and other peers see
//! exactly what fe2o3 wrote.

use bytes::{BufMut, BytesMut};

/// Frame type of AMQP frames (SASL frames are type 1 and left alone).
const FRAME_TYPE_AMQP: u8 = 0;
/// The number of fields of each performative, by descriptor code (AMQP 1.0 §2.7).
const FIELDS: [(u8, u32); 9] = [
    (0x10, 10), // open
    (0x11, 8),  // begin
    (0x12, 14), // attach
    (0x13, 11), // flow
    (0x14, 11), // transfer
    (0x15, 6),  // disposition
    (0x16, 3),  // detach
    (0x17, 1),  // end
    (0x18, 1),  // close
];
/// The fields of an `error` (condition, description, info).
const ERROR_FIELDS: u32 = 3;
const ERROR_CODE: u8 = 0x1d;
const NULL: u8 = 0x40;

/// True when the peer's `open` frame lists all ten fields: the mark of pyamqp.
pub fn wants_full_lists(frame: &[u8]) -> bool {
    match performative(frame) {
        Some(p) => p.code == 0x10 && p.count >= 10,
        None => false,
    }
}

/// The frame with every performative list (and a trailing `error` list) at full length, or
/// `None` when it already is, or is not a performative this module knows.
pub fn pad(frame: &[u8]) -> Option<BytesMut> {
    let p = performative(frame)?;
    let full = FIELDS.iter().find(|(c, _)| *c == p.code)?.1;
    // detach, end and close end with an optional error: pyamqp reads its three fields too.
    let error_at = match p.code {
        0x16 => Some(2),
        0x17 | 0x18 => Some(0),
        _ => None,
    };
    let error = error_at.and_then(|i| {
        let start = skip_fields(frame, p.fields_start, i)?;
        let e = list_at(frame, start, ERROR_CODE)?;
        (e.count < ERROR_FIELDS && e.end == p.end).then_some(e)
    });
    if p.count >= full && error.is_none() {
        return None;
    }
    let mut list_body = BytesMut::with_capacity(p.end - p.fields_start + 16);
    match error {
        Some(e) => {
            list_body.extend_from_slice(frame.get(p.fields_start..e.header_start)?);
            let mut fields = BytesMut::new();
            fields.extend_from_slice(frame.get(e.fields_start..e.end)?);
            fields.put_bytes(NULL, (ERROR_FIELDS - e.count) as usize);
            list_body.extend_from_slice(frame.get(e.header_start..e.header_start + 3)?);
            write_list(&mut list_body, ERROR_FIELDS, &fields);
        }
        None => list_body.extend_from_slice(frame.get(p.fields_start..p.end)?),
    }
    let count = p.count.max(full);
    list_body.put_bytes(NULL, count.saturating_sub(p.count) as usize);

    let mut out = BytesMut::with_capacity(frame.len() + list_body.len() + 16);
    // Frame header (size fixed below) and any extended header, then the descriptor.
    out.extend_from_slice(frame.get(..p.header_start + 3)?);
    write_list(&mut out, count, &list_body);
    out.extend_from_slice(frame.get(p.end..)?);
    let size = u32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// Writes a list with `count` fields whose encodings are `fields`, in the smallest form.
fn write_list(out: &mut BytesMut, count: u32, fields: &[u8]) {
    match (u8::try_from(fields.len() + 1), u8::try_from(count)) {
        (Ok(size), Ok(count)) => {
            out.put_u8(0xc0);
            out.put_u8(size);
            out.put_u8(count);
        }
        _ => {
            out.put_u8(0xd0);
            out.put_u32((fields.len() + 4) as u32);
            out.put_u32(count);
        }
    }
    out.extend_from_slice(fields);
}

/// A described list found in a frame.
#[derive(Debug, Clone, Copy)]
struct List {
    code: u8,
    /// Where `0x00 0x53 code` starts.
    header_start: usize,
    /// Where the first field starts.
    fields_start: usize,
    /// One past the last field.
    end: usize,
    count: u32,
}

/// The frame's performative, if it is an AMQP frame with a small-ulong described list.
fn performative(frame: &[u8]) -> Option<List> {
    if *frame.get(5)? != FRAME_TYPE_AMQP {
        return None;
    }
    let doff = usize::from(*frame.get(4)?) * 4;
    if doff < 8 {
        return None;
    }
    let code = *frame.get(doff + 2)?;
    list_at(frame, doff, code)
}

/// The described list `0x00 0x53 code <list>` at `at`.
fn list_at(buf: &[u8], at: usize, code: u8) -> Option<List> {
    if buf.get(at..at + 3)? != [0x00, 0x53, code] {
        return None;
    }
    let l = at + 3;
    let (fields_start, end, count) = match *buf.get(l)? {
        0x45 => (l + 1, l + 1, 0),
        0xc0 => {
            let size = usize::from(*buf.get(l + 1)?);
            let count = u32::from(*buf.get(l + 2)?);
            (l + 3, l + 2 + size, count)
        }
        0xd0 => {
            let size = u32::from_be_bytes(buf.get(l + 1..l + 5)?.try_into().ok()?) as usize;
            let count = u32::from_be_bytes(buf.get(l + 5..l + 9)?.try_into().ok()?);
            (l + 9, (l + 5).checked_add(size)?, count)
        }
        _ => return None,
    };
    if end > buf.len() || fields_start > end {
        return None;
    }
    Some(List {
        code,
        header_start: at,
        fields_start,
        end,
        count,
    })
}

/// The position after `n` encoded values starting at `at`.
fn skip_fields(buf: &[u8], mut at: usize, n: usize) -> Option<usize> {
    for _ in 0..n {
        at = skip_value(buf, at)?;
    }
    Some(at)
}

/// The position after the encoded value at `at` (AMQP 1.0 §1.6 constructors).
fn skip_value(buf: &[u8], at: usize) -> Option<usize> {
    let c = *buf.get(at)?;
    let sized = |width: usize| -> Option<usize> {
        let raw = buf.get(at + 1..at + 1 + width)?;
        let size = raw
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (at + 1 + width).checked_add(size)
    };
    let next = match c {
        0x00 => {
            let after_descriptor = skip_value(buf, at + 1)?;
            skip_value(buf, after_descriptor)?
        }
        0x40..=0x45 => at + 1,
        0x50..=0x56 => at + 2,
        0x60..=0x61 => at + 3,
        0x70..=0x74 => at + 5,
        0x80..=0x84 => at + 9,
        0x94 | 0x98 => at + 17,
        0xa0..=0xa3 | 0xc0..=0xc1 | 0xe0 => sized(1)?,
        0xb0..=0xb3 | 0xd0..=0xd1 | 0xf0 => sized(4)?,
        _ => return None,
    };
    (next <= buf.len()).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 0, 0, 1]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_short_transfer_gets_its_eleven_fields_and_keeps_its_payload() {
        // transfer(handle 0, delivery-id 5) + payload "xy"
        let f = frame(&[
            0x00, 0x53, 0x14, 0xc0, 0x04, 0x02, 0x43, 0x52, 0x05, b'x', b'y',
        ]);
        let out = pad(&f).unwrap();
        let expected = frame(&[
            0x00, 0x53, 0x14, 0xc0, 0x0d, 0x0b, 0x43, 0x52, 0x05, 0x40, 0x40, 0x40, 0x40, 0x40,
            0x40, 0x40, 0x40, 0x40, b'x', b'y',
        ]);
        assert_eq!(&out[..], &expected[..]);
        assert!(pad(&out).is_none(), "a full list is left alone");
    }

    #[test]
    fn detach_errors_get_description_and_info_slots() {
        // detach(handle 1, closed true, error(condition "amqp:link:stolen"))
        let mut body = vec![0x00, 0x53, 0x16];
        let cond = b"amqp:link:stolen";
        let mut error = vec![0x00, 0x53, 0x1d, 0xc0, (cond.len() + 3) as u8, 1, 0xa3];
        error.push(cond.len() as u8);
        error.extend_from_slice(cond);
        let mut fields = vec![0x52, 0x01, 0x41];
        fields.extend_from_slice(&error);
        body.extend_from_slice(&[0xc0, (fields.len() + 1) as u8, 3]);
        body.extend_from_slice(&fields);
        let out = pad(&frame(&body)).unwrap();
        let p = performative(&out).unwrap();
        assert_eq!(p.count, 3);
        let at = skip_fields(&out, p.fields_start, 2).unwrap();
        let e = list_at(&out, at, ERROR_CODE).unwrap();
        assert_eq!(e.count, 3);
        assert_eq!(e.end, p.end);
        assert_eq!(&out[e.end - 2..e.end], &[0x40, 0x40]);
    }

    #[test]
    fn empty_lists_opens_and_other_frames() {
        let close = frame(&[0x00, 0x53, 0x18, 0x45]);
        let out = pad(&close).unwrap();
        assert_eq!(&out[8..], &[0x00, 0x53, 0x18, 0xc0, 0x02, 0x01, 0x40]);
        let full_open = frame(&[
            0x00, 0x53, 0x10, 0xc0, 0x0c, 0x0a, 0xa1, 0x01, b'c', 0x40, 0x40, 0x40, 0x40, 0x40,
            0x40, 0x40, 0x40, 0x40,
        ]);
        assert!(wants_full_lists(&full_open));
        let short_open = frame(&[0x00, 0x53, 0x10, 0xc0, 0x04, 0x01, 0xa1, 0x01, b'c']);
        assert!(!wants_full_lists(&short_open));
        assert_eq!(pad(&short_open).unwrap().len(), full_open.len());
        let sasl = {
            let mut f = frame(&[0x00, 0x53, 0x44, 0x45]);
            f[5] = 1;
            f
        };
        assert!(pad(&sasl).is_none());
        assert!(pad(&[0, 0, 0, 8, 2, 0, 0, 0]).is_none(), "empty frame");
        assert!(pad(&frame(&[0x00, 0x53, 0x14, 0xc0, 0xff, 0x0b])).is_none());
    }
}
