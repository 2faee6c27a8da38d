//! The seed scenario end to end: the device app (`iothub-device`'s `simulated_device` example)
//! and the service app (`iothub-service`'s `send_cloud_to_device_message` example), each as its
//! own process, against one emulator. The device prints the body and the custom properties;
//! the service prints a Success feedback record for `message_0`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use iothub_emulator::Emulator;

const WAIT: Duration = Duration::from_secs(30);

/// `target/<profile>/` of this test binary (`target/<profile>/deps/seed_apps-...`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// An example binary of `package`: `cargo test --all-targets` has built it already; if not
/// (e.g. `cargo test -p iothub-tests`), build it now.
fn example(package: &str, name: &str) -> PathBuf {
    let path = target_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--example", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads lines until one satisfies `want`; returns everything read.
fn read_until(rx: &mpsc::Receiver<String>, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(line) => {
                let done = want(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("timed out; output so far:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_device_app_prints_what_the_seed_service_app_sends_and_feedback_comes_back() {
    let device_bin = example("iothub-device", "simulated_device");
    let service_bin = example("iothub-service", "send_cloud_to_device_message");
    let emu = Emulator::builder().start().await.expect("emulator starts");
    let device_cs = emu
        .create_device("seed-device")
        .expect("device created")
        .replace(
            "HostName=localhost",
            &format!("HostName=localhost:{}", emu.endpoints().mqtt),
        );

    let mut device = Command::new(&device_bin)
        .arg(&device_cs)
        .env("IOTHUB_CA_CERT", emu.ca_path())
        .env_remove("IOTHUB_DEVICE_CA_CERT")
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the device app starts");
    let device_out = lines_of(device.stdout.take().expect("piped"));
    read_until(&device_out, |l| l.contains("waiting for commands"));

    let service = Command::new(&service_bin)
        .arg(emu.service_connection_string())
        .arg("seed-device")
        .args(["--amqp-port", &emu.endpoints().amqp.to_string()])
        .args(["--timeout", "30"])
        .env("IOTHUB_CA_CERT", emu.ca_path())
        .env_remove("IOTHUB_CONNECTION_STRING")
        .env_remove("IOTHUB_DEVICE_ID")
        .env_remove("MESSAGE_COUNT")
        .env_remove("IOTHUB_AMQP_PORT")
        .stderr(Stdio::inherit())
        .output()
        .expect("the service app runs");
    let service_text = String::from_utf8_lossy(&service.stdout).into_owned();
    assert!(
        service.status.success(),
        "service app failed:\n{service_text}"
    );
    assert!(
        service_text.contains("originalMessageId=message_0") && service_text.contains("Success"),
        "the service prints a Success record for message_0:\n{service_text}"
    );

    let printed = read_until(&device_out, |l| l.contains("Total calls received: 1"));
    let from = printed
        .iter()
        .position(|l| l == "Message received")
        .expect("a message was printed");
    let block = &printed[from..];
    assert!(
        block[1].starts_with("    Data: <<{\"service client sent a message\": ")
            && block[1].ends_with("}>>"),
        "{block:?}"
    );
    assert_eq!(block[2], "    Properties: {'Property': 'PropMsg_0'}");
    assert_eq!(block[3], "    Total calls received: 1");

    let _ = device.kill();
    let _ = device.wait();
    emu.shutdown().await;
}
