//! Scenario 4: start-up: process start to ready line, and to the first C2D delivered.

use std::time::Duration;

use iothub_device::DeviceClient;
use serde_json::json;

use crate::bench::emulator::{self, Emulator, device_id};
use crate::bench::load;
use crate::bench::report::{Latency, Table, json_line, verdict};
use crate::bench::sys::round3;
use crate::bench::{BenchResult, Cli, Mode};

/// Target from issue 9.
const TARGET_READY_MS: f64 = 200.0;

/// Scenario 4: start-up.
pub(super) async fn startup(cli: &Cli) -> BenchResult<()> {
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
