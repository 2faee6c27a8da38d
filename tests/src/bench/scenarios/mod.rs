//! The scenarios of issue 9, one file each. Each prints one table and one JSON line; targets
//! are figures to compare against, never assertions.
//!
//! | file | scenario |
//! |---|---|
//! | `c2d.rs` | 1: C2D end to end (AMQP senders, MQTT/TLS devices, feedback) |
//! | `capacity.rs` | 2: connection capacity and memory per idle device |
//! | `d2c.rs` | 3: D2C telemetry at QoS 1 |
//! | `d2c_e2e.rs` | D2C end to end: MQTT devices → Event Hubs consumer, beside mosquitto (issue 14) |
//! | `startup.rs` | 4: start to ready, and to the first C2D delivered |
//! | `anchor.rs` | 5: mosquitto on the same machine, and the ratios |
//! | `twin.rs` | 7: desired round trip, reported patches, twin query pages |
//! | `methods.rs` | direct methods: round trip and calls per second (issue 16) |
//! | `durable.rs` | durable state vs `--in-memory`, ready time and disk per queued message (issue 18) |
//!
//! The hub without sockets (6) is `hubops.rs`. This file holds what several scenarios share:
//! run lengths, the emulator rig (process, service clients, fleet) and connect reports.

mod anchor;
mod c2d;
mod capacity;
mod d2c;
mod d2c_e2e;
mod durable;
mod methods;
mod startup;
mod twin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench::emulator::{self, Emulator, device_id};
use crate::bench::load::{self, FeedbackCounter, Fleet, Senders, Target};
use crate::bench::report::int;
use crate::bench::sys::{round1, round3};
use crate::bench::{BenchResult, Cli, Mode, Scenario, hubops};

pub async fn run(cli: &Cli, scenario: Scenario) -> BenchResult<()> {
    let t = Instant::now();
    let r = match scenario {
        Scenario::C2d => c2d::c2d(cli).await,
        Scenario::Capacity => capacity::capacity(cli).await,
        Scenario::D2c => d2c::d2c(cli).await,
        Scenario::D2cE2e => d2c_e2e::d2c_e2e(cli).await,
        Scenario::Startup => startup::startup(cli).await,
        Scenario::Mosquitto => anchor::anchor(cli).await,
        Scenario::Hub => hubops::run(cli),
        Scenario::Twin => twin::twin(cli).await,
        Scenario::Methods => methods::methods(cli).await,
        Scenario::Durable => durable::durable(cli).await,
        Scenario::All => {
            return run_each(&[
                Scenario::C2d,
                Scenario::Capacity,
                Scenario::D2c,
                Scenario::D2cE2e,
                Scenario::Startup,
                Scenario::Mosquitto,
                Scenario::Hub,
                Scenario::Twin,
                Scenario::Methods,
                Scenario::Durable,
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
            Scenario::D2cE2e => "d2c-e2e",
            Scenario::Startup => "startup",
            Scenario::Mosquitto => "mosquitto",
            Scenario::Hub => "hub",
            Scenario::Twin => "twin",
            Scenario::Methods => "methods",
            Scenario::Durable => "durable",
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
    /// A C2D run: the rig's senders to its fleet, feedback counted, the emulator's CPU read.
    async fn run_c2d(&self, plan: &load::C2dPlan) -> load::C2dOutcome {
        load::run_c2d(
            &self.fleet,
            &self.senders,
            Some(&self.feedback),
            plan,
            self.emu.pid,
        )
        .await
    }

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
    emulator_rig_with(cli, devices, false).await
}

/// The rig, with the emulator `--in-memory` or on a (fresh, temporary) data directory.
async fn emulator_rig_with(cli: &Cli, devices: usize, in_memory: bool) -> BenchResult<EmulatorRig> {
    emulator_rig_options(
        cli,
        emulator::Options {
            devices,
            mqtt_inflight: cli.mqtt_inflight,
            in_memory,
            ..emulator::Options::default()
        },
    )
    .await
}

/// The rig, with the emulator started with `options`.
async fn emulator_rig_options(cli: &Cli, options: emulator::Options) -> BenchResult<EmulatorRig> {
    let devices = options.devices;
    let bin = emulator::locate(cli.emulator_bin.as_deref())?;
    let emu = Emulator::start(&bin, &options)?;
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
