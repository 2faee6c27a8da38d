//! The scenarios of issue 9. Each prints one table and one JSON line; targets are figures to
//! compare against, never assertions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iothub_device::DeviceClient;
use serde_json::{Value, json};

use super::emulator::{self, Emulator, device_id};
use super::load::{
    self, C2dOutcome, C2dPlan, D2cOutcome, D2cPlan, FeedbackCounter, Fleet, MqttPublisher, Senders,
    Target,
};
use super::mosquitto::{self, Mosquitto};
use super::report::{Latency, Table, int, json_line, verdict};
use super::sys::{self, CpuMeter, round1, round3};
use super::{BenchResult, Cli, Mode, Scenario, hubops};

/// Targets from the issue.
const TARGET_C2D_PER_S: f64 = 20_000.0;
const TARGET_C2D_P99_MS: f64 = 5.0;
const TARGET_KIB_PER_DEVICE: f64 = 30.0;
const TARGET_D2C_PER_S: f64 = 50_000.0;
const TARGET_D2C_RATIO: f64 = 0.5;
const TARGET_READY_MS: f64 = 200.0;

pub async fn run(cli: &Cli, scenario: Scenario) -> BenchResult<()> {
    let t = Instant::now();
    let r = match scenario {
        Scenario::C2d => c2d(cli).await,
        Scenario::Capacity => capacity(cli).await,
        Scenario::D2c => d2c(cli).await,
        Scenario::Startup => startup(cli).await,
        Scenario::Mosquitto => anchor(cli).await,
        Scenario::Hub => hubops::run(cli),
        Scenario::All => {
            return run_each(&[
                Scenario::C2d,
                Scenario::Capacity,
                Scenario::D2c,
                Scenario::Startup,
                Scenario::Mosquitto,
                Scenario::Hub,
            ]);
        }
    };
    eprintln!(
        "bench: {scenario:?} took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    r.map_err(|e| format!("{scenario:?}: {e}"))
}

/// `all`: each scenario in a process of its own (this program again, same options), so one
/// scenario's fleet, allocator state and runtime do not colour the next one's figures.
fn run_each(list: &[Scenario]) -> BenchResult<()> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut failures = Vec::new();
    for s in list {
        let name = match s {
            Scenario::C2d => "c2d",
            Scenario::Capacity => "capacity",
            Scenario::D2c => "d2c",
            Scenario::Startup => "startup",
            Scenario::Mosquitto => "mosquitto",
            Scenario::Hub => "hub",
            Scenario::All => continue,
        };
        let child_args: Vec<&str> = args
            .iter()
            .map(|a| if a == "all" { name } else { a.as_str() })
            .collect();
        let status = std::process::Command::new(&exe)
            .args(&child_args)
            .status()
            .map_err(|e| format!("running {name}: {e}"))?;
        if !status.success() {
            failures.push(format!("{name}: {status}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Run lengths per mode.
struct Lengths {
    run: Duration,
    fixed_rate: Duration,
}

fn lengths(mode: Mode) -> Lengths {
    match mode {
        Mode::Quick => Lengths {
            run: Duration::from_secs(2),
            fixed_rate: Duration::from_secs(3),
        },
        Mode::Full => Lengths {
            run: Duration::from_secs(10),
            fixed_rate: Duration::from_secs(20),
        },
    }
}

/// Per-device credit: what a device may have sent and not yet delivered; kept below the
/// hub's queue depth (50) so a closed loop never hits 403004.
const PER_DEVICE_CREDIT: usize = 32;
/// Most messages any one run sends.
const MAX_MESSAGES: u64 = 5_000_000;

fn emulator_target(emu: &Emulator) -> Target {
    Target {
        port: emu.mqtt_port,
        ca_pem: emu.ca_pem.clone(),
        connection_string: Arc::new(|id: &str| {
            format!(
                "HostName=localhost;DeviceId={id};SharedAccessKey={}",
                emulator::DEVICE_KEY
            )
        }),
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(device_id).collect()
}

struct EmulatorRig {
    fleet: Fleet,
    feedback: FeedbackCounter,
    senders: Senders,
    target: Target,
    emu: Emulator,
}

impl EmulatorRig {
    /// Devices first, then the service side, then the process.
    async fn finish(self) {
        self.fleet.close().await;
        drop(self.feedback);
        if let Senders::Amqp(clients) = &self.senders {
            for c in clients.iter() {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
            }
        }
        self.emu.stop();
    }
}

async fn emulator_rig(cli: &Cli, devices: usize) -> BenchResult<EmulatorRig> {
    let bin = emulator::locate(cli.emulator_bin.as_deref())?;
    let emu = Emulator::start(
        &bin,
        &emulator::Options {
            devices,
            mqtt_inflight: cli.mqtt_inflight,
            ..emulator::Options::default()
        },
    )?;
    eprintln!(
        "bench: emulator pid {} ready after {:.0} ms with {devices} seeded devices (mqtt {}, amqp {})",
        emu.pid,
        emu.ready_after.as_secs_f64() * 1e3,
        emu.mqtt_port,
        emu.amqp_port
    );
    let clients = load::service_clients(
        &emu.service_connection_string,
        &emu.ca_pem,
        emu.amqp_port,
        emu.https_port,
        cli.senders,
    )?;
    let feedback = FeedbackCounter::start(&clients[0]).await?;
    let senders = Senders::Amqp(Arc::new(clients));
    let target = emulator_target(&emu);
    Ok(EmulatorRig {
        emu,
        senders,
        feedback,
        fleet: Fleet::new(),
        target,
    })
}

fn connect_note(what: &str, s: &load::ConnectStats) -> String {
    let mut t = format!(
        "{what}: {} devices connected in {:.2} s ({}/s)",
        int(s.connected as f64),
        s.elapsed.as_secs_f64(),
        int(s.connected as f64 / s.elapsed.as_secs_f64().max(1e-9))
    );
    if s.failed > 0 {
        t.push_str(&format!(
            ", {} failed (first: {})",
            s.failed,
            s.first_error.as_deref().unwrap_or("?")
        ));
    }
    if s.skipped > 0 {
        t.push_str(&format!(
            ", {} not tried after too many failures",
            s.skipped
        ));
    }
    t
}

fn connect_json(s: &load::ConnectStats) -> Value {
    json!({
        "connected": s.connected,
        "failed": s.failed,
        "skipped": s.skipped,
        "seconds": round3(s.elapsed.as_secs_f64()),
        "per_s": round1(s.connected as f64 / s.elapsed.as_secs_f64().max(1e-9)),
        "first_error": s.first_error,
    })
}

fn c2d_json(label: &str, devices: usize, o: &C2dOutcome) -> Value {
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
            super::report::ms(lag.p99)
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

/// Scenario 1: C2D end to end.
async fn c2d(cli: &Cli) -> BenchResult<()> {
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
            let c = rig
                .fleet
                .connect(
                    &rig.target,
                    ids(from..want),
                    cli.connect_concurrency,
                    usize::MAX,
                )
                .await;
            table.note(connect_note(&format!("fleet {from}..{want}"), &c));
            connects.push(connect_json(&c));
            let n = rig.fleet.len();
            let probed = rig
                .fleet
                .probe(&rig.senders, n, Duration::from_secs(30), from == 0)
                .await;
            if probed < n {
                table.note(format!("only {probed} of {n} devices took a probe message"));
            }
        }
        let plan = C2dPlan {
            devices,
            duration,
            max_messages: MAX_MESSAGES,
            window: cli.window,
            per_device: PER_DEVICE_CREDIT,
            rate,
            payload: cli.payload,
        };
        let o = load::run_c2d(
            &rig.fleet,
            &rig.senders,
            Some(&rig.feedback),
            &plan,
            rig.emu.pid,
        )
        .await;
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

/// Scenario 2: connection capacity.
async fn capacity(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let (soft, _) = sys::raise_nofile();
    let ports = sys::ephemeral_ports();
    let ceiling = match mode {
        Mode::Quick => 10_000.min(cli.max_devices),
        // One socket per device here and in the emulator, and one ephemeral port each.
        Mode::Full => cli
            .max_devices
            .min(ports.saturating_sub(1_000))
            .min((soft as usize).saturating_sub(1_000)),
    };
    let steps: Vec<usize> = match mode {
        Mode::Quick => vec![ceiling],
        Mode::Full => {
            let mut s = vec![10_000.min(ceiling)];
            while *s.last().unwrap_or(&ceiling) < ceiling {
                let next = (s[s.len() - 1] + 5_000).min(ceiling);
                s.push(next);
            }
            s
        }
    };
    let mut rig = emulator_rig(cli, ceiling).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_kib = rig.emu.rss_kib();
    let load_base_kib = sys::rss_kib(std::process::id()).unwrap_or(0);
    let mut table = Table::new(
        format!(
            "Connection capacity ({} mode): idle MQTT/TLS devices on one emulator",
            mode.name()
        ),
        &[
            "devices",
            "connect time s",
            "connects/s",
            "emulator RSS MiB",
            "KiB per device",
            "load gen KiB/device",
            "CPU server/load/machine",
            "notes",
        ],
    );
    table.note(format!(
        "emulator RSS with {} devices seeded and none connected: {:.1} MiB (pid {}); ready after {:.0} ms",
        int(ceiling as f64),
        base_kib as f64 / 1024.0,
        rig.emu.pid,
        rig.emu.ready_after.as_secs_f64() * 1e3
    ));
    let mut rows = Vec::new();
    let mut total_connect = Duration::ZERO;
    let mut kib_at_10k = None;
    for &upto in &steps {
        let from = rig.fleet.len();
        if upto <= from {
            continue;
        }
        let cpu = CpuMeter::start(rig.emu.pid);
        let s = rig
            .fleet
            .connect(
                &rig.target,
                ids(from..upto),
                cli.connect_concurrency,
                cli.connect_concurrency,
            )
            .await;
        let split = cpu.stop();
        total_connect += s.elapsed;
        // Let every device subscribe and settle, then read memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rig.emu.rss_kib();
        let n = rig.fleet.len();
        let per = (rss.saturating_sub(base_kib)) as f64 / n.max(1) as f64;
        let load_per = sys::rss_kib(std::process::id())
            .unwrap_or(0)
            .saturating_sub(load_base_kib) as f64
            / n.max(1) as f64;
        if n >= 10_000 && kib_at_10k.is_none() {
            kib_at_10k = Some(per);
        }
        let mut notes = Vec::new();
        if s.failed > 0 {
            notes.push(format!(
                "{} failed (first: {})",
                s.failed,
                s.first_error.as_deref().unwrap_or("?")
            ));
        }
        notes.extend(split.noise());
        let notes = notes.join("; ");
        table.row(vec![
            int(n as f64),
            format!("{:.2}", total_connect.as_secs_f64()),
            int(s.connected as f64 / s.elapsed.as_secs_f64().max(1e-9)),
            format!("{:.1}", rss as f64 / 1024.0),
            format!("{per:.1}"),
            format!("{load_per:.1}"),
            split.text(),
            notes,
        ]);
        rows.push(json!({
            "devices": n,
            "step": connect_json(&s),
            "connect_seconds_total": round3(total_connect.as_secs_f64()),
            "emulator_rss_kib": rss,
            "kib_per_device": round1(per),
            "load_kib_per_device": round1(load_per),
            "cpu": split.json(),
        }));
        if s.failed > s.connected / 100 {
            table.note(format!(
                "stopped at {} devices: more than 1% of a step failed",
                int(n as f64)
            ));
            break;
        }
    }
    // Every device still receives a C2D message.
    let n = rig.fleet.len();
    let t = Instant::now();
    let cpu = CpuMeter::start(rig.emu.pid);
    let got = rig
        .fleet
        .probe(&rig.senders, n, Duration::from_secs(60), false)
        .await;
    let split = cpu.stop();
    let took = t.elapsed().as_secs_f64();
    table.note(format!(
        "C2D to every connected device afterwards: {} of {} received in {took:.2} s (CPU server/load {})",
        int(got as f64),
        int(n as f64),
        split.text()
    ));
    let per = kib_at_10k.unwrap_or(f64::NAN);
    table.note(format!(
        "target < {TARGET_KIB_PER_DEVICE} KiB emulator memory per idle device at 10,000: {} ({per:.1} KiB)",
        verdict(Some(per < TARGET_KIB_PER_DEVICE))
    ));
    table.note(format!(
        "limits: open files {soft}, ephemeral ports {ports} (one client address); KiB per device = (RSS now − RSS before any connection) / devices"
    ));
    table.print();
    json_line(
        "capacity",
        mode.name(),
        json!({
            "seeded": ceiling,
            "emulator_rss_kib_before": base_kib,
            "steps": rows,
            "c2d_after": {"devices": n, "received": got, "seconds": round3(took), "cpu": split.json()},
            "targets": {"kib_per_device_at_10k": {"target": TARGET_KIB_PER_DEVICE, "value": per, "met": per < TARGET_KIB_PER_DEVICE}},
        }),
    );
    rig.finish().await;
    Ok(())
}

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

fn d2c_json(label: &str, plan: &D2cPlan, o: &D2cOutcome) -> Value {
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

fn d2c_plans(mode: Mode, payload: usize) -> Vec<(String, D2cPlan)> {
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
async fn d2c(cli: &Cli) -> BenchResult<()> {
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

/// Scenario 4: start-up.
async fn startup(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let bin = emulator::locate(cli.emulator_bin.as_deref())?;
    let warm_runs = match mode {
        Mode::Quick => 5,
        Mode::Full => 20,
    };
    let dir = emulator::temp_dir("startup");
    let opts = emulator::Options {
        devices: 1,
        data_dir: Some(dir.clone()),
        mqtt_inflight: cli.mqtt_inflight,
        ..emulator::Options::default()
    };
    let result = async {
        let cold = Emulator::start(&bin, &opts)?;
        let cold_ms = cold.ready_after.as_secs_f64() * 1e3;
        cold.stop();
        let mut warm = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..warm_runs {
            let e = Emulator::start(&bin, &opts)?;
            warm.push(e.ready_after.as_micros() as u64);
            rss.push(e.rss_kib());
            e.stop();
        }
        let warm_lat = Latency::of(warm);
        // Process start to the first C2D message delivered (device and service connect
        // after the ready line, concurrently).
        let e = Emulator::start(&bin, &opts)?;
        let spawned = e.spawned_at;
        let ready = e.ready_after;
        let cs = e.device_connection_string(&device_id(0));
        let device = async {
            let c = DeviceClient::builder(&cs)
                .map_err(|x| x.to_string())?
                .port(e.mqtt_port)
                .platform_roots(false)
                .trust_ca_from_env(false)
                .trust_ca_pem(&e.ca_pem)
                .connect()
                .await
                .map_err(|x| format!("device: {x}"))?;
            let connected = spawned.elapsed();
            let m = tokio::time::timeout(Duration::from_secs(20), c.recv())
                .await
                .map_err(|_| "no C2D message within 20 s".to_owned())?
                .map_err(|x| format!("device recv: {x}"))?;
            let delivered = spawned.elapsed();
            drop(m);
            c.close().await;
            Ok::<_, String>((connected, delivered))
        };
        let service = async {
            let clients = load::service_clients(
                &e.service_connection_string,
                &e.ca_pem,
                e.amqp_port,
                e.https_port,
                1,
            )?;
            let mut m = iothub_service::Message::new("first");
            m.system.message_id = Some("first".into());
            clients[0]
                .send_c2d(&device_id(0), &m)
                .await
                .map_err(|x| format!("send: {x}"))?;
            let accepted = spawned.elapsed();
            clients[0].close().await;
            Ok::<_, String>(accepted)
        };
        let (d, s) = tokio::join!(device, service);
        let (connected, delivered) = d?;
        let accepted = s?;
        let idle_rss = e.rss_kib();
        e.stop();
        Ok::<_, String>((
            cold_ms, warm_lat, rss, ready, connected, accepted, delivered, idle_rss,
        ))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (cold_ms, warm, rss, ready, connected, accepted, delivered, idle_rss) = result?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let warm_p50 = warm.p50 as f64 / 1e3;
    let mut table = Table::new(
        format!(
            "Start-up ({} mode): `iothub-emulator` process start → event",
            mode.name()
        ),
        &["event", "ms", "notes"],
    );
    table.row(vec![
        "ready line, cold (new data dir: CA + server cert generated)".into(),
        format!("{cold_ms:.1}"),
        String::new(),
    ]);
    table.row(vec![
        format!("ready line, warm (median of {warm_runs})"),
        format!("{warm_p50:.1}"),
        format!(
            "min/max {:.1} / {:.1}; RSS at ready {:.1} MiB",
            warm.min as f64 / 1e3,
            warm.max as f64 / 1e3,
            rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0
        ),
    ]);
    table.row(vec![
        "ready line (first-C2D run)".into(),
        format!("{:.1}", ms(ready)),
        String::new(),
    ]);
    table.row(vec![
        "device connected (MQTT/TLS CONNACK)".into(),
        format!("{:.1}", ms(connected)),
        "device and service start together after the ready line".into(),
    ]);
    table.row(vec![
        "C2D accepted (AMQP/TLS, CBS, send)".into(),
        format!("{:.1}", ms(accepted)),
        String::new(),
    ]);
    table.row(vec![
        "first C2D delivered to the device".into(),
        format!("{:.1}", ms(delivered)),
        format!("emulator RSS then {:.1} MiB", idle_rss as f64 / 1024.0),
    ]);
    table.note(format!(
        "target warm ready < {TARGET_READY_MS} ms: {}",
        verdict(Some(warm_p50 < TARGET_READY_MS))
    ));
    table.print();
    json_line(
        "startup",
        mode.name(),
        json!({
            "cold_ready_ms": round3(cold_ms),
            "warm_ready_ms": warm.json(),
            "warm_rss_kib_max": rss.iter().copied().max().unwrap_or(0),
            "first_c2d": {
                "ready_ms": round3(ms(ready)),
                "device_connected_ms": round3(ms(connected)),
                "accepted_ms": round3(ms(accepted)),
                "delivered_ms": round3(ms(delivered)),
                "rss_kib": idle_rss,
            },
            "targets": {"warm_ready_ms": {"target": TARGET_READY_MS, "value": warm_p50, "met": warm_p50 < TARGET_READY_MS}},
        }),
    );
    Ok(())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// Scenario 5: mosquitto on the same machine, the same device client code over TLS.
async fn anchor(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let len = lengths(mode);
    let devices = 100;
    let c2d_plan = C2dPlan {
        devices,
        duration: len.run,
        max_messages: MAX_MESSAGES,
        window: cli.window,
        per_device: PER_DEVICE_CREDIT,
        rate: None,
        payload: cli.payload,
    };
    let d2c_plan = D2cPlan {
        devices,
        inflight: 16,
        duration: len.run,
        max_messages: MAX_MESSAGES,
        payload: cli.payload,
    };
    let mosquitto_bin = mosquitto::locate(cli.mosquitto_bin.as_deref())?;

    // The emulator.
    let (emu_c2d, emu_d2c) = {
        let mut rig = emulator_rig(cli, devices).await?;
        rig.fleet
            .connect(
                &rig.target,
                ids(0..devices),
                cli.connect_concurrency,
                usize::MAX,
            )
            .await;
        rig.fleet
            .probe(&rig.senders, devices, Duration::from_secs(20), true)
            .await;
        let c = load::run_c2d(
            &rig.fleet,
            &rig.senders,
            Some(&rig.feedback),
            &c2d_plan,
            rig.emu.pid,
        )
        .await;
        let d = load::run_d2c(&rig.fleet, &d2c_plan, rig.emu.pid).await;
        rig.finish().await;
        (c, d)
    };

    // mosquitto: the same DeviceClient fleet; MQTT publishers stand in for the service.
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
    let mut pubs = Vec::new();
    for k in 0..cli.senders.max(1) {
        pubs.push(
            MqttPublisher::connect(m.port, &m.ca_pem, &format!("bench-service-{k}"), 256).await?,
        );
    }
    let senders = Senders::Mqtt(Arc::new(pubs));
    let mut fleet = Fleet::new();
    let c = fleet
        .connect(
            &target,
            ids(0..devices),
            cli.connect_concurrency,
            usize::MAX,
        )
        .await;
    if c.connected < devices {
        return Err(format!(
            "only {} devices connected to mosquitto: {}",
            c.connected,
            c.first_error.unwrap_or_default()
        ));
    }
    let probed = fleet
        .probe(&senders, devices, Duration::from_secs(20), true)
        .await;
    if probed < devices {
        return Err(format!(
            "only {probed} of {devices} mosquitto subscribers took a probe"
        ));
    }
    let mos_c2d = load::run_c2d(&fleet, &senders, None, &c2d_plan, m.pid).await;
    let mos_d2c = load::run_d2c(&fleet, &d2c_plan, m.pid).await;
    let mos_rss = m.rss_kib();
    fleet.close().await;
    drop(senders);
    drop(m);

    let mut table = Table::new(
        format!(
            "Same-machine anchor ({} mode): emulator vs mosquitto, {devices} devices, same DeviceClient code over TLS",
            mode.name()
        ),
        &[
            "workload",
            "server",
            "msgs/s",
            "latency p50/p99/max ms",
            "CPU server/load/machine",
            "emulator/mosquitto",
        ],
    );
    let c2d_ratio = emu_c2d.delivered_per_s / mos_c2d.delivered_per_s.max(1e-9);
    let d2c_ratio = emu_d2c.per_s / mos_d2c.per_s.max(1e-9);
    table.row(vec![
        "1. C2D delivered".into(),
        "emulator (AMQP in, MQTT out)".into(),
        int(emu_c2d.delivered_per_s),
        emu_c2d.latency.text(),
        emu_c2d.cpu.text(),
        ratio(emu_c2d.delivered_per_s, mos_c2d.delivered_per_s),
    ]);
    table.row(vec![
        "1. C2D delivered".into(),
        "mosquitto (MQTT in, MQTT out)".into(),
        int(mos_c2d.delivered_per_s),
        mos_c2d.latency.text(),
        mos_c2d.cpu.text(),
        String::new(),
    ]);
    table.row(vec![
        "3. D2C acked".into(),
        "emulator".into(),
        int(emu_d2c.per_s),
        emu_d2c.latency.text(),
        emu_d2c.cpu.text(),
        ratio(emu_d2c.per_s, mos_d2c.per_s),
    ]);
    table.row(vec![
        "3. D2C acked".into(),
        "mosquitto".into(),
        int(mos_d2c.per_s),
        mos_d2c.latency.text(),
        mos_d2c.cpu.text(),
        String::new(),
    ]);
    table.note(format!(
        "C2D: the emulator also completes each message, keeps its lock and sends feedback ({} records/s); mosquitto forwards QoS 1 from {} MQTT publisher(s) (the topic the emulator would use) to each device's subscription, both with {} unacknowledged PUBLISHes per device connection",
        int(emu_c2d.feedback_per_s),
        cli.senders,
        cli.mqtt_inflight
    ));
    table.note(format!(
        "D2C: {} devices × {} in flight; mosquitto has no subscriber on the telemetry topics (it acks and drops), the emulator stores the last 100 per device",
        d2c_plan.devices, d2c_plan.inflight
    ));
    for (what, cpu) in [
        ("emulator C2D", &emu_c2d.cpu),
        ("mosquitto C2D", &mos_c2d.cpu),
        ("emulator D2C", &emu_d2c.cpu),
        ("mosquitto D2C", &mos_d2c.cpu),
    ] {
        if let Some(n) = cpu.noise() {
            table.note(format!("{what}: {n}"));
        }
    }
    table.note(format!(
        "target D2C ≥ {TARGET_D2C_RATIO} × mosquitto: {} ({d2c_ratio:.2}); mosquitto RSS after the runs {:.1} MiB",
        verdict(Some(d2c_ratio >= TARGET_D2C_RATIO)),
        mos_rss as f64 / 1024.0
    ));
    table.print();
    json_line(
        "mosquitto",
        mode.name(),
        json!({
            "devices": devices,
            "c2d": {
                "emulator": c2d_json("emulator", devices, &emu_c2d),
                "mosquitto": c2d_json("mosquitto", devices, &mos_c2d),
                "ratio_delivered_per_s": round3(c2d_ratio),
            },
            "d2c": {
                "emulator": d2c_json("emulator", &d2c_plan, &emu_d2c),
                "mosquitto": d2c_json("mosquitto", &d2c_plan, &mos_d2c),
                "ratio_per_s": round3(d2c_ratio),
            },
            "targets": {"d2c_ratio": {"target": TARGET_D2C_RATIO, "value": round3(d2c_ratio), "met": d2c_ratio >= TARGET_D2C_RATIO}},
        }),
    );
    Ok(())
}
