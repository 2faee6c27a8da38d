//! Durable state (issue 18), in one run:
//!
//! 1. C2D end to end at D = 100 and D2C from 100 devices, once with a data directory (the
//!    default: every acknowledgement waits for a group commit) and once `--in-memory`, with
//!    the scenarios' own code (`c2d::grow_fleet`, `c2d::plan`, `d2c::d2c_plans`,
//!    `load::run_c2d`, `load::run_d2c`), and the ratios durable / in memory (target ≥ 0.5×);
//! 2. the ready time on a data directory holding 10,000 devices × 50 queued messages: the
//!    state is made by an embedded emulator (`Emulator::builder().durable(dir)`, the same code
//!    as the binary), then the release binary is started on it and timed from process start
//!    to its ready line, to the first device connected and to that device's first queued
//!    message;
//! 3. the data directory's size per queued message (the state file after the messages minus
//!    after the devices alone).

use std::path::Path;
use std::time::{Duration, Instant};

use iothub_device::DeviceClient;
use iothub_emulator::Emulator as Embedded;
use iothub_emulator::config::SeedDevice;
use iothub_emulator::hub::HubSettings;
use iothub_protocol::Message;
use serde_json::{Value, json};

use super::{c2d, d2c, emulator_rig_with, lengths};
use crate::bench::emulator::{self, DEVICE_KEY, Emulator, device_id, temp_dir};
use crate::bench::load::{self, C2dOutcome, D2cOutcome};
use crate::bench::report::{Table, int, json_line, ms, verdict};
use crate::bench::sys::{round1, round3};
use crate::bench::{BenchResult, Cli};

/// Target from issue 18: durable at least half as fast as in memory.
const TARGET_RATIO: f64 = 0.5;
/// Target from issue 18: ready within 2 s with the big state.
const TARGET_READY_MS: f64 = 2000.0;
/// The big state: devices × queued messages each.
const STATE_DEVICES: usize = 10_000;
const STATE_DEPTH: usize = 50;

/// The figures of one mode.
struct Mode {
    c2d: C2dOutcome,
    /// D2C runs with 100 devices: (label, plan, outcome).
    d2c: Vec<(String, load::D2cPlan, D2cOutcome)>,
}

/// C2D at D = 100, then D2C from the same 100 devices, on one emulator.
async fn measure(cli: &Cli, in_memory: bool) -> BenchResult<Mode> {
    let mut rig = emulator_rig_with(cli, 100, in_memory).await?;
    let (connect, probe_note) = c2d::grow_fleet(&mut rig, cli, 100).await;
    if connect.connected < 100 {
        return Err(format!(
            "only {} of 100 devices connected (first error: {})",
            connect.connected,
            connect.first_error.as_deref().unwrap_or("?")
        ));
    }
    if let Some(n) = probe_note {
        eprintln!("bench: {n}");
    }
    let run = lengths(cli.mode()).run;
    let plan = c2d::plan(cli, 100, run, None);
    let c2d = rig.run_c2d(&plan).await;
    let mut d2c = Vec::new();
    for (label, plan) in d2c::d2c_plans(cli.mode(), cli.payload) {
        if plan.devices == 100 {
            let o = load::run_d2c(&rig.fleet, &plan, rig.emu.pid).await;
            d2c.push((label, plan, o));
        }
    }
    rig.finish().await;
    Ok(Mode { c2d, d2c })
}

fn ratio(durable: f64, memory: f64) -> f64 {
    if memory > 0.0 { durable / memory } else { 0.0 }
}

/// Bytes of the state in a data directory (everything but the CA and the bench's config).
fn state_bytes(dir: &Path) -> u64 {
    fn walk(p: &Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if name == "tls" || name == "bench.toml" {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => walk(&path, total),
                Ok(m) => *total += m.len(),
                Err(_) => {}
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

/// What the big state took and how fast the binary came back on it.
struct Restart {
    devices_bytes: u64,
    full_bytes: u64,
    build_s: f64,
    ready: Duration,
    loaded_line: Option<String>,
    connected: Duration,
    first_message: Duration,
    first_body: String,
}

/// Makes 10,000 devices × 50 queued messages with an embedded emulator on `dir`, measuring
/// the state after the devices and after the messages.
async fn build_state(dir: &Path, payload: usize) -> BenchResult<(u64, u64, f64)> {
    let t = Instant::now();
    let settings = HubSettings {
        queue_depth: STATE_DEPTH,
        ..HubSettings::default()
    };
    let mut builder = Embedded::builder()
        .durable(dir)
        .hub_settings(settings.clone());
    for i in 0..STATE_DEVICES {
        builder = builder.device(SeedDevice::new(device_id(i)).with_keys(DEVICE_KEY, DEVICE_KEY));
    }
    let emu = builder
        .start()
        .await
        .map_err(|e| format!("embedded emulator: {e}"))?;
    emu.shutdown().await;
    let devices_bytes = state_bytes(dir);
    let emu = Embedded::builder()
        .durable(dir)
        .hub_settings(settings)
        .start()
        .await
        .map_err(|e| format!("embedded emulator: {e}"))?;
    let hub = emu.hub().clone();
    tokio::task::spawn_blocking(move || {
        for k in 0..STATE_DEPTH {
            for i in 0..STATE_DEVICES {
                let id = device_id(i);
                let mut m = Message::new(vec![b'q'; payload]);
                m.system.message_id = Some(format!("{i}-{k}").into());
                hub.run(|h, now| h.enqueue_c2d(&id, m, now))
                    .map_err(|e| format!("enqueue to {id}: {e}"))?;
            }
        }
        Ok::<(), String>(())
    })
    .await
    .map_err(|e| format!("enqueue task: {e}"))??;
    // Shutdown writes what is queued and closes the file.
    emu.shutdown().await;
    Ok((devices_bytes, state_bytes(dir), t.elapsed().as_secs_f64()))
}

/// Starts the binary on the state and times the ready line, the first device's connect and
/// its first queued message (oldest first: `0-0`).
async fn restart(cli: &Cli, dir: &Path) -> BenchResult<Restart> {
    let (devices_bytes, full_bytes, build_s) = build_state(dir, cli.payload).await?;
    let bin = emulator::locate(cli.emulator_bin.as_deref())?;
    let emu = Emulator::start(
        &bin,
        &emulator::Options {
            devices: 0,
            queue_depth: STATE_DEPTH,
            data_dir: Some(dir.to_owned()),
            log_level: "info",
            mqtt_inflight: cli.mqtt_inflight,
            ..emulator::Options::default()
        },
    )?;
    let loaded_line = emu
        .banner
        .iter()
        .find(|l| l.contains("hub state loaded"))
        .map(|l| {
            let at = l.find("devices=").unwrap_or(0);
            l[at..].split(" dir=").next().unwrap_or("").to_owned()
        });
    let client = DeviceClient::builder(&emu.device_connection_string(&device_id(0)))
        .map_err(|e| e.to_string())?
        .port(emu.mqtt_port)
        .platform_roots(false)
        .trust_ca_from_env(false)
        .trust_ca_pem(&emu.ca_pem)
        .connect()
        .await
        .map_err(|e| format!("device connect after restart: {e}"))?;
    let connected = emu.spawned_at.elapsed();
    let m = tokio::time::timeout(Duration::from_secs(20), client.recv())
        .await
        .map_err(|_| "no queued message within 20 s of the restart".to_owned())?
        .map_err(|e| format!("device recv: {e}"))?;
    let first_message = emu.spawned_at.elapsed();
    let first_body = m.message_id().map(|i| i.canonical()).unwrap_or_default();
    client.close().await;
    let ready = emu.ready_after;
    emu.stop();
    Ok(Restart {
        devices_bytes,
        full_bytes,
        build_s,
        ready,
        loaded_line,
        connected,
        first_message,
        first_body,
    })
}

/// The `durable` scenario.
pub(super) async fn durable(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let durable = measure(cli, false).await?;
    let memory = measure(cli, true).await?;
    let mut table = Table::new(
        format!(
            "Durable state ({} mode): data directory (default) vs --in-memory, same run",
            mode.name()
        ),
        &["figure", "durable", "in memory", "durable / in memory"],
    );
    let (dc, mc) = (&durable.c2d, &memory.c2d);
    let c2d_ratio = ratio(
        dc.delivered_per_s.min(dc.feedback_per_s),
        mc.delivered_per_s.min(mc.feedback_per_s),
    );
    table.row(vec![
        "C2D D=100: delivered/s · fed back/s".into(),
        format!("{} · {}", int(dc.delivered_per_s), int(dc.feedback_per_s)),
        format!("{} · {}", int(mc.delivered_per_s), int(mc.feedback_per_s)),
        format!("{c2d_ratio:.2}×"),
    ]);
    table.row(vec![
        "C2D D=100: send→delivery p50 / p99 ms".into(),
        format!("{} / {}", ms(dc.latency.p50), ms(dc.latency.p99)),
        format!("{} / {}", ms(mc.latency.p50), ms(mc.latency.p99)),
        String::new(),
    ]);
    let mut d2c_ratios = Vec::new();
    for ((label, _, d), (_, _, m)) in durable.d2c.iter().zip(&memory.d2c) {
        let r = ratio(d.per_s, m.per_s);
        d2c_ratios.push(r);
        table.row(vec![
            format!("D2C {label}: acked msgs/s (PUBACK p99 ms)"),
            format!("{} ({})", int(d.per_s), ms(d.latency.p99)),
            format!("{} ({})", int(m.per_s), ms(m.latency.p99)),
            format!("{r:.2}×"),
        ]);
    }
    for (what, o) in [("durable", dc), ("in memory", mc)] {
        if !o.drained || o.failed > 0 {
            table.note(format!(
                "C2D {what}: {} delivered of {} accepted, {} failed ({})",
                o.delivered,
                o.accepted,
                o.failed,
                o.first_error.as_deref().unwrap_or("-")
            ));
        }
        if let Some(n) = o.cpu.noise() {
            table.note(format!("C2D {what}: {n}"));
        }
    }
    let d2c_best = d2c_ratios.iter().copied().fold(0.0, f64::max);
    table.note(format!(
        "target durable ≥ {TARGET_RATIO}× in memory: C2D {} ({c2d_ratio:.2}×), D2C 100 devices {} (best {d2c_best:.2}×)",
        verdict(Some(c2d_ratio >= TARGET_RATIO)),
        verdict(Some(d2c_best >= TARGET_RATIO)),
    ));

    let dir = temp_dir("durable-state");
    let r = restart(cli, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    let messages = (STATE_DEVICES * STATE_DEPTH) as f64;
    let per_message = r.full_bytes.saturating_sub(r.devices_bytes) as f64 / messages;
    let ready_ms = r.ready.as_secs_f64() * 1e3;
    table.row(vec![
        format!(
            "restart with {} devices × {STATE_DEPTH} queued: ready line / first device connected / its first message, ms from process start",
            int(STATE_DEVICES as f64)
        ),
        format!(
            "{ready_ms:.0} / {:.0} / {:.0}",
            r.connected.as_secs_f64() * 1e3,
            r.first_message.as_secs_f64() * 1e3
        ),
        "n/a".into(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "data directory per queued message ({}-byte bodies)",
            cli.payload
        ),
        format!(
            "{per_message:.0} B ({} MiB for {} messages; {:.0} B per device without messages)",
            round1(r.full_bytes as f64 / 1048576.0),
            int(messages),
            r.devices_bytes as f64 / STATE_DEVICES as f64
        ),
        "0".into(),
        String::new(),
    ]);
    table.note(format!(
        "target ready < {TARGET_READY_MS:.0} ms with the {}-device state: {} ({ready_ms:.0} ms); the emulator said: {}; first message {} (oldest first)",
        int(STATE_DEVICES as f64),
        verdict(Some(ready_ms < TARGET_READY_MS)),
        r.loaded_line.as_deref().unwrap_or("?"),
        r.first_body
    ));
    table.note(format!(
        "the state was made by an embedded emulator in {:.1} s (not a figure of the emulator's send path); C2D: {} senders, {} in flight, {}-byte bodies; D2C: the d2c scenario's 100-device runs",
        r.build_s, cli.senders, cli.window, cli.payload
    ));
    table.print();
    let side = |m: &Mode| -> Value {
        json!({
            "c2d": c2d::c2d_json("D=100", 100, &m.c2d),
            "d2c": m.d2c.iter().map(|(l, p, o)| d2c::d2c_json(l, p, o)).collect::<Vec<_>>(),
        })
    };
    json_line(
        "durable",
        mode.name(),
        json!({
            "durable": side(&durable),
            "in_memory": side(&memory),
            "ratios": {"c2d": round3(c2d_ratio), "d2c": d2c_ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>()},
            "restart": {
                "devices": STATE_DEVICES,
                "depth": STATE_DEPTH,
                "ready_ms": round3(ready_ms),
                "device_connected_ms": round3(r.connected.as_secs_f64() * 1e3),
                "first_message_ms": round3(r.first_message.as_secs_f64() * 1e3),
                "loaded": r.loaded_line,
                "state_bytes": r.full_bytes,
                "devices_only_bytes": r.devices_bytes,
                "bytes_per_message": round1(per_message),
                "payload": cli.payload,
            },
            "targets": {
                "ratio": {"target": TARGET_RATIO, "c2d": round3(c2d_ratio), "d2c_best": round3(d2c_best), "met": c2d_ratio >= TARGET_RATIO && d2c_best >= TARGET_RATIO},
                "ready_ms": {"target": TARGET_READY_MS, "value": round3(ready_ms), "met": ready_ms < TARGET_READY_MS},
            },
        }),
    );
    Ok(())
}
