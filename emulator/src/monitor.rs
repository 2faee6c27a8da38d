//! `iothub-emulator monitor`: prints device telemetry as it arrives, like
//! `az iot hub monitor-events`, read from the built-in Event Hubs-compatible endpoint with the
//! project's own consumer ([`iothub_service::events`]).
//!
//! Without `--connection-string` it reads the emulator the other flags describe (host name,
//! `--eventhubs-port`, the `service` policy of `--config`) over the plain development listener,
//! so no CA is needed. Given a connection string (an IoT Hub one, or an Event Hubs-compatible
//! one), it reads that hub instead, real or emulated.
//!
//! Each event is one JSON document, in the shape `az iot hub monitor-events` prints:
//! `{"event": {"origin": <device>, "module": <module>, "payload": <body>, "properties":
//! {"system": {...}, "application": {...}}}}`. A JSON body is printed as JSON, other UTF-8 as a
//! string, anything else as base64 (with `"payload_encoding": "base64"`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use iothub_service::events::{Event, EventConsumer, EventPosition};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;

/// The `monitor` subcommand's flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MonitorArgs {
    /// Only this device's events.
    #[arg(long, short = 'd')]
    pub device: Option<String>,

    /// Only this module's events (with --device, that device's module).
    #[arg(long, short = 'm')]
    pub module: Option<String>,

    /// Consumer group to read as.
    #[arg(long, short = 'g', default_value = "$Default")]
    pub consumer_group: String,

    /// Where to start: `latest` (only new events), `earliest` (everything retained), or an
    /// enqueued time (RFC 3339, e.g. 2026-01-01T12:00:00Z).
    #[arg(long, default_value = "latest", value_parser = parse_start)]
    pub from: Start,

    /// Read this hub instead of the local emulator: an IoT Hub service connection string or an
    /// Event Hubs-compatible one.
    #[arg(long)]
    pub connection_string: Option<String>,

    /// Extra CA to trust (PEM file) for a TLS connection [default: the emulator's CA, and
    /// IOTHUB_CA_CERT].
    #[arg(long)]
    pub ca: Option<PathBuf>,

    /// Also print the event's annotations (iothub-enqueuedtime, x-opt-sequence-number, ...).
    #[arg(long)]
    pub annotations: bool,

    /// One line per event instead of indented JSON.
    #[arg(long)]
    pub compact: bool,

    /// Stop after this many seconds without an event (0: never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,

    /// Stop after printing this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

/// Where `monitor` starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only events enqueued after start-up.
    Latest,
    /// Every retained event.
    Earliest,
    /// Events enqueued at or after this time.
    Time(OffsetDateTime),
}

impl Start {
    /// The consumer's position for this start.
    pub fn position(self) -> EventPosition {
        match self {
            Start::Latest => EventPosition::Latest,
            Start::Earliest => EventPosition::Earliest,
            Start::Time(t) => EventPosition::EnqueuedTime {
                unix_ms: i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                inclusive: true,
            },
        }
    }
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "latest" | "now" => Ok(Start::Latest),
        "earliest" | "start" => Ok(Start::Earliest),
        _ => OffsetDateTime::parse(s.trim(), &Rfc3339)
            .map(Start::Time)
            .map_err(|_| {
                "use latest, earliest or an RFC 3339 time such as 2026-01-01T12:00:00Z".to_owned()
            }),
    }
}

/// True when `event` passes the `--device` and `--module` filters.
pub fn selected(event: &Event, device: Option<&str>, module: Option<&str>) -> bool {
    device.is_none_or(|d| event.device_id.as_deref() == Some(d))
        && module.is_none_or(|m| event.module_id.as_deref() == Some(m))
}

/// The JSON document `monitor` prints for an event.
pub fn event_json(event: &Event, annotations: bool) -> Value {
    let mut e = Map::new();
    e.insert(
        "origin".into(),
        json!(event.device_id.as_deref().unwrap_or("")),
    );
    e.insert(
        "module".into(),
        json!(event.module_id.as_deref().unwrap_or("")),
    );
    let annotation = |k: &str| event.system_properties.get(k).cloned().unwrap_or_default();
    e.insert("interface".into(), json!(annotation("dt-dataschema")));
    e.insert("component".into(), json!(annotation("dt-subject")));
    match std::str::from_utf8(event.body()) {
        Ok(text) => {
            let parsed = serde_json::from_str::<Value>(text).ok();
            e.insert("payload".into(), parsed.unwrap_or_else(|| json!(text)));
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(event.body());
            e.insert("payload".into(), json!(encoded));
            e.insert("payload_encoding".into(), json!("base64"));
        }
    }
    let mut system = Map::new();
    let s = &event.message.system;
    let mut put = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            system.insert(name.into(), json!(v));
        }
    };
    put("message_id", event.message_id());
    put("correlation_id", event.correlation_id());
    put("user_id", s.user_id.clone());
    put("content_type", s.content_type.clone());
    put("content_encoding", s.content_encoding.clone());
    let application: Map<String, Value> = event
        .properties()
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    if !system.is_empty() || !application.is_empty() {
        e.insert(
            "properties".into(),
            json!({ "system": system, "application": application }),
        );
    }
    if annotations {
        let all: Map<String, Value> = event
            .system_properties
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        e.insert("annotations".into(), Value::Object(all));
    }
    json!({ "event": e })
}

/// The text `monitor` prints for an event (indented, or one line with `compact`).
pub fn format_event(event: &Event, annotations: bool, compact: bool) -> String {
    let v = event_json(event, annotations);
    let text = if compact {
        serde_json::to_string(&v)
    } else {
        serde_json::to_string_pretty(&v)
    };
    text.unwrap_or_default()
}

/// What went wrong in `monitor`, for its one-line error message.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The configuration names no `service` policy to read with.
    #[error("the configuration has no 'service' policy; pass --connection-string")]
    NoPolicy,
    /// The consumer failed.
    #[error("{}", iothub_service::display_chain(.0))]
    Consumer(#[from] iothub_service::Error),
    /// Writing the output failed (a closed pipe ends the command quietly).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Reads and prints events until `--count` or `--timeout`, or forever.
pub async fn run(
    args: &MonitorArgs,
    config: &Config,
    ca_pem: Option<String>,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    let connection_string = match &args.connection_string {
        Some(cs) => cs.clone(),
        None => config
            .eventhub_connection_string(Some(config.ports.eventhubs))
            .ok_or(MonitorError::NoPolicy)?,
    };
    let mut builder =
        EventConsumer::builder(&connection_string)?.consumer_group(args.consumer_group.clone());
    if let Some(pem) = ca_pem {
        builder = builder.trust_ca_pem(pem);
    }
    if let Some(path) = &args.ca {
        builder = builder.trust_ca_file(path);
    }
    let consumer = builder.build()?;
    let mut events = consumer.receive_all(args.from.position()).await?;
    let idle = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let mut printed = 0usize;
    let result = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, events.next()).await {
                Ok(n) => n,
                Err(_) => break Ok(()),
            },
            None => events.next().await,
        };
        let event = match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(MonitorError::from(e)),
            Some(Ok(e)) => e,
        };
        if !selected(&event, args.device.as_deref(), args.module.as_deref()) {
            continue;
        }
        let text = format_event(&event, args.annotations, args.compact);
        if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
            break if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e.into())
            };
        }
        printed += 1;
    };
    drop(events);
    consumer.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("EARLIEST"), Ok(Start::Earliest));
        let t = parse_start("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            t.position(),
            EventPosition::EnqueuedTime {
                unix_ms: 1_767_225_600_000,
                inclusive: true
            }
        );
        assert!(parse_start("yesterday").is_err());
    }
}
