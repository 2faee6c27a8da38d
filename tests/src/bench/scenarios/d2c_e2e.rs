//! D2C end to end (issue 14): devices publish QoS 1 telemetry over MQTT/TLS while a back end
//! reads it; the emulator's Event Hubs-compatible endpoint against mosquitto forwarding to a
//! subscriber, in the same run, with the ratios.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{MAX_MESSAGES, connect_note, emulator_rig_options, ids, lengths};
use crate::bench::emulator;
use crate::bench::events::{self, EventOutcome, EventPlan, PARTITIONS, Reader};
use crate::bench::load::{Fleet, Target};
use crate::bench::mosquitto::{self, Mosquitto};
use crate::bench::report::{Table, int, json_line, verdict};
use crate::bench::sys::{self, round1, round3};
use crate::bench::{BenchResult, Cli, Mode, ReaderKind};

/// Targets from issue 14.
const TARGET_PER_S: f64 = 100_000.0;
const TARGET_P99_MS: f64 = 10.0;
const TARGET_RATIO: f64 = 1.0;
/// The fixed rate of the latency run, events/s over all devices.
const FIXED_RATE: f64 = 10_000.0;
const DEVICES: usize = 100;
/// Sends outstanding per device in the full-speed run (as in the `d2c` scenario).
const INFLIGHT: usize = 16;
/// The event log's bound per partition: above what a full-mode run sends, so that a reader
/// that falls behind at full speed loses nothing to the bound (the default, 100,000, would
/// trim events it has not read yet).
const EVENTS_PER_PARTITION: usize = 2_000_000;

fn plans(mode: Mode, payload: usize) -> Vec<(&'static str, EventPlan)> {
    let len = lengths(mode);
    vec![
        (
            "full speed",
            EventPlan {
                devices: DEVICES,
                inflight: INFLIGHT,
                rate: None,
                duration: len.run,
                max_messages: MAX_MESSAGES,
                payload,
            },
        ),
        (
            "10,000 events/s",
            EventPlan {
                devices: DEVICES,
                inflight: 1,
                rate: Some(FIXED_RATE),
                duration: len.fixed_rate,
                max_messages: MAX_MESSAGES,
                payload,
            },
        ),
    ]
}

/// A short closed-loop run whose figures are thrown away: connections, TLS sessions and
/// allocator pools warm up before anything is measured.
fn warm_up(payload: usize) -> EventPlan {
    EventPlan {
        devices: DEVICES,
        inflight: 4,
        rate: None,
        duration: Duration::from_millis(500),
        max_messages: MAX_MESSAGES,
        payload,
    }
}

fn outcome_json(o: &EventOutcome) -> Value {
    json!({
        "acked": o.acked,
        "received": o.received,
        "acked_per_s": round1(o.acked_per_s),
        "received_per_s": round1(o.received_per_s),
        "latency": o.latency.json(),
        "cpu": o.cpu.json(),
        "failed": o.failed,
        "first_error": o.first_error,
        "drained": o.drained,
        "reader_error": o.reader_error,
    })
}

/// Server CPU and write system calls per event received: what batching changes, and figures
/// that hold up on a busy machine better than rates do.
fn per_event(o: &EventOutcome) -> String {
    let n = o.received.max(1) as f64;
    format!(
        "{:.1} · {:.2}",
        o.cpu.server * 1e6 / n,
        o.cpu.server_writes as f64 / n
    )
}

fn notes(o: &EventOutcome) -> String {
    let mut n = Vec::new();
    if !o.drained {
        n.push(format!(
            "NOT DRAINED ({} of {} acked received)",
            o.received, o.acked
        ));
    }
    if o.failed > 0 {
        n.push(format!(
            "{} failed: {}",
            o.failed,
            o.first_error.as_deref().unwrap_or("?")
        ));
    }
    if let Some(e) = &o.reader_error {
        n.push(format!("reader stopped: {e}"));
    }
    if let Some(x) = o.cpu.noise() {
        n.push(x);
    }
    n.join("; ")
}

/// Runs every plan against one server's fleet and reader.
async fn runs(
    fleet: &Fleet,
    reader: &mut Reader,
    plans: &[(&'static str, EventPlan)],
    payload: usize,
    pid: u32,
) -> Vec<EventOutcome> {
    let _ = events::run_events(fleet, reader, &warm_up(payload), pid).await;
    let mut out = Vec::new();
    for (_, plan) in plans {
        out.push(events::run_events(fleet, reader, plan, pid).await);
    }
    out
}

/// The scenario.
pub(super) async fn d2c_e2e(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let plans = plans(mode, cli.payload);
    let mosquitto_bin = mosquitto::locate(cli.mosquitto_bin.as_deref())?;
    let mut connects = Vec::new();

    // The emulator: devices over MQTT/TLS, one AMQP consumer over TLS on the Event Hubs
    // endpoint.
    let emu_out = {
        let mut rig = emulator_rig_options(
            cli,
            emulator::Options {
                devices: DEVICES,
                mqtt_inflight: cli.mqtt_inflight,
                max_events_per_partition: EVENTS_PER_PARTITION,
                ..emulator::Options::default()
            },
        )
        .await?;
        let c = rig
            .fleet
            .connect(
                &rig.target,
                ids(0..DEVICES),
                cli.connect_concurrency,
                usize::MAX,
            )
            .await;
        connects.push(connect_note("emulator fleet", &c));
        let mut reader = match cli.reader {
            ReaderKind::Lean => Reader::event_hubs_lean(&rig.emu, cli.consumer_connections).await?,
            ReaderKind::Fe2o3 => Reader::event_hubs(&rig.emu, cli.consumer_connections).await?,
        };
        let out = runs(&rig.fleet, &mut reader, &plans, cli.payload, rig.emu.pid).await;
        reader.close().await;
        rig.finish().await;
        out
    };

    // mosquitto: the same DeviceClient fleet; one MQTT subscriber reads.
    let mos_out = {
        let m = Mosquitto::start(&mosquitto_bin, cli.mqtt_inflight)?;
        eprintln!("bench: {} pid {} on port {}", m.version, m.pid, m.port);
        let target = Target {
            port: m.port,
            ca_pem: m.ca_pem.clone(),
            connection_string: Arc::new(|id: &str| {
                format!(
                    "HostName=localhost;DeviceId={id};SharedAccessKey={}",
                    emulator::DEVICE_KEY
                )
            }),
        };
        let mut reader = Reader::mqtt(m.port, &m.ca_pem).await?;
        let mut fleet = Fleet::new();
        let c = fleet
            .connect(
                &target,
                ids(0..DEVICES),
                cli.connect_concurrency,
                usize::MAX,
            )
            .await;
        connects.push(connect_note("mosquitto fleet", &c));
        if c.connected < DEVICES {
            return Err(format!(
                "only {} devices connected to mosquitto: {}",
                c.connected,
                c.first_error.unwrap_or_default()
            ));
        }
        let out = runs(&fleet, &mut reader, &plans, cli.payload, m.pid).await;
        fleet.close().await;
        reader.close().await;
        out
    };

    let mut table = Table::new(
        format!(
            "D2C end to end ({} mode): {DEVICES} MQTT/TLS devices publish QoS 1 → server → a reader; emulator vs mosquitto in the same run",
            mode.name()
        ),
        &[
            "run",
            "server → reader",
            "acked/s",
            "received/s",
            "send→receive p50/p99/max ms",
            "CPU server/load/machine",
            "server CPU µs · writes per event",
            "emulator/mosquitto",
            "notes",
        ],
    );
    let mut json_runs = Vec::new();
    for (((label, plan), e), m) in plans.iter().zip(&emu_out).zip(&mos_out) {
        let ratio = e.received_per_s / m.received_per_s.max(1e-9);
        table.row(vec![
            (*label).to_owned(),
            "emulator → Event Hubs consumer".into(),
            int(e.acked_per_s),
            int(e.received_per_s),
            e.latency.text(),
            e.cpu.text(),
            per_event(e),
            format!("{ratio:.2}"),
            notes(e),
        ]);
        table.row(vec![
            (*label).to_owned(),
            "mosquitto → MQTT subscriber".into(),
            int(m.acked_per_s),
            int(m.received_per_s),
            m.latency.text(),
            m.cpu.text(),
            per_event(m),
            String::new(),
            notes(m),
        ]);
        json_runs.push(json!({
            "run": label,
            "devices": plan.devices,
            "inflight_per_device": plan.rate.is_none().then_some(plan.inflight),
            "rate": plan.rate,
            "emulator": outcome_json(e),
            "mosquitto": outcome_json(m),
            "ratio_received_per_s": round3(ratio),
        }));
    }
    for c in connects {
        table.note(c);
    }

    let full = emu_out.first();
    let fixed = emu_out.get(1);
    let best = full.map_or(0.0, |o| o.received_per_s);
    let ratio = match (full, mos_out.first()) {
        (Some(e), Some(m)) => e.received_per_s / m.received_per_s.max(1e-9),
        _ => 0.0,
    };
    let p99 = fixed.map_or(f64::INFINITY, |o| o.latency.p99 as f64 / 1000.0);
    table.note(format!(
        "target ≥ {} events/s end to end with {DEVICES} devices: {} ({})",
        int(TARGET_PER_S),
        verdict(Some(best >= TARGET_PER_S)),
        int(best)
    ));
    table.note(format!(
        "target p99 send→receive < {TARGET_P99_MS} ms at {} events/s: {} ({p99:.2} ms)",
        int(FIXED_RATE),
        verdict(Some(p99 < TARGET_P99_MS))
    ));
    table.note(format!(
        "target end to end ≥ {TARGET_RATIO} × mosquitto at full speed: {} ({ratio:.2})",
        verdict(Some(ratio >= TARGET_RATIO))
    ));
    table.note(format!(
        "devices are the project's DeviceClient (send_event resolves on PUBACK), {INFLIGHT} in flight each at full speed; {}-byte bodies stamped with the send time; the emulator's reader ({}: --reader) has a receiver on each of its {PARTITIONS} partitions (credit 2,000, pre-settled) over {} AMQP/TLS connection(s) (--consumer-connections), and its event log keeps {EVENTS_PER_PARTITION} events per partition; mosquitto's is one MQTT/TLS subscriber at QoS 0 on devices/+/messages/events/#; received/s counts from the first send to the last receive; CPU in % of one core ({} CPUs)",
        cli.payload,
        match cli.reader {
            ReaderKind::Lean => "lean: frames walked, only the body taken",
            ReaderKind::Fe2o3 => "fe2o3's receiver, every message decoded",
        },
        cli.consumer_connections.clamp(1, PARTITIONS),
        sys::cpus()
    ));
    table.print();
    json_line(
        "d2c-e2e",
        mode.name(),
        json!({
            "payload": cli.payload,
            "partitions": PARTITIONS,
            "reader": format!("{:?}", cli.reader).to_lowercase(),
            "runs": json_runs,
            "targets": {
                "per_s": {"target": TARGET_PER_S, "value": round1(best), "met": best >= TARGET_PER_S},
                "p99_ms_at_10000": {"target": TARGET_P99_MS, "value": p99, "met": p99 < TARGET_P99_MS},
                "ratio": {"target": TARGET_RATIO, "value": round3(ratio), "met": ratio >= TARGET_RATIO},
            },
        }),
    );
    Ok(())
}
