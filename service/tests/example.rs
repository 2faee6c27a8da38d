//! The seed's service app (`examples/send_cloud_to_device_message.rs`) against the emulator.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use iothub_emulator::RunningEmulator;
use iothub_protocol::{AckMode, Message};

const EXAMPLE: &str = "send_cloud_to_device_message";

/// The example binary: built next to this test by `cargo test`, or built now.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir
        .join("examples")
        .join(format!("{EXAMPLE}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "iothub-service", "--example", EXAMPLE])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

async fn run(emulator: &RunningEmulator, args: &[&str]) -> (Output, String) {
    let mut cmd = Command::new(example());
    cmd.arg(emulator.service_connection_string())
        .args(args)
        .args(["--amqp-port", &emulator.endpoints().amqp.to_string()])
        .env("IOTHUB_CA_CERT", emulator.ca_path())
        .env_remove("IOTHUB_CONNECTION_STRING")
        .env_remove("IOTHUB_DEVICE_ID")
        .env_remove("MESSAGE_COUNT")
        .env_remove("IOTHUB_AMQP_PORT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout)
}

#[tokio::test]
async fn the_seed_app_sends_and_gets_feedback_for_every_message() {
    let emulator = emulator().await;
    emulator.create_device("seed-dev").unwrap();

    // The device: completes every message and keeps it for inspection.
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let hub = emulator.hub().clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut got: Vec<Message> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let received = hub.run(|h, now| {
                    let mut v = Vec::new();
                    while let Ok(Some(m)) = h.receive_c2d("seed-dev", now) {
                        let token = m.system.lock_token.clone().unwrap_or_default();
                        h.complete_c2d("seed-dev", &token, now).unwrap();
                        v.push(m);
                    }
                    v
                });
                got.extend(received);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got
        })
    };

    let (out, stdout) = run(&emulator, &["seed-dev", "--count", "3", "--timeout", "30"]).await;
    stop.store(true, Ordering::Relaxed);
    let mut got = device.await.unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    assert!(
        stdout.contains("Connection string host = localhost"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Device ID              = seed-dev"),
        "{stdout}"
    );
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("message_{i}: MessageEnqueued")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "originalMessageId=message_{i} statusCode=Success description=Success deviceId=seed-dev"
            )),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("Every message got its feedback (3 of 3)."),
        "{stdout}"
    );

    got.sort_by_key(|m| m.system.message_id.as_ref().map(|id| id.canonical()));
    assert_eq!(got.len(), 3);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.system.message_id, Some(format!("message_{i}").into()));
        assert_eq!(
            m.system.correlation_id,
            Some(format!("correlation_{i}").into())
        );
        assert_eq!(m.system.ack, AckMode::Full);
        assert_eq!(
            m.properties.get("Property"),
            Some(format!("PropMsg_{i}").as_str())
        );
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        let speed = body["service client sent a message"].as_f64().unwrap();
        assert!((12.0..=16.0).contains(&speed), "{speed}");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_seed_app_says_so_when_no_feedback_arrives() {
    let emulator = emulator().await;
    emulator.create_device("seed-idle").unwrap();
    let (out, stdout) = run(&emulator, &["seed-idle", "--timeout", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("message_0: MessageEnqueued"), "{stdout}");
    assert!(
        stdout.contains("No feedback arrived within 2 s"),
        "{stdout}"
    );
    assert!(receive(&emulator, "seed-idle").is_some());
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_seed_app_reports_a_failed_send() {
    let emulator = emulator().await;
    let (out, stdout) = run(&emulator, &["no-such-device", "--timeout", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("Send failed: message_0: device not found"),
        "{stdout}"
    );
    emulator.shutdown().await;
}
