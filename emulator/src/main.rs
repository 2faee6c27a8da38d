//! `iothub-emulator`: run the emulator, print `export` lines for it, or check its health.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use iothub_emulator::Emulator;
use iothub_emulator::RunningEmulator;
use iothub_emulator::config::{Cli, Command, Config};
use iothub_emulator::credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// jemalloc, not the C library's allocator: the emulator allocates and frees small buffers per
/// message on every tokio worker (frames, records, topics), and glibc's malloc spent a sixth of
/// its CPU there in the C2D run. `bench c2d`, durable, alternated with the glibc build: 31,300
/// -> 38,000 delivered/s, 39 -> 30.5 µs of emulator CPU per message; restart time unchanged
/// (mimalloc was as fast but made the 10,000-device restart 3x slower).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string pointer, the type of jemalloc's `malloc_conf`.
#[cfg(target_os = "linux")]
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a 'static C string nobody writes.
#[cfg(target_os = "linux")]
unsafe impl Sync for MallocConf {}

/// jemalloc's options, read once at its start (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): one arena per CPU instead of four, so idle connections' buffers share
/// fewer half-used pages (`bench capacity`: 30.4 -> 27.8 KiB per idle device at 10,000; glibc
/// 26.4), at the same C2D throughput.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: MallocConf = MallocConf(c"percpu_arena:percpu".as_ptr());

/// The line log-waiting tools match (Testcontainers, compose scripts, the SDK suite).
const READY_LINE: &str = "iothub-emulator ready";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iothub-emulator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Env) => env(&config),
        Some(Command::Healthcheck) => runtime.block_on(healthcheck(&config)),
        Some(Command::Reset) => reset(&config),
        Some(Command::Monitor(args)) => runtime.block_on(monitor(&args, &config)),
        None => runtime.block_on(run(config)),
    }
}

fn env(config: &Config) -> ExitCode {
    match config.load_tls() {
        Ok(tls) => {
            print!("{}", config.env_exports(tls.ca_path()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deletes the state file in the data directory, keeping the CA.
fn reset(config: &Config) -> ExitCode {
    let dir = &config.data_dir;
    match iothub_emulator::persist::reset(dir) {
        Ok(true) => {
            println!(
                "iothub-emulator: removed the hub state in {} (the CA is kept)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("iothub-emulator: no hub state in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints telemetry until interrupted, `--count` or `--timeout`.
async fn monitor(args: &iothub_emulator::monitor::MonitorArgs, config: &Config) -> ExitCode {
    let mut out = std::io::stdout();
    let run = iothub_emulator::monitor::run(args, config, None, &mut out);
    let result = tokio::select! {
        r = run => r,
        () = wait_for_signal() => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iothub-emulator monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exits 0 only when an emulator answers 200 on `/ready` of the plain HTTP port.
async fn healthcheck(config: &Config) -> ExitCode {
    let addr = config.health_addr();
    let check = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let status = text.split_whitespace().nth(1)?.to_owned();
        Some(status)
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Some(status)) if status == "200" => ExitCode::SUCCESS,
        Ok(Some(status)) => {
            eprintln!("iothub-emulator at {addr} is not ready (HTTP {status})");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("no iothub-emulator answers at {addr}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

async fn run(config: Config) -> ExitCode {
    init_logging(&config.log_level);
    let emulator = match Emulator::builder().config(config).start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_banner(&emulator);
    wait_for_signal().await;
    println!("iothub-emulator: stopping");
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

fn print_banner(emulator: &RunningEmulator) {
    let c = emulator.config();
    let e = emulator.endpoints();
    let host = &c.hostname;
    println!("iothub-emulator {}", env!("CARGO_PKG_VERSION"));
    println!("  hub name      {}", c.hub_name());
    println!(
        "  HTTPS         https://{host}:{}  (registry, device and service REST, WebSockets)",
        e.https
    );
    println!("  MQTT (TLS)    mqtts://{host}:{}", e.mqtt);
    println!("  AMQP (TLS)    amqps://{host}:{}", e.amqp);
    println!(
        "  health        http://{host}:{}/health   CA: http://{host}:{}/_emulator/ca.pem",
        e.http, e.http
    );
    println!(
        "  Event Hubs    amqp://{host}:{}  (plain AMQP, UseDevelopmentEmulator=true; TLS on the AMQP port)",
        e.eventhubs
    );
    println!("  dashboard     {}", emulator.dashboard_url());
    if let Some(p) = e.mqtt_tcp {
        println!("  MQTT (plain)  mqtt://{host}:{p}  (debugging only)");
    }
    println!("  CA file       {}", emulator.ca_path().display());
    if c.virtual_clock {
        println!("  clock         virtual (POST /_emulator/clock/advance?seconds=N)");
    }
    println!();
    println!("Service connection string (iothubowner; development credentials, public by design):");
    println!("  {}", emulator.service_connection_string());
    println!(
        "Event Hubs-compatible endpoint (built-in events; name {}, policy service):",
        c.hub_name()
    );
    for port in [None, Some(e.eventhubs)] {
        if let Some(cs) = c.eventhub_connection_string(port) {
            println!("  {cs}");
        }
    }
    if !c.devices.is_empty() {
        println!("Devices:");
        for d in &c.devices {
            let key = emulator
                .hub()
                .read(|hub| hub.get_device(&d.id))
                .ok()
                .and_then(|dev| dev.primary_key().map(str::to_owned))
                .unwrap_or_default();
            println!(
                "  {}",
                credentials::device_connection_string(host, &d.id, &key)
            );
        }
    }
    println!();
    println!("{READY_LINE}");
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
