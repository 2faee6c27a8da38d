//! Scenario 2: connection capacity: many idle MQTT/TLS devices, memory per device, C2D to each.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{connect_json, emulator_rig, ids};
use crate::bench::report::{Table, int, json_line, verdict};
use crate::bench::sys::{self, CpuMeter, round1, round3};
use crate::bench::{BenchResult, Cli, Mode};

/// Target from issue 9.
const TARGET_KIB_PER_DEVICE: f64 = 30.0;

/// Scenario 2: connection capacity.
pub(super) async fn capacity(cli: &Cli) -> BenchResult<()> {
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
