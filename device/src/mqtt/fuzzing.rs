//! The entry point for the `device_mqtt_packets` fuzz target and its corpus replay test: what
//! the hub's bytes reach in the device client before any application code. The emulator's
//! fuzz targets cover the same codec behind its stricter fixed-header check; the client
//! decodes without that check, so it gets its own target.

use bytes::BytesMut;
use iothub_protocol::method::{JsonPayload, parse_request_topic};
use rumqttc::mqttbytes::v4::Packet;

use super::params::MAX_PACKET;
use super::topics::{Inbound, inbound};
use super::twin::{TwinInbound, answer_error};

/// Decodes `data` as the packets a hub sends a device and runs each PUBLISH through the
/// client's topic routing: C2D property bags, twin answers and their error bodies, method
/// requests and their JSON payloads.
pub fn packets(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(packet) = Packet::read(&mut buf, MAX_PACKET) {
        let Packet::Publish(p) = packet else {
            continue;
        };
        if super::methods::is_request(&p.topic) {
            let _ = parse_request_topic(&p.topic);
            let _ = JsonPayload::from_body(&p.payload);
            continue;
        }
        if let Inbound::Twin(TwinInbound::Response { status, .. }) = inbound("dev", &p.topic) {
            let _ = answer_error(status, &p.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The target's corpus (seeds and any regressions fuzzing found) replays on stable, so CI
    /// covers it without nightly.
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/device_mqtt_packets");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let run = std::panic::catch_unwind(|| super::packets(&data));
            assert!(run.is_ok(), "device_mqtt_packets panics on {path:?}");
            replayed += 1;
        }
        assert!(replayed >= 3, "the corpus is missing");
    }
}
