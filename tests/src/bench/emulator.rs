//! The emulator as a child process: a TOML file seeds the devices (all with one known key),
//! every port is picked by the OS and read back from the banner, and the ready line is timed.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iothub_tests::banner::Banner;

use super::{BenchResult, sys};

/// The one device key of the benchmark (32 bytes, base64). Not a secret.
pub const DEVICE_KEY: &str = "YmVuY2htYXJrLWRldmljZS1rZXktMzItYnl0ZXMhISE=";
/// How long a start may take, seeding included.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The id of device `i`.
pub fn device_id(i: usize) -> String {
    format!("bench-{i:06}")
}

/// The emulator binary: `--emulator-bin`, else `iothub-emulator` next to this program.
pub fn locate(given: Option<&Path>) -> BenchResult<PathBuf> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(format!("no emulator binary at {}", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("where am I? {e}"))?;
    let beside = exe.with_file_name("iothub-emulator");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(format!(
            "no emulator binary at {}: run `cargo build --release -p iothub-emulator` first, or pass --emulator-bin",
            beside.display()
        ))
    }
}

/// How to start it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices `bench-000000` .. to seed, all with [`DEVICE_KEY`].
    pub devices: usize,
    /// `[hub] queue_depth`.
    pub queue_depth: usize,
    /// `[hub] feedback_window_ms`.
    pub feedback_window_ms: u64,
    /// `--mqtt-max-inflight`.
    pub mqtt_inflight: u16,
    /// Reuse this data directory (warm start); a fresh temporary one otherwise.
    pub data_dir: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: &'static str,
    /// `--in-memory`: nothing written to the data directory.
    pub in_memory: bool,
    /// `[eventhubs] max_events_per_partition` (the emulator's default, 100,000, unless a
    /// scenario reads the event log back and must not lose events to the bound while its
    /// reader lags).
    pub max_events_per_partition: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            devices: 0,
            queue_depth: 50,
            feedback_window_ms: 100,
            mqtt_inflight: 16,
            data_dir: None,
            log_level: "warn",
            in_memory: false,
            max_events_per_partition: 100_000,
        }
    }
}

/// A running emulator process.
pub struct Emulator {
    child: Child,
    pub pid: u32,
    pub mqtt_port: u16,
    pub amqp_port: u16,
    pub https_port: u16,
    /// The plain AMQP port (`--eventhubs-port`, picked by the OS).
    pub eventhubs_port: u16,
    /// The hub name: the Event Hubs-compatible entity name.
    pub hub_name: String,
    pub ca_pem: String,
    pub service_connection_string: String,
    /// From spawning the process to reading the ready line.
    pub ready_after: Duration,
    /// When the process was spawned.
    pub spawned_at: Instant,
    /// What it printed up to the ready line (at most 200 lines).
    pub banner: Vec<String>,
    data_dir: PathBuf,
    remove_dir: bool,
}

/// A fresh directory under the system temp directory.
pub fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("iothub-bench-{what}-{}-{n}", std::process::id()))
}

fn config_toml(o: &Options) -> String {
    let mut s = String::with_capacity(64 + o.devices * 80);
    let _ = writeln!(
        s,
        "[hub]\nqueue_depth = {}\nfeedback_window_ms = {}\n",
        o.queue_depth, o.feedback_window_ms
    );
    let _ = writeln!(
        s,
        "[eventhubs]\npartition_count = {}\nmax_events_per_partition = {}\nmax_bytes_per_partition = {}\n",
        super::events::PARTITIONS,
        o.max_events_per_partition,
        // Room for the events bound at a few hundred accounted bytes each.
        (o.max_events_per_partition as u64 * 512).clamp(32 << 20, 4 << 30),
    );
    for i in 0..o.devices {
        let _ = writeln!(
            s,
            "[[devices]]\nid = \"{}\"\nprimary_key = \"{DEVICE_KEY}\"",
            device_id(i)
        );
    }
    s
}

impl Emulator {
    /// Starts the binary and waits for its ready line (bounded).
    pub fn start(bin: &Path, o: &Options) -> BenchResult<Emulator> {
        let (data_dir, remove_dir) = match &o.data_dir {
            Some(d) => (d.clone(), false),
            None => (temp_dir("emu"), true),
        };
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let config = data_dir.join("bench.toml");
        std::fs::write(&config, config_toml(o))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let spawned_at = Instant::now();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--hostname", "localhost"])
            .args(["--https-port", "0", "--mqtt-port", "0"])
            .args(["--amqp-port", "0", "--http-port", "0"])
            // Not 5672: other emulators on this machine (the SDK suite) may hold it.
            .args(["--eventhubs-port", "0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .args(["--log-level", o.log_level])
            .args(["--mqtt-max-inflight", &o.mqtt_inflight.to_string()])
            .args(o.in_memory.then_some("--in-memory"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<(Instant, String)>();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || forward(out, tx, "emulator"));
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || forward(err, tx, "emulator"));
        }
        let mut emu = Emulator {
            child,
            pid,
            mqtt_port: 0,
            amqp_port: 0,
            https_port: 0,
            eventhubs_port: 0,
            hub_name: String::new(),
            ca_pem: String::new(),
            service_connection_string: String::new(),
            ready_after: Duration::ZERO,
            spawned_at,
            banner: Vec::new(),
            data_dir,
            remove_dir,
        };
        let mut banner = Banner::default();
        let mut seen = Vec::new();
        loop {
            let left = START_TIMEOUT.saturating_sub(spawned_at.elapsed());
            let Ok((at, line)) = rx.recv_timeout(left) else {
                return Err(format!(
                    "the emulator printed no ready line within {START_TIMEOUT:?}; it said:\n{}",
                    seen.join("\n")
                ));
            };
            if banner.read(&line) {
                emu.ready_after = at - spawned_at;
                break;
            }
            if seen.len() < 200 {
                seen.push(line);
            }
        }
        emu.mqtt_port = banner.mqtt_port;
        emu.amqp_port = banner.amqp_port;
        emu.https_port = banner.https_port;
        emu.eventhubs_port = banner.eventhubs_port;
        emu.hub_name = banner.hub_name;
        emu.service_connection_string = banner.service_connection_string;
        let ca_path = banner.ca_path;
        emu.banner = seen.clone();
        let ca_path = ca_path.ok_or("the banner named no CA file")?;
        emu.ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read the CA {}: {e}", ca_path.display()))?;
        if emu.mqtt_port == 0 || emu.amqp_port == 0 || emu.service_connection_string.is_empty() {
            return Err(format!(
                "could not read ports and connection string from the banner:\n{}",
                seen.join("\n")
            ));
        }
        Ok(emu)
    }

    /// The connection string of device `id` (seeded with [`DEVICE_KEY`]).
    pub fn device_connection_string(&self, id: &str) -> String {
        format!("HostName=localhost;DeviceId={id};SharedAccessKey={DEVICE_KEY}")
    }

    pub fn rss_kib(&self) -> u64 {
        sys::rss_kib(self.pid).unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL after a grace period; only this child, by its pid.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; it has not been reaped (try_wait said so).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.terminate();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Sends each line with the time it was read; after the channel closes (start-up done),
/// warnings still go to stderr so a misbehaving server is visible.
pub fn forward(stream: impl std::io::Read, tx: mpsc::Sender<(Instant, String)>, who: &str) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut echoed = 0;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.trim_end().to_owned();
        if tx.send((Instant::now(), text.clone())).is_err()
            && echoed < 50
            && !text.is_empty()
            && !text.ends_with(": stopping")
        {
            echoed += 1;
            eprintln!("[{who}] {text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_32_bytes() {
        assert_eq!(DEVICE_KEY.len(), 44);
    }
}
