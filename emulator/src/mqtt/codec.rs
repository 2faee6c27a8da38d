//! The MQTT 3.1.1 codec with the fixed-header checks rumqttc's decoder leaves out.
//!
//! rumqttc reads a packet's type from the first byte and ignores its four flag bits. The spec
//! fixes them (MQTT 3.1.1, 2.2.2): `0010` for PUBREL, SUBSCRIBE and UNSUBSCRIBE, `0000` for
//! every other packet a client sends except PUBLISH, and "if invalid flags are received, the
//! receiver MUST close the Network Connection" [MQTT-2.2.2-2]. A PUBLISH with QoS 3 is malformed
//! as well [MQTT-3.3.1-4].

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{Codec, Packet};
use tokio_util::codec::{Decoder, Encoder};

/// rumqttc's codec, refusing packets whose fixed-header flags are not the spec's.
#[derive(Debug, Clone)]
pub struct StrictCodec(pub Codec);

impl StrictCodec {
    /// The codec a connection uses, with the same size limit both ways; the fuzz target builds
    /// its decoder here too, so it fuzzes exactly what the server runs.
    pub fn new(max_packet_size: usize) -> Self {
        StrictCodec(Codec {
            max_incoming_size: max_packet_size,
            max_outgoing_size: max_packet_size,
        })
    }
}

/// Whether a first byte has the flags its packet type requires.
pub fn flags_valid(first: u8) -> bool {
    let flags = first & 0x0f;
    match first >> 4 {
        // PUBLISH: DUP, QoS and RETAIN are free, but QoS 3 does not exist.
        3 => (flags >> 1) & 0b11 != 0b11,
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    }
}

impl Decoder for StrictCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        match src.first() {
            Some(&first) if !flags_valid(first) => Err(CodecError::IncorrectPacketFormat),
            _ => self.0.decode(src),
        }
    }
}

impl Encoder<Packet> for StrictCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.0.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> StrictCodec {
        StrictCodec(Codec {
            max_incoming_size: 1024,
            max_outgoing_size: 1024,
        })
    }

    #[test]
    fn subscribe_with_wrong_flags_is_refused_and_right_flags_decode() {
        // SUBSCRIBE, pkid 1, filter "a", QoS 1.
        let body = [0x00, 0x01, 0x00, 0x01, b'a', 0x01];
        for (first, ok) in [(0x82u8, true), (0x80, false), (0x83, false), (0x8a, false)] {
            let mut buf = BytesMut::from(&[first, body.len() as u8][..]);
            buf.extend_from_slice(&body);
            let r = codec().decode(&mut buf);
            assert_eq!(r.is_ok(), ok, "first byte {first:#04x}: {r:?}");
        }
    }

    #[test]
    fn flags_follow_the_spec() {
        assert!(flags_valid(0x10)); // CONNECT
        assert!(!flags_valid(0x11));
        assert!(flags_valid(0x30) && flags_valid(0x3b) && flags_valid(0x3d));
        assert!(!flags_valid(0x36) && !flags_valid(0x37)); // QoS 3
        assert!(flags_valid(0x62) && !flags_valid(0x60)); // PUBREL
        assert!(flags_valid(0xa2) && !flags_valid(0xa0)); // UNSUBSCRIBE
        assert!(flags_valid(0xc0) && !flags_valid(0xc2)); // PINGREQ
        assert!(flags_valid(0xe0) && !flags_valid(0xe1)); // DISCONNECT
        assert!(flags_valid(0x40) && !flags_valid(0x42)); // PUBACK
    }
}
