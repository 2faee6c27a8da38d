//! The `iothub-emulator` binary: start-up banner and ready line, `healthcheck`, `env`, a clean
//! stop on SIGTERM, and a configuration error reported in one line.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_iothub-emulator");

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("iothub-emulator-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn cmd(data_dir: &Path, http_port: u16) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"])
        .args(["--http-port", &http_port.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .env("IOTHUB_EMULATOR_LOG_LEVEL", "warn");
    c
}

fn spawn_until_ready(mut c: Command) -> (Child, Vec<String>) {
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .expect("the emulator starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let ready = line == "iothub-emulator ready";
                lines.push(line);
                if ready {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no ready line; got:\n{}", lines.join("\n"));
    }
    (child, lines)
}

fn healthcheck(http_port: u16) -> bool {
    Command::new(BIN)
        .args(["--http-port", &http_port.to_string(), "healthcheck"])
        .stderr(Stdio::null())
        .status()
        .expect("healthcheck runs")
        .success()
}

#[test]
fn banner_healthcheck_and_clean_stop() {
    let dir = temp_dir("run");
    let port = free_port();
    assert!(!healthcheck(port), "nothing runs yet");
    let (mut child, banner) = spawn_until_ready(cmd(&dir, port));
    let text = banner.join("\n");
    assert!(
        text.contains("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="),
        "{text}"
    );
    assert!(
        text.contains(&dir.join("tls").join("ca.pem").display().to_string()),
        "{text}"
    );
    assert!(healthcheck(port), "a running emulator is healthy");

    // SIGTERM stops it cleanly (exit 0), after which the health check fails.
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("the emulator exits");
    assert!(status.success(), "clean stop: {status:?}");
    assert!(!healthcheck(port));

    // A restart reuses the CA it generated.
    let ca_before = std::fs::read(dir.join("tls").join("ca.pem")).expect("CA written");
    let (mut again, _) = spawn_until_ready(cmd(&dir, free_port()));
    let _ = again.kill();
    let _ = again.wait();
    let ca_after = std::fs::read(dir.join("tls").join("ca.pem")).expect("CA kept");
    assert_eq!(ca_before, ca_after);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn env_prints_exports_for_the_sdks() {
    let dir = temp_dir("env");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .arg("env")
        .output()
        .expect("env runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "IOTHUB_CONNECTION_STRING",
        "IOTHUB_CA_CERT",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(
            text.contains(&format!("export {var}=")),
            "{var} missing:\n{text}"
        );
    }
    assert!(
        dir.join("tls").join("ca.pem").exists(),
        "env creates the CA it names"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_setting_is_one_clear_line_and_exit_2() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("hub.toml");
    std::fs::write(&file, "[hub]\nmax_delivery_count = 500\n").expect("write");
    let out = cmd(&dir, 0)
        .arg("--config")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("max_delivery_count") && err.contains("1 to 100"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_in_use_is_reported_with_its_fix() {
    let dir = temp_dir("busy");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = Command::new(BIN)
        .args(["--https-port", "0", "--amqp-port", "0", "--http-port", "0"])
        .args(["--mqtt-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&port.to_string()) && err.contains("--mqtt-port"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
