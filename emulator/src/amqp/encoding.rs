//! A check that AMQP-encoded bytes are well-formed before serde_amqp decodes them.
//!
//! serde_amqp allocates a string's or binary's length as the peer wrote it, before looking at
//! how many bytes follow (`vec![0; n]` in its readers): a 20-byte frame claiming a 3 GB symbol
//! makes it allocate 3 GB, and an allocation that fails aborts the process (found by the
//! `amqp_frames` and `amqp_sasl` fuzz targets, issue 12). Deep nesting would exhaust its stack
//! the same way. So every length and count is checked here against the bytes its container
//! actually holds, and nesting is capped at [`MAX_DEPTH`]; nothing is allocated.

/// Deepest nesting of described types, lists, maps and arrays accepted.
pub const MAX_DEPTH: usize = 32;

/// Why bytes are not one well-formed AMQP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The encoded length of the value at the front of `buf`, checking everything inside it.
pub fn value_len(buf: &[u8]) -> Result<usize, Malformed> {
    len_at(buf, 0)
}

/// Checks that `buf` is a sequence of whole, well-formed values: every length claimed in it
/// fits in the bytes that remain.
pub fn check_values(mut buf: &[u8]) -> Result<(), Malformed> {
    while !buf.is_empty() {
        let n = value_len(buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

fn eof() -> Malformed {
    Malformed("a length or count runs past the end of its container")
}

fn len_at(buf: &[u8], depth: usize) -> Result<usize, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("values are nested too deeply"));
    }
    let code = *buf.first().ok_or_else(eof)?;
    if code == 0x00 {
        let descriptor = len_at(&buf[1..], depth + 1)?;
        let value = len_at(buf.get(1 + descriptor..).ok_or_else(eof)?, depth + 1)?;
        return Ok(1 + descriptor + value);
    }
    Ok(1 + body_len(code, &buf[1..], depth)?)
}

fn size_at(buf: &[u8], width: usize) -> Result<usize, Malformed> {
    let bytes = buf.get(..width).ok_or_else(eof)?;
    Ok(bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
}

/// The length of the bytes after constructor `code` (as in an array element).
fn body_len(code: u8, buf: &[u8], depth: usize) -> Result<usize, Malformed> {
    let fixed = match code >> 4 {
        0x4 => Some(0),
        0x5 => Some(1),
        0x6 => Some(2),
        0x7 => Some(4),
        0x8 => Some(8),
        0x9 => Some(16),
        _ => None,
    };
    if let Some(n) = fixed {
        return if buf.len() >= n { Ok(n) } else { Err(eof()) };
    }
    let width = match code >> 4 {
        0xa | 0xc | 0xe => 1,
        0xb | 0xd | 0xf => 4,
        _ => return Err(Malformed("unknown constructor")),
    };
    let size = size_at(buf, width)?;
    let inner = buf.get(width..width + size).ok_or_else(eof)?;
    if matches!(code >> 4, 0xa | 0xb) {
        return Ok(width + size);
    }
    let count = size_at(inner, width)?;
    let mut rest = &inner[width..];
    if count > rest.len() {
        return Err(Malformed("a count exceeds the bytes of its container"));
    }
    if matches!(code >> 4, 0xc | 0xd) {
        for _ in 0..count {
            let n = len_at(rest, depth + 1)?;
            rest = &rest[n..];
        }
    } else if count > 0 {
        // An array: one constructor (possibly described), then `count` bodies.
        let mut ctor_len = 0;
        if rest.first() == Some(&0x00) {
            ctor_len = 1 + len_at(&rest[1..], depth + 1)?;
        }
        let element = *rest.get(ctor_len).ok_or_else(eof)?;
        rest = &rest[ctor_len + 1..];
        for _ in 0..count {
            let n = body_len(element, rest, depth + 1)?;
            rest = &rest[n..];
        }
    }
    // serde_amqp reads `count` elements and goes on after the last one, not after the size
    // the container claims: bytes left over inside it would be read as the next value (the
    // `amqp_messages` fuzz target found a list whose slack became a section descriptor
    // claiming 274 MB). No encoder leaves any, so they are malformed.
    if !rest.is_empty() {
        return Err(Malformed(
            "a list, map or array holds bytes after its last element",
        ));
    }
    Ok(width + size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::{Symbol, Value};

    #[test]
    fn encoded_values_check_and_measure() {
        let values = vec![
            Value::Symbol(Symbol::from("amqp:link:stolen")),
            Value::String("x".repeat(300)),
            Value::List(vec![Value::Uint(7), Value::Null, Value::Bool(true)]),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())].into()),
        ];
        for v in values {
            let bytes = serde_amqp::to_vec(&v).unwrap();
            assert_eq!(value_len(&bytes), Ok(bytes.len()), "{v:?}");
        }
    }

    #[test]
    fn claims_larger_than_the_bytes_are_refused() {
        // sym32 claiming 3 GB, then three bytes.
        assert!(value_len(&[0xb3, 0xb3, 0xb3, 0xb3, 0xb3, 1, 2, 3]).is_err());
        // The amqp_sasl crash: a described value whose symbol claims 3 GB.
        assert!(value_len(&[0, 179, 182, 62, 5, 182, 190, 255, 255, 239]).is_err());
        // list8 whose count exceeds its size.
        assert!(value_len(&[0xc0, 1, 200]).is_err());
        // array8 of str32 whose one element claims 4 GB.
        assert!(value_len(&[0xe0, 6, 1, 0xb1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // The amqp_messages input: an amqp-sequence section whose list8 claims 31 bytes but
        // whose 7 elements fill 13; serde_amqp read the slack as a sym32 claiming 274 MB.
        let slack = [
            0x00, 0x53, 0x76, 0xc0, 0x1f, 0x07, 0x40, 0xa1, 0x02, 0x6e, 0x00, 0x40, 0x40, 0x40,
            0x40, 0xa1, 0x02, 0x63, 0x32, 0xb3, 0x10, 0x61, 0x70, 0x6c, 0xe9, 0x63, 0x61, 0x74,
            0x69, 0x6f, 0x6e, 0x2f, 0x6a, 0x65, 0xa1, 0x00,
        ];
        assert!(check_values(&slack).is_err());
        // Slack in a list8, a map8 and an array8 of one element each.
        assert!(value_len(&[0xc0, 3, 1, 0x40, 0x40]).is_err());
        assert!(value_len(&[0xc1, 4, 2, 0x40, 0x40, 0x40]).is_err());
        assert!(value_len(&[0xe0, 4, 1, 0x50, 7, 0]).is_err());
        // Without the slack they are whole.
        assert_eq!(value_len(&[0xc0, 2, 1, 0x40]), Ok(4));
        assert_eq!(value_len(&[0xc1, 3, 2, 0x40, 0x40]), Ok(5));
        assert_eq!(value_len(&[0xe0, 3, 1, 0x50, 7]), Ok(5));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x00]);
        }
        deep.push(0x40);
        assert!(value_len(&deep).is_err());
    }
}
