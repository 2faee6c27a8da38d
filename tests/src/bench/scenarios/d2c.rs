//! Scenario 3: D2C: QoS 1 telemetry as fast as PUBACKs allow.

use serde_json::{Value, json};

use super::{MAX_MESSAGES, connect_json, connect_note, emulator_rig, ids, lengths};
use crate::bench::load::{self, D2cOutcome, D2cPlan};
use crate::bench::report::{Table, int, json_line, verdict};
use crate::bench::sys::round1;
use crate::bench::{BenchResult, Cli, Mode};

/// Target from issue 9.
const TARGET_D2C_PER_S: f64 = 50_000.0;

fn d2c_row(label: &str, o: &D2cOutcome) -> Vec<String> {
    let mut notes = Vec::new();
    if o.failed > 0 {
        notes.push(format!(
            "{} failed: {}",
            o.failed,
            o.first_error.as_deref().unwrap_or("?")
        ));
    }
    if o.drops > 0 {
        notes.push(format!("{} device connection(s) dropped", o.drops));
    }
    if let Some(n) = o.cpu.noise() {
        notes.push(n);
    }
    let notes = notes.join("; ");
    vec![
        label.to_owned(),
        int(o.sent as f64),
        int(o.per_s),
        o.latency.text(),
        o.cpu.text(),
        notes,
    ]
}

pub(super) fn d2c_json(label: &str, plan: &D2cPlan, o: &D2cOutcome) -> Value {
    json!({
        "run": label,
        "devices": plan.devices,
        "inflight_per_device": plan.inflight,
        "sent": o.sent,
        "per_s": round1(o.per_s),
        "puback_latency": o.latency.json(),
        "cpu": o.cpu.json(),
        "failed": o.failed,
        "first_error": o.first_error,
        "connection_drops": o.drops,
    })
}

const D2C_HEADER: [&str; 6] = [
    "run",
    "acked",
    "msgs/s",
    "PUBACK latency p50/p99/max ms",
    "CPU server/load/machine",
    "notes",
];

pub(super) fn d2c_plans(mode: Mode, payload: usize) -> Vec<(String, D2cPlan)> {
    let run = lengths(mode).run;
    [(1, 1), (100, 1), (100, 16)]
        .into_iter()
        .map(|(devices, inflight)| {
            (
                format!("{devices} device(s) × {inflight} in flight"),
                D2cPlan {
                    devices,
                    inflight,
                    duration: run,
                    max_messages: MAX_MESSAGES,
                    payload,
                },
            )
        })
        .collect()
}

/// Scenario 3: D2C.
pub(super) async fn d2c(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let mut rig = emulator_rig(cli, 100).await?;
    let c = rig
        .fleet
        .connect(
            &rig.target,
            ids(0..100),
            cli.connect_concurrency,
            usize::MAX,
        )
        .await;
    let mut table = Table::new(
        format!(
            "D2C ({} mode): QoS 1 telemetry from MQTT/TLS devices as fast as PUBACKs allow",
            mode.name()
        ),
        &D2C_HEADER,
    );
    table.note(connect_note("fleet", &c));
    let mut runs = Vec::new();
    let mut best: f64 = 0.0;
    for (label, plan) in d2c_plans(mode, cli.payload) {
        let o = load::run_d2c(&rig.fleet, &plan, rig.emu.pid).await;
        best = best.max(o.per_s);
        table.row(d2c_row(&label, &o));
        runs.push(d2c_json(&label, &plan, &o));
    }
    table.note(format!(
        "target ≥ {} msgs/s: {} (best {})",
        int(TARGET_D2C_PER_S),
        verdict(Some(best >= TARGET_D2C_PER_S)),
        int(best)
    ));
    table.note(format!(
        "devices are the project's DeviceClient (send_event resolves on PUBACK); {}-byte bodies; the emulator keeps the last 100 per device",
        cli.payload
    ));
    table.print();
    json_line(
        "d2c",
        mode.name(),
        json!({
            "payload": cli.payload,
            "connect": connect_json(&c),
            "runs": runs,
            "targets": {"per_s": {"target": TARGET_D2C_PER_S, "value": round1(best), "met": best >= TARGET_D2C_PER_S}},
        }),
    );
    rig.finish().await;
    Ok(())
}
