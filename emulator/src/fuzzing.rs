//! What the fuzz targets in `fuzz/` call, and what the corpus replay test replays: each
//! function takes arbitrary bytes and runs them through the same code a peer's bytes reach.
//! Not an API.

pub use crate::amqp::fuzzing::{frames as amqp_frames, sasl as amqp_sasl};
pub use crate::http::fuzzing::headers as http_headers;
pub use crate::mqtt::fuzzing::{packets as mqtt_packets, topic as mqtt_topic};

/// Connection strings and SAS tokens as the emulator and the clients parse them.
pub fn credentials(data: &[u8]) {
    use iothub_protocol::connection_string::{DeviceConnectionString, ServiceConnectionString};
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = s.parse::<DeviceConnectionString>();
    let _ = s.parse::<ServiceConnectionString>();
    if let Ok(t) = iothub_protocol::sas::SasToken::parse(s) {
        let _ = t.path_segments();
        let _ = t.expiry();
    }
}

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every fuzz target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("amqp_frames", amqp_frames),
    ("amqp_sasl", amqp_sasl),
    ("mqtt_packets", mqtt_packets),
    ("mqtt_topic", mqtt_topic),
    ("http_headers", http_headers),
    ("credentials", credentials),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file of every fuzz target's corpus (seeds and the regressions found by fuzzing)
    /// goes through the same function on stable, so CI covers them without nightly.
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "{name} panics on {path:?}");
                replayed += 1;
            }
        }
        assert!(replayed >= super::TARGETS.len(), "the corpus is missing");
    }
}
