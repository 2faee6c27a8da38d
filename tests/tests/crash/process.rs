//! The emulator binary as a child process on a data directory: every port picked by the OS
//! and read back from the banner, stopped with SIGKILL (the crash) or SIGTERM (the clean stop).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iothub_tests::banner::Banner;

/// A restart on a data directory with a few thousand records takes milliseconds; a debug
/// machine shared with builds gets far more.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of output kept for a failure report.
const KEEP_LINES: usize = 200;

/// A running emulator.
pub struct Process {
    child: Child,
    pub mqtt_port: u16,
    pub amqp_port: u16,
    pub https_port: u16,
    pub ca_pem: String,
    pub service_connection_string: String,
    pub ready_after: Duration,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Starts `bin` on `data_dir` with `config` and waits for the ready line; everything it
    /// prints also goes to `log` (kept with the data directory when the test fails).
    /// `CRASH_LOG_LEVEL` sets its `--log-level` (default `warn`).
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        config: &Path,
        log: &Path,
    ) -> Result<Process, String> {
        let level = std::env::var("CRASH_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let file = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let file = Arc::new(Mutex::new(std::io::LineWriter::new(file)));
        let mut cmd = Command::new(bin);
        // An IOTHUB_EMULATOR_* variable in the caller's shell could move a port or turn on
        // --in-memory; start from none of them.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IOTHUB_EMULATOR_") {
                cmd.env_remove(k);
            }
        }
        let spawned = Instant::now();
        let mut child = cmd
            .args(["--host", "127.0.0.1", "--hostname", "localhost"])
            .args(["--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"])
            .args(["--http-port", "0", "--eventhubs-port", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .args(["--log-level", &level])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let (tx, output, file) = (tx.clone(), output.clone(), file.clone());
            std::thread::spawn(move || forward(out, tx, output, file));
        }
        if let Some(err) = child.stderr.take() {
            let output = output.clone();
            std::thread::spawn(move || forward(err, tx, output, file));
        }
        let mut p = Process {
            child,
            mqtt_port: 0,
            amqp_port: 0,
            https_port: 0,
            ca_pem: String::new(),
            service_connection_string: String::new(),
            ready_after: Duration::ZERO,
            output,
        };
        let mut banner = Banner::default();
        loop {
            let left = START_TIMEOUT.saturating_sub(spawned.elapsed());
            let Ok(line) = rx.recv_timeout(left) else {
                let status = p.child.try_wait().ok().flatten();
                return Err(format!(
                    "no ready line within {START_TIMEOUT:?} (exit status {status:?}); output:\n{}",
                    p.output_tail()
                ));
            };
            if banner.read(&line) {
                p.ready_after = spawned.elapsed();
                break;
            }
        }
        p.mqtt_port = banner.mqtt_port;
        p.amqp_port = banner.amqp_port;
        p.https_port = banner.https_port;
        p.service_connection_string = banner.service_connection_string;
        let ca_path = banner.ca_path;
        let ca_path = ca_path.ok_or("the banner named no CA file")?;
        p.ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read the CA {}: {e}", ca_path.display()))?;
        if p.mqtt_port == 0
            || p.amqp_port == 0
            || p.https_port == 0
            || p.service_connection_string.is_empty()
        {
            return Err(format!(
                "ports or connection string missing from the banner:\n{}",
                p.output_tail()
            ));
        }
        Ok(p)
    }

    /// `kill -9`: no shutdown code runs, nothing buffered is flushed.
    pub fn kill9(mut self) {
        // std's Child::kill sends SIGKILL on Unix, to this child only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded), for the clean end of the test.
    pub fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the emulator exited with {status} on SIGTERM"))
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err("the emulator did not stop within 10 s of SIGTERM".into())
    }

    /// The last lines the emulator printed (start-up banner and warnings).
    pub fn output_tail(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(
    stream: impl std::io::Read,
    tx: mpsc::Sender<String>,
    output: Arc<Mutex<VecDeque<String>>>,
    file: Arc<Mutex<std::io::LineWriter<std::fs::File>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.trim_end().to_owned();
        {
            use std::io::Write as _;
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{text}");
        }
        {
            let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
            if out.len() == KEEP_LINES {
                out.pop_front();
            }
            out.push_back(text.clone());
        }
        let _ = tx.send(text);
    }
}
