//! The benchmark program's modules.
//!
//! | file | what |
//! |---|---|
//! | `report.rs` | tables, JSON lines, latency percentiles |
//! | `sys.rs` | `/proc` CPU time and resident memory, the open-file limit |
//! | `emulator.rs` | the emulator as a child process: config file, banner, stop |
//! | `mosquitto.rs` | the mosquitto anchor as a child process, with a generated CA |
//! | `load.rs` | the load generator: device fleets, C2D senders, the C2D and D2C engines |
//! | `scenarios/` | the scenarios, one file each (each a table and a JSON line) |
//! | `hubops.rs` | the hub without sockets: per-operation cost and the memory bound |
//! | `events.rs` | D2C read back: the Event Hubs consumer, the mosquitto subscriber, the engine |
//! | `eventlog.rs` | the event log without sockets: append and start-position cost at 10k vs 1M events |
//!
//! The emulator always runs as its own process (`target/release/iothub-emulator`), so its
//! CPU time and memory are read from `/proc/<pid>` apart from the load generator's. Every
//! loop is bounded by a message count and a deadline, and everything talks to 127.0.0.1 only.

mod emulator;
mod eventlog;
mod events;
mod hubops;
mod lean_reader;
mod load;
mod mosquitto;
mod report;
mod scenarios;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Which Event Hubs reader the d2c-e2e scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReaderKind {
    /// [`lean_reader`]: frames walked, only the body taken.
    Lean,
    /// fe2o3's receiver.
    Fe2o3,
}

/// Which figures to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// C2D end to end: AMQP senders -> hub -> MQTT/TLS devices, with feedback.
    C2d,
    /// Connection capacity: many idle MQTT/TLS devices, memory per device, C2D to each.
    Capacity,
    /// D2C: QoS 1 telemetry as fast as PUBACKs allow.
    D2c,
    /// D2C end to end: MQTT/TLS devices -> hub -> an Event Hubs consumer over AMQP, beside
    /// mosquitto -> an MQTT subscriber.
    D2cE2e,
    /// Start-up: process start to ready line, and to the first C2D delivered.
    Startup,
    /// The anchor: mosquitto on this machine, same client code, and the ratios.
    Mosquitto,
    /// The hub without sockets: per-operation cost at 100 vs 10,000 devices, memory bound.
    Hub,
    /// Twins: desired round trip, reported patches/s, query time per page.
    Twin,
    /// Direct methods: invoke_method round trip and calls per second, 1 and 100 devices.
    Methods,
    /// Durable state: C2D and D2C with a data directory vs `--in-memory`, the ready time
    /// with 10,000 devices × 50 queued messages, the data directory's size per message.
    Durable,
    /// Every scenario, in the order above.
    All,
}

/// How long to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each scenario under 30 seconds.
    Quick,
    /// Longer runs and bigger fleets.
    Full,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks for the IoT Hub emulator, with mosquitto as the same-machine anchor"
)]
pub struct Cli {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Option<Scenario>,

    /// Short runs: each scenario finishes in under 30 seconds (the default).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,

    /// Long runs and as many devices as the machine allows.
    #[arg(long)]
    pub full: bool,

    /// The emulator binary [default: `iothub-emulator` next to this program].
    #[arg(long, env = "BENCH_EMULATOR_BIN")]
    pub emulator_bin: Option<PathBuf>,

    /// The mosquitto binary [default: `mosquitto` on PATH, or /usr/sbin/mosquitto].
    #[arg(long, env = "BENCH_MOSQUITTO_BIN")]
    pub mosquitto_bin: Option<PathBuf>,

    /// Number of service clients (AMQP connections) sending C2D messages.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,

    /// C2D sends in flight, over all senders.
    #[arg(long, default_value_t = 512)]
    pub window: usize,

    /// Body size of every C2D and D2C message, bytes (at least 16).
    #[arg(long, default_value_t = 32)]
    pub payload: usize,

    /// Most unacknowledged C2D PUBLISHes per MQTT connection (emulator) and
    /// `max_inflight_messages` (mosquitto).
    #[arg(long, default_value_t = 16)]
    pub mqtt_inflight: u16,

    /// AMQP connections the d2c-e2e scenario's Event Hubs reader spreads its partition
    /// receivers over (1 to 4; the default, 4, is one per partition).
    #[arg(long, default_value_t = 4)]
    pub consumer_connections: usize,

    /// The d2c-e2e scenario's Event Hubs reader: `lean` walks the AMQP frames and takes each
    /// event's body (so the reader takes little of the CPU the emulator shares with it), `fe2o3`
    /// is fe2o3's receiver, a general client that decodes every message whole.
    #[arg(long, value_enum, default_value = "lean")]
    pub reader: ReaderKind,

    /// Devices connecting at the same time.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,

    /// The C2D scenario's runs, in order: device counts (closed loop) and `rate[=N]` (open
    /// loop at N msg/s to 100 devices, default 1,000).
    #[arg(long, default_value = "1,100,rate=1000,10000")]
    pub c2d_runs: String,

    /// Most devices the capacity scenario connects (quick mode: at most 10,000).
    #[arg(long, default_value_t = 25_000)]
    pub max_devices: usize,

    /// Internal: run as the memory-bound child process of the `hub` scenario.
    #[arg(long, hide = true, num_args = 3, value_names = ["DEVICES", "DEPTH", "BYTES"])]
    pub hub_memory_child: Option<Vec<usize>>,
}

impl Cli {
    pub fn mode(&self) -> Mode {
        if self.full { Mode::Full } else { Mode::Quick }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(args) = &cli.hub_memory_child {
        return hubops::memory_child(args);
    }
    let Some(scenario) = cli.scenario else {
        eprintln!(
            "bench: name a scenario: c2d, capacity, d2c, d2c-e2e, startup, mosquitto, hub, twin, methods, durable or all"
        );
        return ExitCode::from(2);
    };
    if cli.payload < 16 {
        eprintln!("bench: --payload must be at least 16 bytes (the send timestamp lives there)");
        return ExitCode::from(2);
    }
    let (soft, hard) = sys::raise_nofile();
    eprintln!(
        "bench: {} mode, open-file limit {soft} (hard {hard}), {} CPUs",
        cli.mode().name(),
        sys::cpus()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-load")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(scenarios::run(&cli, scenario));
    // Device clients keep tasks; don't wait for them past the figures.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors are reported as text: this is a program, not a library.
pub type BenchResult<T> = Result<T, String>;

/// Turns any displayable error into the bench's error, with context.
pub fn ctx<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}
