//! Direct methods: a service client's `invoke_method` (HTTPS) to MQTT/TLS devices that answer
//! at once, closed loop; round-trip latency and calls per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iothub_device::MethodResponse;
use iothub_service::{MethodRequest, ServiceClient};
use serde_json::{Value, json};

use super::{connect_json, connect_note, emulator_rig, ids, lengths};
use crate::bench::load::Senders;
use crate::bench::report::{Latency, Table, int, json_line};
use crate::bench::sys::{CpuMeter, round1};
use crate::bench::{BenchResult, Cli};

/// One closed-loop run: `workers` callers, each with one call in flight; worker `w` calls
/// devices `w, w + workers, ...` of `devices` in turn.
struct Plan {
    devices: usize,
    workers: usize,
}

struct Outcome {
    calls: u64,
    failed: u64,
    first_error: Option<String>,
    per_s: f64,
    latency: Latency,
}

async fn run_plan(
    clients: &Arc<Vec<ServiceClient>>,
    ids: &Arc<Vec<String>>,
    plan: &Plan,
    duration: Duration,
) -> Outcome {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..plan.workers {
        let clients = clients.clone();
        let ids = ids.clone();
        let devices = plan.devices;
        let workers = plan.workers;
        tasks.spawn(async move {
            let client = &clients[w % clients.len()];
            let mut samples = Vec::new();
            let (mut failed, mut first_error) = (0u64, None);
            let mut k = 0usize;
            while Instant::now() < deadline {
                let id = &ids[(w + k * workers) % devices];
                let request = MethodRequest::new("bench")
                    .with_json(&format!(r#"{{"k":{k}}}"#))
                    .unwrap_or_else(|_| MethodRequest::new("bench"));
                let t = Instant::now();
                match client.invoke_method(id, &request).await {
                    Ok(r) if r.status == 200 => samples.push(t.elapsed().as_micros() as u64),
                    Ok(r) => {
                        failed += 1;
                        first_error.get_or_insert(format!("status {}", r.status));
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
                k += 1;
            }
            (samples, failed, first_error)
        });
    }
    let mut all = Vec::new();
    let (mut failed, mut first_error) = (0, None);
    while let Some(r) = tasks.join_next().await {
        if let Ok((s, f, e)) = r {
            all.extend(s);
            failed += f;
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Outcome {
        calls: all.len() as u64,
        failed,
        first_error,
        per_s: all.len() as f64 / elapsed,
        latency: Latency::of(all),
    }
}

/// The scenario.
pub(super) async fn methods(cli: &Cli) -> BenchResult<()> {
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
    for client in &rig.fleet.clients {
        client
            .on_any_method(|req| async move {
                MethodResponse {
                    status: 200,
                    payload: req.payload,
                }
            })
            .await
            .map_err(|e| format!("method subscription: {e}"))?;
    }
    let Senders::Amqp(clients) = &rig.senders else {
        return Err("the methods scenario needs the emulator's service clients".into());
    };
    let clients = clients.clone();
    let device_ids = Arc::new(rig.fleet.ids.clone());
    let mut table = Table::new(
        format!(
            "Direct methods ({} mode): ServiceClient::invoke_method (HTTPS) to MQTT/TLS devices answering at once",
            mode.name()
        ),
        &[
            "run",
            "calls",
            "calls/s",
            "round trip p50/p99/max ms",
            "CPU server/load/machine",
            "notes",
        ],
    );
    table.note(connect_note("fleet", &c));
    let plans = [
        (
            "1 device, 1 in flight",
            Plan {
                devices: 1,
                workers: 1,
            },
        ),
        (
            "100 devices round robin, 1 in flight",
            Plan {
                devices: 100,
                workers: 1,
            },
        ),
        (
            "100 devices × 1 in flight",
            Plan {
                devices: 100,
                workers: 100,
            },
        ),
    ];
    let mut runs: Vec<Value> = Vec::new();
    for (label, plan) in &plans {
        let cpu = CpuMeter::start(rig.emu.pid);
        let o = run_plan(&clients, &device_ids, plan, lengths(mode).run).await;
        let cpu = cpu.stop();
        let mut notes = Vec::new();
        if o.failed > 0 {
            notes.push(format!(
                "{} failed: {}",
                o.failed,
                o.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(n) = cpu.noise() {
            notes.push(n);
        }
        table.row(vec![
            (*label).to_owned(),
            int(o.calls as f64),
            int(o.per_s),
            o.latency.text(),
            cpu.text(),
            notes.join("; "),
        ]);
        runs.push(json!({
            "run": label,
            "devices": plan.devices,
            "in_flight": plan.workers,
            "calls": o.calls,
            "per_s": round1(o.per_s),
            "round_trip": o.latency.json(),
            "cpu": cpu.json(),
            "failed": o.failed,
            "first_error": o.first_error,
        }));
    }
    table.note(format!(
        "{} service client(s), one HTTPS connection pool each; the device handler echoes the payload with status 200",
        clients.len()
    ));
    table.print();
    json_line(
        "methods",
        mode.name(),
        json!({"connect": connect_json(&c), "runs": runs}),
    );
    rig.finish().await;
    Ok(())
}
