//! The seed's device app (`examples/simulated_device.rs`): its output for two messages, line
//! by line, both from its receive loop run in-process and from the whole program run as a
//! process (the example itself, as cargo builds it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use iothub_device::{AckMode, Message, Properties, Transport};
use iothub_emulator::RunningEmulator;

use crate::common::*;

#[path = "../../examples/support/c2d_sample.rs"]
mod c2d_sample;

/// The two messages the seed's service app sends (SendCloudToDeviceMessage.py with two).
fn seed_message(i: usize) -> Message {
    let mut m = Message::new(format!("{{\"service client sent a message\": 1{i}.25}}"));
    m.system.message_id = Some(format!("message_{i}").into());
    m.system.correlation_id = Some(format!("correlation_{i}").into());
    m.system.ack = AckMode::Full;
    m.properties.insert("Property", format!("PropMsg_{i}"));
    m
}

fn expected_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..2 {
        lines.push("Message received".to_owned());
        lines.push(format!(
            "    Data: <<{{\"service client sent a message\": 1{i}.25}}>>"
        ));
        lines.push(format!("    Properties: {{'Property': 'PropMsg_{i}'}}"));
        lines.push(format!("    Total calls received: {}", i + 1));
    }
    lines
}

#[test]
fn properties_print_like_a_python_dict() {
    let mut p = Properties::new();
    assert_eq!(c2d_sample::python_dict(&p), "{}");
    p.insert("Property", "PropMsg_0");
    p.insert("it's", "say \"hi\"\n\\");
    p.insert("both'\"", "\u{1}");
    assert_eq!(
        c2d_sample::python_dict(&p),
        r#"{'Property': 'PropMsg_0', "it's": 'say "hi"\n\\', 'both\'"': '\x01'}"#
    );
    assert_eq!(
        c2d_sample::render(b"x", &p, 7).lines().last(),
        Some("    Total calls received: 7")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_loop_prints_two_messages() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Mqtt).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let stop = async {
                let _ = stop_rx.await;
            };
            let n = c2d_sample::receive_and_print(&client, stop, &mut out).await;
            (n, out)
        })
    };
    enqueue(&emu, "d1", seed_message(0));
    enqueue(&emu, "d1", seed_message(1));
    let fb = feedback(&emu, 2).await;
    assert_eq!(fb.len(), 2);
    stop_tx.send(()).unwrap();
    let (n, out) = run.await.unwrap();
    assert_eq!(n.unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, expected_lines());
    client.close().await;
    emu.shutdown().await;
}

/// The example's program: built next to this test by `cargo test` (which builds the
/// examples), or built now. An example, not a binary target, so the library itself needs no
/// Ctrl-C handling or multi-threaded runtime from tokio.
fn example_binary() -> PathBuf {
    const EXAMPLE: &str = "simulated_device";
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{EXAMPLE}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "iothub-device", "--example", EXAMPLE])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example failed");
    }
    path
}

/// Reads the child's stdout lines on a thread; each arrives on the channel.
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
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

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(WAIT).expect("the example prints a line")
}

fn connection_string(emu: &RunningEmulator, id: &str) -> String {
    // The port goes into HostName (honoured as in the Node SDK); the example has no options.
    let cs = emu.create_device(id).unwrap();
    cs.replace(
        "HostName=localhost",
        &format!("HostName=localhost:{}", emu.endpoints().mqtt),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_binary_prints_two_messages_and_stops_on_ctrl_c() {
    let bin = example_binary();
    let emu = start().await;
    let cs = connection_string(&emu, "d1");
    let mut child = Command::new(bin)
        .arg(&cs)
        .env("IOTHUB_CA_CERT", emu.ca_path())
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let lines = lines_of(child.stdout.take().unwrap());
    assert_eq!(next_line(&lines), "Starting the IoT Hub Rust sample...");
    assert_eq!(
        next_line(&lines),
        "IoTHubDeviceClient waiting for commands, press Ctrl-C to exit"
    );

    enqueue(&emu, "d1", seed_message(0));
    enqueue(&emu, "d1", seed_message(1));
    let got: Vec<String> = (0..8).map(|_| next_line(&lines)).collect();
    assert_eq!(got, expected_lines());
    // Both were completed (PUBACK) when printed.
    let fb = feedback(&emu, 2).await;
    assert!(
        fb.iter()
            .all(|r| r.status_code == iothub_protocol::FeedbackStatus::Success)
    );

    // Ctrl-C: a clean stop with a goodbye line.
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    assert_eq!(next_line(&lines), "IoTHubDeviceClient sample stopped");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    until("the example's connection is gone", || {
        emu.hub().connection_count() == 0
    })
    .await;
    emu.shutdown().await;
}

#[test]
fn the_example_reads_the_connection_string_from_the_environment_or_explains() {
    let out = Command::new(example_binary())
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .output()
        .expect("the example runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IOTHUB_DEVICE_CONNECTION_STRING"), "{err}");
}
