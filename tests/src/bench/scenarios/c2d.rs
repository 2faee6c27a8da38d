//! Scenario 1: C2D end to end: AMQP senders -> hub -> MQTT/TLS devices, with feedback.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    EmulatorRig, MAX_MESSAGES, PER_DEVICE_CREDIT, connect_json, connect_note, emulator_rig, ids,
    lengths,
};
use crate::bench::load::{self, C2dOutcome, C2dPlan};
use crate::bench::report::{self, Table, int, json_line, verdict};
use crate::bench::sys::{self, round1};
use crate::bench::{BenchResult, Cli};

/// Target from issue 9.
const TARGET_C2D_PER_S: f64 = 20_000.0;

/// Target from issue 9.
const TARGET_C2D_P99_MS: f64 = 5.0;

pub(super) fn c2d_json(label: &str, devices: usize, o: &C2dOutcome) -> Value {
    json!({
        "run": label,
        "devices": devices,
        "accepted": o.accepted,
        "delivered": o.delivered,
        "feedback_records": o.feedback,
        "accepted_per_s": round1(o.accepted_per_s),
        "delivered_per_s": round1(o.delivered_per_s),
        "feedback_per_s": round1(o.feedback_per_s),
        "latency": o.latency.json(),
        "schedule_lag": o.schedule_lag.map(|l| l.json()),
        "cpu": o.cpu.json(),
        "queue_full": o.queue_full,
        "failed": o.failed,
        "first_error": o.first_error,
        "drained": o.drained,
        "connection_drops": o.drops,
    })
}

fn c2d_row(label: &str, o: &C2dOutcome, feedback: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(n) = o.cpu.noise() {
        notes.push(n);
    }
    if let Some(lag) = o.schedule_lag {
        notes.push(format!(
            "sends started {} ms late at p99 (load generator timer)",
            report::ms(lag.p99)
        ));
    }
    if !o.drained {
        notes.push(format!(
            "NOT DRAINED ({} delivered of {})",
            o.delivered, o.accepted
        ));
    }
    if o.queue_full > 0 {
        notes.push(format!("{} queue-full (403004, retried)", o.queue_full));
    }
    if o.drops > 0 {
        notes.push(format!("{} device connection(s) dropped", o.drops));
    }
    if o.failed > 0 {
        notes.push(format!(
            "{} failed: {}",
            o.failed,
            o.first_error.as_deref().unwrap_or("?")
        ));
    }
    vec![
        label.to_owned(),
        int(o.accepted as f64),
        int(o.accepted_per_s),
        int(o.delivered_per_s),
        if feedback {
            int(o.feedback_per_s)
        } else {
            "n/a".into()
        },
        o.latency.text(),
        o.cpu.text(),
        notes.join("; "),
    ]
}

const C2D_HEADER: [&str; 8] = [
    "run",
    "sent",
    "accepted/s",
    "delivered/s",
    "feedback/s",
    "latency p50/p99/max ms",
    "CPU server/load/machine",
    "notes",
];

/// One run of scenario 1, from `--c2d-runs`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum C2dRun {
    /// Closed loop to this many devices.
    Devices(usize),
    /// Open loop at this rate to 100 devices.
    Rate(f64),
}

fn parse_c2d_runs(list: &str) -> BenchResult<Vec<C2dRun>> {
    list.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| match x.strip_prefix("rate") {
            Some(r) => {
                let r = r.trim_start_matches(['=', ':']);
                let rate = if r.is_empty() {
                    1000.0
                } else {
                    r.parse()
                        .map_err(|_| format!("bad rate in --c2d-runs: {x}"))?
                };
                Ok(C2dRun::Rate(rate))
            }
            None => x
                .replace('_', "")
                .parse()
                .map(C2dRun::Devices)
                .map_err(|_| format!("bad entry in --c2d-runs: {x} (a device count or rate[=N])")),
        })
        .collect()
}

/// Connects the rig's fleet up to `want` devices and sends each a probe message, so a run
/// starts with every device subscribed. Returns the connect figures and a note when some
/// device took no probe.
pub(super) async fn grow_fleet(
    rig: &mut EmulatorRig,
    cli: &Cli,
    want: usize,
) -> (load::ConnectStats, Option<String>) {
    let from = rig.fleet.len();
    let c = rig
        .fleet
        .connect(
            &rig.target,
            ids(from..want),
            cli.connect_concurrency,
            usize::MAX,
        )
        .await;
    let n = rig.fleet.len();
    let probed = rig
        .fleet
        .probe(&rig.senders, n, Duration::from_secs(30), from == 0)
        .await;
    let note = (probed < n).then(|| format!("only {probed} of {n} devices took a probe message"));
    (c, note)
}

/// A C2D run to the first `devices` devices: closed loop, or open loop at `rate`.
pub(super) fn plan(cli: &Cli, devices: usize, duration: Duration, rate: Option<f64>) -> C2dPlan {
    C2dPlan {
        devices,
        duration,
        max_messages: MAX_MESSAGES,
        window: cli.window,
        per_device: PER_DEVICE_CREDIT,
        rate,
        payload: cli.payload,
    }
}

/// Scenario 1: C2D end to end.
pub(super) async fn c2d(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let len = lengths(mode);
    let plan_runs = parse_c2d_runs(&cli.c2d_runs)?;
    let most = plan_runs
        .iter()
        .map(|r| match r {
            C2dRun::Devices(n) => *n,
            C2dRun::Rate(_) => 100,
        })
        .max()
        .unwrap_or(100)
        .max(1);
    let mut rig = emulator_rig(cli, most).await?;
    let mut table = Table::new(
        format!(
            "C2D end to end ({} mode): {} → emulator → MQTT/TLS devices, ack=positive, PUBACK completes",
            mode.name(),
            load::describe(&rig.senders)
        ),
        &C2D_HEADER,
    );
    let mut runs = Vec::new();
    let mut connects = Vec::new();
    let mut d100: Option<C2dOutcome> = None;
    let mut fixed: Option<C2dOutcome> = None;
    for run in plan_runs {
        let (devices, rate, duration, label) = match run {
            C2dRun::Devices(n) => (n, None, len.run, format!("D={}", int(n as f64))),
            C2dRun::Rate(r) => (
                100,
                Some(r),
                len.fixed_rate,
                format!("D=100 at {} msg/s", int(r)),
            ),
        };
        // Grow the fleet to what this run needs (the first 100 at once, then the rest).
        let want = devices.max(100.min(most));
        if rig.fleet.len() < want {
            let from = rig.fleet.len();
            let (c, probe_note) = grow_fleet(&mut rig, cli, want).await;
            table.note(connect_note(&format!("fleet {from}..{want}"), &c));
            connects.push(connect_json(&c));
            if let Some(n) = probe_note {
                table.note(n);
            }
        }
        let plan = plan(cli, devices, duration, rate);
        let o = rig.run_c2d(&plan).await;
        table.row(c2d_row(&label, &o, true));
        runs.push(c2d_json(&label, devices, &o));
        match run {
            C2dRun::Devices(100) => d100 = Some(o),
            C2dRun::Rate(r) if (r - 1000.0).abs() < 1e-9 => fixed = Some(o),
            _ => {}
        }
    }

    let mut targets = serde_json::Map::new();
    if let Some(o) = &d100 {
        let t = o.delivered_per_s.min(o.feedback_per_s);
        table.note(format!(
            "target ≥ {} delivered and fed back per s at D=100: {} ({} / {})",
            int(TARGET_C2D_PER_S),
            verdict(Some(t >= TARGET_C2D_PER_S)),
            int(o.delivered_per_s),
            int(o.feedback_per_s)
        ));
        targets.insert(
            "d100_per_s".into(),
            json!({"target": TARGET_C2D_PER_S, "delivered": round1(o.delivered_per_s), "feedback": round1(o.feedback_per_s), "met": t >= TARGET_C2D_PER_S}),
        );
    }
    if let Some(o) = &fixed {
        let p99 = o.latency.p99 as f64 / 1000.0;
        table.note(format!(
            "target p99 send→delivery < {TARGET_C2D_P99_MS} ms at 1,000 msg/s: {} ({p99:.2} ms)",
            verdict(Some(p99 < TARGET_C2D_P99_MS))
        ));
        targets.insert(
            "p99_ms_at_1000".into(),
            json!({"target": TARGET_C2D_P99_MS, "value": p99, "met": p99 < TARGET_C2D_P99_MS}),
        );
    }
    table.note(format!(
        "settings: queue depth 50, feedback window 100 ms (batches of 64), {} C2D in flight per MQTT connection, {} sends in flight, {} per device, {}-byte bodies; latency = send call → device took the message; CPU = emulator and load generator in % of one core, then the whole machine's busy share ({} CPUs)",
        cli.mqtt_inflight,
        cli.window,
        PER_DEVICE_CREDIT,
        cli.payload,
        sys::cpus()
    ));
    table.print();
    json_line(
        "c2d",
        mode.name(),
        json!({
            "senders": cli.senders,
            "window": cli.window,
            "per_device_credit": PER_DEVICE_CREDIT,
            "payload": cli.payload,
            "mqtt_inflight": cli.mqtt_inflight,
            "connects": connects,
            "runs": runs,
            "targets": targets,
        }),
    );
    rig.finish().await;
    Ok(())
}
