//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the MQTT packet
//! path up to the emulator's CONNECT handling, topics and property bags.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio_util::codec::Decoder;

use super::codec::StrictCodec;
use super::limits::Limits;
use super::{connect, topics};

/// Decodes `data` as a stream of MQTT 3.1.1 packets with the codec the connection uses (the
/// strict one, which refuses bad fixed-header flags) and runs each CONNECT through the
/// emulator's checks and each PUBLISH through its topic routing.
pub fn packets(data: &[u8]) {
    let mut codec = StrictCodec::new(Limits::default().max_packet_size);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = codec.decode(&mut buf) {
        match packet {
            Packet::Connect(c) => {
                let _ = connect::validate(&c);
                if let Some(login) = &c.login {
                    let _ = connect::parse_username(&login.username, &c.client_id);
                }
            }
            Packet::Publish(p) => {
                let _ = topics::route_publish(&p.topic, &p.topic);
                let _ = topics::telemetry(&p.topic, &p.payload);
            }
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    let _ = topics::classify_filter("dev", &f.path);
                }
            }
            _ => {}
        }
    }
}

/// A topic (with its property bag) as a device `dev` publishes it.
pub fn topic(data: &[u8]) {
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    let _ = topics::route_publish("dev", topic);
    let _ = topics::telemetry(topic, b"");
    let _ = topics::classify_filter("dev", topic);
}
