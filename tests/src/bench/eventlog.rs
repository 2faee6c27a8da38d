//! The event log without sockets: what appending telemetry and finding a start position cost
//! when a partition holds 10,000 events and when it holds 1,000,000.
//!
//! One partition, bounds and retention out of the way, 32-byte bodies from one device,
//! virtual time moving 10 µs per message (so a millisecond holds 100 events, as under load).
//! Append: `Hub::send_telemetry` for the last 10,000 messages of the fill. Positions: 10,000
//! cursors resolved at random sequence numbers, offsets and enqueued times. Reading: ns per
//! event through `read_events` in chunks of 100 (a receiver's credit). The anchor, measured in
//! the same run: reaching the middle of the log by reading from the front, which is what a
//! position costs without the index. At 1M events the log no longer fits any cache, so even an
//! O(1) lookup pays a few cold misses; what matters is the distance to the anchor.

use std::time::{Duration, Instant};

use iothub_emulator::hub::event_log::Origin;
use iothub_emulator::hub::{EventLogSettings, Hub, HubSettings};
use iothub_protocol::registry::Device;
use iothub_protocol::{EventPosition, Message};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::report::{Table, int, json_line};
use super::sys::round3;
use super::{BenchResult, Mode};

const SIZES: [usize; 2] = [10_000, 1_000_000];
/// Appends and position lookups timed per size.
const SAMPLES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Costs {
    append_ns: f64,
    seq_ns: f64,
    offset_ns: f64,
    time_ns: f64,
    read_ns_per_event: f64,
    scan_to_middle_ns: f64,
}

impl Costs {
    fn json(&self) -> Value {
        json!({
            "append_ns": round3(self.append_ns),
            "position_sequence_number_ns": round3(self.seq_ns),
            "position_offset_ns": round3(self.offset_ns),
            "position_enqueued_time_ns": round3(self.time_ns),
            "read_ns_per_event": round3(self.read_ns_per_event),
            "anchor_scan_to_middle_ns": round3(self.scan_to_middle_ns),
        })
    }
}

/// A small deterministic generator for the positions (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn per_op(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

fn measure(events: usize) -> BenchResult<Costs> {
    let settings = HubSettings {
        event_log: EventLogSettings {
            partition_count: 1,
            retention: Duration::from_secs(7 * 86_400),
            max_events_per_partition: 10_000_000,
            max_bytes_per_partition: 4 << 30,
            consumer_groups: Vec::new(),
        },
        ..HubSettings::default()
    };
    let mut hub = Hub::new(settings, 11);
    let mut now = OffsetDateTime::now_utc();
    hub.create_device(Device::new("bench-device"), now)
        .map_err(|e| e.to_string())?;
    let origin = Origin::device("bench-device");
    let body = vec![b'x'; 32];
    let mut append = Duration::ZERO;
    for i in 0..events {
        now += Duration::from_micros(10);
        let timed = i >= events - SAMPLES.min(events);
        let t = Instant::now();
        hub.send_telemetry(&origin, Message::new(body.clone()), now)
            .map_err(|e| e.to_string())?;
        if timed {
            append += t.elapsed();
        }
        while hub.poll_event().is_some() {}
    }
    // Where the events are, to aim the positions at real ones.
    let mut all = hub
        .cursor("0", &EventPosition::Earliest)
        .map_err(|e| e.to_string())?;
    let mut offsets = Vec::with_capacity(events);
    let mut times = Vec::with_capacity(events);
    let t = Instant::now();
    loop {
        let chunk = hub.read_events(&mut all, 100);
        if chunk.is_empty() {
            break;
        }
        for e in &chunk {
            offsets.push(e.offset);
            times.push(e.enqueued_ms());
        }
    }
    let read_ns_per_event = per_op(t.elapsed(), events);
    // The anchor: to the middle by reading from the front, a few times.
    let t = Instant::now();
    for _ in 0..3 {
        let mut c = hub
            .cursor("0", &EventPosition::Earliest)
            .map_err(|e| e.to_string())?;
        let mut skipped = 0;
        while skipped < events / 2 {
            skipped += hub.read_events(&mut c, 100).len();
        }
    }
    let scan_to_middle_ns = per_op(t.elapsed(), 3);
    let mut rng = Lcg(events as u64);
    let mut time_positions = |make: &mut dyn FnMut(usize) -> EventPosition| -> BenchResult<f64> {
        let positions: Vec<EventPosition> = (0..SAMPLES).map(|_| make(rng.below(events))).collect();
        let t = Instant::now();
        let mut cursors = Vec::with_capacity(SAMPLES);
        for p in &positions {
            cursors.push(hub.cursor("0", p).map_err(|e| e.to_string())?);
        }
        let elapsed = t.elapsed();
        // Every position names a retained event, so every cursor has one to read.
        if !cursors.iter().all(|c| hub.has_events(c)) {
            return Err("a position resolved past its event".into());
        }
        Ok(per_op(elapsed, SAMPLES))
    };
    let seq_ns = time_positions(&mut |k| EventPosition::SequenceNumber {
        sequence_number: k as i64,
        inclusive: true,
    })?;
    let offset_ns = time_positions(&mut |k| EventPosition::Offset {
        offset: offsets[k].to_string(),
        inclusive: true,
    })?;
    let time_ns = time_positions(&mut |k| EventPosition::EnqueuedTime {
        unix_ms: times[k],
        inclusive: true,
    })?;
    Ok(Costs {
        append_ns: per_op(append, SAMPLES.min(events)),
        seq_ns,
        offset_ns,
        time_ns,
        read_ns_per_event,
        scan_to_middle_ns,
    })
}

/// Prints the event log table and its JSON line.
pub fn run(mode: Mode) -> BenchResult<()> {
    let mut table = Table::new(
        format!(
            "Event log without sockets ({} mode): ns per operation, one partition",
            mode.name()
        ),
        &[
            "events",
            "append ns",
            "resolve seq ns",
            "resolve offset ns",
            "resolve time ns",
            "read ns/event",
            "anchor: scan to middle µs",
        ],
    );
    let mut costs = Vec::new();
    for events in SIZES {
        let c = measure(events)?;
        table.row(vec![
            int(events as f64),
            int(c.append_ns),
            int(c.seq_ns),
            int(c.offset_ns),
            int(c.time_ns),
            int(c.read_ns_per_event),
            int(c.scan_to_middle_ns / 1000.0),
        ]);
        costs.push(c);
    }
    let ratio = |f: fn(&Costs) -> f64| f(&costs[1]) / f(&costs[0]).max(1e-9);
    let ratios = [
        ratio(|c| c.append_ns),
        ratio(|c| c.seq_ns),
        ratio(|c| c.offset_ns),
        ratio(|c| c.time_ns),
    ];
    let worst = costs[1]
        .seq_ns
        .max(costs[1].offset_ns)
        .max(costs[1].time_ns);
    table.note(format!(
        "1M vs 10k events: append {:.2}×, resolve sequence number {:.2}×, offset {:.2}×, enqueued time {:.2}× (cache misses: the 1M log does not fit any cache); the slowest 1M resolve is {:.0}× faster than scanning to the middle",
        ratios[0],
        ratios[1],
        ratios[2],
        ratios[3],
        costs[1].scan_to_middle_ns / worst.max(1e-9)
    ));
    table.print();
    json_line(
        "event_log",
        mode.name(),
        json!({
            "sizes": SIZES,
            "samples": SAMPLES,
            "costs": costs.iter().map(Costs::json).collect::<Vec<_>>(),
            "ratio_1m_over_10k": {
                "append": round3(ratios[0]),
                "sequence_number": round3(ratios[1]),
                "offset": round3(ratios[2]),
                "enqueued_time": round3(ratios[3]),
            },
        }),
    );
    Ok(())
}
