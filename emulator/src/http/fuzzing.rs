//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: message properties
//! from HTTP headers, and the JSON bodies the REST routes read, applied to a hub.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use iothub_protocol::bulk::ExportImportDevice;
use iothub_protocol::method::CloudToDeviceMethod;
use iothub_protocol::module::Module;
use iothub_protocol::query::QuerySpecification;
use iothub_protocol::registry::Device;
use iothub_protocol::twin::{TwinWrite, reported_patch_from_json};
use serde_json::Value;
use time::OffsetDateTime;

use super::extract::parse_json;
use super::{d2c, message_headers};
use crate::hub::{Identity, Origin};

/// `data` as header lines (`name: value`), turned into a message as the D2C and C2D routes do.
pub fn headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(m) = message_headers::message_from_headers(&headers, data.to_vec()) {
        let _ = message_headers::devicebound_headers(&m);
    }
}

/// `data` as the body of every JSON route, read as that route reads it and handed to a hub
/// with devices and module `d0/m0` ([`crate::fuzzing::small_hub`]): a D2C batch, a device and a module, a twin PATCH and
/// PUT (and a device's reported patch, which MQTT and AMQP read the same way) on the device
/// and the module, a query, a bulk registry write and a direct method call. Afterwards the
/// twins must still serialise and a query over them still run.
pub fn bodies(data: &[u8]) {
    let _ = body_outcomes(data);
}

/// What each reader of [`bodies`] made of `data`: for the seed tests, the routes that took it
/// (their names) and the ones that refused it.
fn body_outcomes(data: &[u8]) -> Vec<(&'static str, bool)> {
    let now = OffsetDateTime::UNIX_EPOCH;
    let mut hub = crate::fuzzing::small_hub();
    let ids = [Identity::device("d0"), Identity::module("d0", "m0")];
    let mut out = Vec::new();

    let batch = d2c::parse_batch(data)
        .and_then(|batch| hub.send_telemetry_batch(&Origin::device("d0"), batch, now));
    out.push(("d2c batch", batch.is_ok()));
    let device = parse_json::<Device>(data, "device").and_then(|d| hub.put_device(d, None, now));
    out.push(("device", device.is_ok()));
    let module = parse_json::<Module>(data, "module").and_then(|m| hub.put_module(m, None, now));
    out.push(("module", module.is_ok()));
    if let Ok(value) = parse_json::<Value>(data, "JSON") {
        for id in &ids {
            let write = TwinWrite::from_json(&value);
            let patched = write
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|w| hub.update_twin(id, w, None, now));
            out.push(("twin patch", patched.is_ok()));
            let replaced = write.and_then(|w| hub.replace_twin(id, &w, Some("*"), now));
            out.push(("twin replace", replaced.is_ok()));
            let reported = reported_patch_from_json(&value)
                .and_then(|p| hub.update_reported_properties(id, &p, now));
            out.push(("reported patch", reported.is_ok()));
            if let Ok(twin) = hub.get_twin(id) {
                let _ = serde_json::to_vec(&twin);
            }
            let _ = hub.get_twin_properties(id).map(|p| serde_json::to_vec(&p));
        }
        let _ = hub.query_twins("SELECT * FROM devices WHERE tags.a = 1", 100, None);
    }
    let query = parse_json::<QuerySpecification>(data, "query")
        .and_then(|spec| hub.query_twins(&spec.query, 100, None));
    out.push(("query", query.is_ok()));
    let bulk = parse_json::<Vec<ExportImportDevice>>(data, "bulk")
        .and_then(|ops| hub.bulk_registry(&ops, now));
    out.push(("bulk", bulk.is_ok()));
    let call = CloudToDeviceMethod::from_json(data).and_then(|m| m.into_call());
    out.push(("method call", call.is_ok()));
    if let Ok(call) = call {
        // Nobody is subscribed: a call with a connect timeout waits for the device.
        let _ = hub.invoke_method(&ids[0], call, now);
    }
    out
}

#[cfg(test)]
mod tests {
    fn seed(name: &str) -> Vec<u8> {
        crate::fuzzing::seed("http_bodies", name)
    }

    /// Each hand-written seed is taken by the route it is named for, so the fuzzer starts from
    /// bodies that reach the hub's rules rather than the JSON parser's refusals.
    #[test]
    fn the_seeds_reach_the_routes_they_are_named_for() {
        for (name, routes) in [
            ("d2c_batch", &["d2c batch"][..]),
            ("device", &["device"]),
            ("module", &["module"]),
            ("twin", &["twin patch", "twin replace"]),
            ("reported", &["reported patch"]),
            ("query", &["query"]),
            ("bulk", &["bulk"]),
            ("method", &["method call"]),
        ] {
            let outcomes = super::body_outcomes(&seed(name));
            for route in routes {
                assert!(
                    outcomes.iter().any(|(r, ok)| r == route && *ok),
                    "{name}: {route} refused it: {outcomes:?}"
                );
            }
        }
    }
}
