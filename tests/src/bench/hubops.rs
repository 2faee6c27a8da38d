//! The hub without sockets: what one C2D operation costs at 100 and at 10,000 devices, and how
//! much memory 10,000 full queues take; then the event log's own table (`eventlog.rs`).
//!
//! Per-operation cost: 100 devices spread over the registry each get 10 messages enqueued
//! (ack=positive), received and completed per round; every other device holds 5 queued
//! messages, so the bigger hub also has a bigger timer index. Two paths: `Hub` called directly
//! (the rules alone, virtual time) and `HubHandle::run` (what the adapters call: the mutex,
//! the clock and the wake-ups).
//!
//! Memory bound: a child process (this program with `--hub-memory-child`) starts an emulator
//! in-process, creates the devices and fills every queue through `hub().run(..enqueue_c2d..)`,
//! and reports its own resident memory at each step.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use iothub_emulator::Emulator;
use iothub_emulator::driver::{Clock, HubHandle};
use iothub_emulator::hub::{Hub, HubSettings};
use iothub_protocol::registry::Device;
use iothub_protocol::{AckMode, Message};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::emulator::{device_id, temp_dir};
use super::report::{Table, int, json_line};
use super::sys::{self, round1, round3};
use super::{BenchResult, Cli, Mode};

/// Devices whose operations are timed, spread over the registry.
const SAMPLE: usize = 100;
/// Messages per sampled device per round.
const PER_ROUND: usize = 10;
/// Messages parked on each device that is not sampled.
const PREFILL: usize = 5;

/// Either the bare hub on virtual time, or the driver's handle on the real clock.
enum Runner {
    Direct { hub: Box<Hub>, now: OffsetDateTime },
    Handle(HubHandle),
}

impl Runner {
    fn new(handle: bool) -> Runner {
        let settings = HubSettings {
            queue_depth: 50,
            feedback_window: Duration::from_millis(100),
            ..HubSettings::default()
        };
        let hub = Hub::new(settings, 7);
        if handle {
            Runner::Handle(HubHandle::new(hub, Clock::new(false)))
        } else {
            Runner::Direct {
                hub: Box::new(hub),
                now: OffsetDateTime::now_utc(),
            }
        }
    }

    /// One operation, with its events drained as the driver does.
    fn run<R>(&mut self, op: impl FnOnce(&mut Hub, OffsetDateTime) -> R) -> R {
        match self {
            Runner::Direct { hub, now } => {
                *now += Duration::from_micros(1);
                let r = op(hub, *now);
                while hub.poll_event().is_some() {}
                r
            }
            Runner::Handle(h) => h.run(op),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Costs {
    enqueue: f64,
    receive: f64,
    complete: f64,
    /// Per feedback batch: receive + complete.
    feedback_batch: f64,
    records: u64,
}

impl Costs {
    fn json(&self) -> Value {
        json!({
            "enqueue_ns": round1(self.enqueue),
            "receive_ns": round1(self.receive),
            "complete_ns": round1(self.complete),
            "feedback_batch_ns": round1(self.feedback_batch),
            "feedback_records": self.records,
        })
    }
}

fn ns_per(t: Duration, n: usize) -> f64 {
    t.as_nanos() as f64 / n.max(1) as f64
}

fn measure(devices: usize, rounds: usize, handle: bool) -> BenchResult<Costs> {
    let mut r = Runner::new(handle);
    let ids: Vec<String> = (0..devices).map(device_id).collect();
    for id in &ids {
        r.run(|h, now| h.create_device(Device::new(id.as_str()), now))
            .map_err(|e| format!("create {id}: {e}"))?;
    }
    let sample: Vec<usize> = (0..SAMPLE.min(devices))
        .map(|k| k * devices / SAMPLE.min(devices))
        .collect();
    let sampled: std::collections::HashSet<usize> = sample.iter().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        if sampled.contains(&i) {
            continue;
        }
        for _ in 0..PREFILL {
            r.run(|h, now| h.enqueue_c2d(id, Message::new(vec![b'p'; 32]), now))
                .map_err(|e| format!("prefill {id}: {e}"))?;
        }
    }
    let mut total = [Duration::ZERO; 4];
    let mut ops = 0;
    let mut batches = 0;
    let mut records = 0u64;
    let mut tokens = Vec::with_capacity(sample.len() * PER_ROUND);
    for round in 0..rounds {
        let t = Instant::now();
        for &i in &sample {
            for k in 0..PER_ROUND {
                let mut m = Message::new(vec![b'm'; 32]);
                m.system.message_id = Some(format!("{round}-{i}-{k}").into());
                m.system.ack = AckMode::Positive;
                r.run(|h, now| h.enqueue_c2d(&ids[i], m, now))
                    .map_err(|e| format!("enqueue: {e}"))?;
            }
        }
        total[0] += t.elapsed();
        let t = Instant::now();
        tokens.clear();
        for &i in &sample {
            for _ in 0..PER_ROUND {
                let m = r
                    .run(|h, now| h.receive_c2d(&ids[i], now))
                    .map_err(|e| format!("receive: {e}"))?
                    .ok_or("receive: queue empty")?;
                tokens.push((i, m.system.lock_token.unwrap_or_default()));
            }
        }
        total[1] += t.elapsed();
        let t = Instant::now();
        for (i, token) in &tokens {
            r.run(|h, now| h.complete_c2d(&ids[*i], token, now))
                .map_err(|e| format!("complete: {e}"))?;
        }
        total[2] += t.elapsed();
        ops += tokens.len();
        let t = Instant::now();
        r.run(|h, now| h.flush_feedback(now));
        while let Some(d) = r.run(|h, now| h.receive_feedback(now)) {
            records += d.batch.records.len() as u64;
            batches += 1;
            r.run(|h, now| h.complete_feedback(&d.lock_token, now))
                .map_err(|e| format!("complete feedback: {e}"))?;
        }
        total[3] += t.elapsed();
    }
    Ok(Costs {
        enqueue: ns_per(total[0], ops),
        receive: ns_per(total[1], ops),
        complete: ns_per(total[2], ops),
        feedback_batch: ns_per(total[3], batches),
        records,
    })
}

/// What the memory child reports.
#[derive(Debug, Default)]
struct Memory {
    devices: u64,
    depth: u64,
    bytes: u64,
    start_kib: u64,
    emulator_kib: u64,
    devices_kib: u64,
    full_kib: u64,
    peak_kib: u64,
    enqueue_s: f64,
}

fn memory(devices: usize, depth: usize, bytes: usize) -> BenchResult<Memory> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let out = Command::new(exe)
        .arg("--hub-memory-child")
        .args([devices, depth, bytes].map(|x| x.to_string()))
        .output()
        .map_err(|e| format!("memory child: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "memory child printed no figures: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("memory child: {e}"))?;
    let g = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Memory {
        devices: g("devices"),
        depth: g("depth"),
        bytes: g("bytes"),
        start_kib: g("start_kib"),
        emulator_kib: g("emulator_kib"),
        devices_kib: g("devices_kib"),
        full_kib: g("full_kib"),
        peak_kib: g("peak_kib"),
        enqueue_s: v.get("enqueue_s").and_then(Value::as_f64).unwrap_or(0.0),
    })
}

/// The child: an in-process emulator filled to the brim; prints one JSON line.
pub fn memory_child(args: &[usize]) -> ExitCode {
    let [devices, depth, bytes] = [args[0], args[1], args[2]];
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memory child: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = std::process::id();
    let start_kib = sys::rss_kib(me).unwrap_or(0);
    let dir = temp_dir("hubmem");
    let r = rt.block_on(async {
        let emu = Emulator::builder()
            .data_dir(&dir)
            .hub_settings(HubSettings {
                queue_depth: depth.max(1),
                ..HubSettings::default()
            })
            .start()
            .await
            .map_err(|e| format!("start: {e}"))?;
        let emulator_kib = sys::rss_kib(me).unwrap_or(0);
        for i in 0..devices {
            emu.create_device(&device_id(i))
                .map_err(|e| format!("create: {e}"))?;
        }
        let devices_kib = sys::rss_kib(me).unwrap_or(0);
        let t = Instant::now();
        for i in 0..devices {
            let id = device_id(i);
            for k in 0..depth {
                let mut m = Message::new(vec![b'q'; bytes]);
                m.system.message_id = Some(format!("{i}-{k}").into());
                emu.hub()
                    .run(|h, now| h.enqueue_c2d(&id, m, now))
                    .map_err(|e| format!("enqueue: {e}"))?;
            }
        }
        let enqueue_s = t.elapsed().as_secs_f64();
        let full_kib = sys::rss_kib(me).unwrap_or(0);
        let peak_kib = sys::peak_rss_kib(me).unwrap_or(0);
        println!(
            "{}",
            json!({
                "devices": devices, "depth": depth, "bytes": bytes,
                "start_kib": start_kib, "emulator_kib": emulator_kib,
                "devices_kib": devices_kib, "full_kib": full_kib, "peak_kib": peak_kib,
                "enqueue_s": enqueue_s,
            })
        );
        emu.shutdown().await;
        Ok::<(), String>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `hub` scenario.
pub fn run(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let rounds = match mode {
        Mode::Quick => 100,
        Mode::Full => 1_000,
    };
    let mut table = Table::new(
        format!(
            "Hub rules without sockets ({} mode): ns per operation, {SAMPLE} sampled devices × {PER_ROUND} messages × {rounds} rounds",
            mode.name()
        ),
        &[
            "devices",
            "path",
            "enqueue ns",
            "receive ns",
            "complete ns",
            "feedback batch ns",
        ],
    );
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for handle in [false, true] {
        for devices in [100, 10_000] {
            let c = measure(devices, rounds, handle)?;
            let path = if handle {
                "HubHandle::run"
            } else {
                "Hub (direct)"
            };
            table.row(vec![
                int(devices as f64),
                path.into(),
                int(c.enqueue),
                int(c.receive),
                int(c.complete),
                int(c.feedback_batch),
            ]);
            rows.push(json!({"devices": devices, "path": path, "costs": c.json()}));
            costs.push(c);
        }
    }
    let growth = |a: &Costs, b: &Costs| {
        (b.enqueue + b.receive + b.complete) / (a.enqueue + a.receive + a.complete).max(1e-9)
    };
    let g_direct = growth(&costs[0], &costs[1]);
    let g_handle = growth(&costs[2], &costs[3]);
    table.note(format!(
        "10,000 vs 100 devices, enqueue+receive+complete: {g_direct:.2}× (direct), {g_handle:.2}× (HubHandle); other devices hold {PREFILL} messages each"
    ));
    let (md, mq, mb) = (10_000, 50, 1024);
    let m = memory(md, mq, mb)?;
    let payload_kib = (m.devices * m.depth * m.bytes) as f64 / 1024.0;
    let per_msg =
        (m.full_kib.saturating_sub(m.devices_kib) as f64 * 1024.0) / (m.devices * m.depth) as f64;
    let per_device =
        (m.devices_kib.saturating_sub(m.emulator_kib) as f64 * 1024.0) / m.devices.max(1) as f64;
    table.note(format!(
        "memory bound: {} devices × {} queued × {} B: emulator process {:.1} MiB resident (peak {:.1} MiB) for {:.1} MiB of bodies; {:.0} B per queued message ({:.0} B over its body), {:.0} B per registered device; empty emulator {:.1} MiB; {} enqueues in {:.2} s",
        int(md as f64),
        mq,
        mb,
        m.full_kib as f64 / 1024.0,
        m.peak_kib as f64 / 1024.0,
        payload_kib / 1024.0,
        per_msg,
        per_msg - mb as f64,
        per_device,
        m.emulator_kib as f64 / 1024.0,
        int((m.devices * m.depth) as f64),
        m.enqueue_s
    ));
    table.print();
    json_line(
        "hub",
        mode.name(),
        json!({
            "sample_devices": SAMPLE,
            "per_round": PER_ROUND,
            "rounds": rounds,
            "prefill": PREFILL,
            "ops": rows,
            "growth_10k_over_100": {"direct": round3(g_direct), "handle": round3(g_handle)},
            "memory": {
                "devices": m.devices, "depth": m.depth, "bytes": m.bytes,
                "process_start_kib": m.start_kib,
                "emulator_started_kib": m.emulator_kib,
                "devices_created_kib": m.devices_kib,
                "queues_full_kib": m.full_kib,
                "peak_kib": m.peak_kib,
                "bytes_per_queued_message": round1(per_msg),
                "bytes_per_device": round1(per_device),
                "enqueue_s": m.enqueue_s,
            },
        }),
    );
    super::eventlog::run(mode)
}
