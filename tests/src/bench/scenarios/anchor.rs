//! Scenario 5: the anchor: mosquitto on this machine, the same client code, and the ratios.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::c2d::c2d_json;
use super::d2c::d2c_json;
use super::{MAX_MESSAGES, PER_DEVICE_CREDIT, emulator_rig, ids, lengths};
use crate::bench::emulator;
use crate::bench::load::{self, C2dPlan, D2cPlan, Fleet, MqttPublisher, Senders, Target};
use crate::bench::mosquitto::{self, Mosquitto};
use crate::bench::report::{Table, int, json_line, verdict};
use crate::bench::sys::round3;
use crate::bench::{BenchResult, Cli};

/// Target from issue 9.
const TARGET_D2C_RATIO: f64 = 0.5;
/// Target from issue 14 (after batching the AMQP writes).
const TARGET_C2D_RATIO: f64 = 1.0;

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// Scenario 5: mosquitto on the same machine, the same device client code over TLS.
pub(super) async fn anchor(cli: &Cli) -> BenchResult<()> {
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
        let c = rig.run_c2d(&c2d_plan).await;
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
    for (what, n, cpu) in [
        ("emulator C2D", emu_c2d.delivered, &emu_c2d.cpu),
        ("mosquitto C2D", mos_c2d.delivered, &mos_c2d.cpu),
        ("emulator D2C", emu_d2c.sent, &emu_d2c.cpu),
        ("mosquitto D2C", mos_d2c.sent, &mos_d2c.cpu),
    ] {
        let n = n.max(1) as f64;
        table.note(format!(
            "{what}: {:.1} µs server CPU and {:.2} write system calls per message",
            cpu.server * 1e6 / n,
            cpu.server_writes as f64 / n
        ));
    }
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
        "target C2D delivered ≥ {TARGET_C2D_RATIO} × mosquitto: {} ({c2d_ratio:.2})",
        verdict(Some(c2d_ratio >= TARGET_C2D_RATIO))
    ));
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
            "targets": {
                "d2c_ratio": {"target": TARGET_D2C_RATIO, "value": round3(d2c_ratio), "met": d2c_ratio >= TARGET_D2C_RATIO},
                "c2d_ratio": {"target": TARGET_C2D_RATIO, "value": round3(c2d_ratio), "met": c2d_ratio >= TARGET_C2D_RATIO},
            },
        }),
    );
    Ok(())
}
