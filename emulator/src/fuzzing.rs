//! What the fuzz targets in `fuzz/` call, and what the corpus replay test replays: each
//! function takes arbitrary bytes and runs them through the same code a peer's bytes reach.
//! Not an API.

pub use crate::amqp::fuzzing::{
    addresses as amqp_addresses, frames as amqp_frames, messages as amqp_messages,
    sasl as amqp_sasl,
};
pub use crate::http::fuzzing::{bodies as http_bodies, headers as http_headers};
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

/// A twin query and, after the first newline, a continuation token, as `POST /devices/query`
/// takes them (`x-ms-continuation`), run against a small hub with tags, reported properties
/// and a module.
pub fn queries(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, token) = text.split_once('\n').unwrap_or((text, ""));
    let hub = small_hub();
    for page_size in [1, 100] {
        let Ok(page) = hub.query_twins(query, page_size, Some(token)) else {
            continue;
        };
        // The token the emulator hands out must be one it reads back.
        if let Some(next) = page.continuation_token {
            let _ = hub.query_twins(query, page_size, Some(&next));
        }
    }
}

/// Devices `d0` and `d1` with tags and reported properties, and module `d0/m0`: what
/// [`queries`] and the HTTP bodies target run against.
pub(crate) fn small_hub() -> crate::hub::Hub {
    use crate::hub::{Hub, HubSettings, Identity};
    use iothub_protocol::registry::Device;
    use iothub_protocol::twin::TwinWrite;
    use time::OffsetDateTime;

    let now = OffsetDateTime::UNIX_EPOCH;
    let mut hub = Hub::new(HubSettings::default(), 1);
    for (i, region) in ["US", "EU"].into_iter().enumerate() {
        let id = Identity::device(format!("d{i}"));
        let _ = hub.create_device(Device::new(id.device_id.clone()), now);
        let tags = serde_json::json!({"location": {"region": region}, "n": i, "list": [i, "x"]});
        if let serde_json::Value::Object(tags) = tags {
            let _ = hub.update_twin(&id, &TwinWrite::tags(tags), None, now);
        }
        if let serde_json::Value::Object(reported) = serde_json::json!({"battery": 20 * i}) {
            let _ = hub.update_reported_properties(&id, &reported, now);
        }
    }
    let _ = hub.create_module(iothub_protocol::module::Module::new("d0", "m0"), now);
    hub
}

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every fuzz target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("amqp_frames", amqp_frames),
    ("amqp_sasl", amqp_sasl),
    ("amqp_addresses", amqp_addresses),
    ("amqp_messages", amqp_messages),
    ("mqtt_packets", mqtt_packets),
    ("mqtt_topic", mqtt_topic),
    ("http_headers", http_headers),
    ("http_bodies", http_bodies),
    ("credentials", credentials),
    ("queries", queries),
];

/// The corpus directory of fuzz target `target`, for the seed tests.
#[cfg(test)]
pub(crate) fn corpus_dir(target: &str) -> String {
    format!("{}/../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"))
}

/// The committed corpus file `name` of fuzz target `target`, for the seed tests.
#[cfg(test)]
pub(crate) fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/{name}", corpus_dir(target));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

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

    /// The query seeds are queries the hub answers (one with a token it refuses), so the
    /// fuzzer starts from the parser's and the evaluator's far ends, not from its errors.
    #[test]
    fn the_query_seeds_are_queries_the_hub_answers() {
        let root = super::corpus_dir("queries");
        let hub = super::small_hub();
        let mut answered = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let (query, token) = text.split_once('\n').unwrap_or((&text, ""));
            let page = hub.query_twins(query, 1, Some(token));
            if token.is_empty() {
                let page = page.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert!(!page.items.is_empty(), "{path:?} matches nothing");
                answered += 1;
            } else {
                assert!(page.is_err(), "{path:?}: a made-up token is refused");
            }
        }
        assert!(answered >= 4);
    }
}
