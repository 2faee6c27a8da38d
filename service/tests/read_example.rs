//! The `read_device_to_cloud_messages` example against the emulator: it prints each device's
//! telemetry, read over the development listener and after the IoT Hub redirect.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use iothub_emulator::RunningEmulator;
use iothub_emulator::hub::event_log::Origin;
use iothub_protocol::Message;

const EXAMPLE: &str = "read_device_to_cloud_messages";

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

async fn run(args: Vec<String>, ca: Option<PathBuf>) -> (Output, String) {
    let mut cmd = Command::new(example());
    cmd.args(&args)
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .env_remove("IOTHUB_AMQP_PORT")
        .env_remove("IOTHUB_CA_CERT");
    if let Some(ca) = ca {
        cmd.env("IOTHUB_CA_CERT", ca);
    }
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

fn send(emulator: &RunningEmulator, device: &str, body: &str) {
    let mut m = Message::new(body);
    m.properties.insert("temperatureAlert", "true");
    emulator
        .hub()
        .run(|hub, now| hub.send_telemetry(&Origin::device(device), m, now))
        .unwrap();
}

#[tokio::test]
async fn the_example_prints_each_devices_telemetry() {
    let emulator = emulator().await;
    emulator.create_device("sensor-1").unwrap();
    send(&emulator, "sensor-1", r#"{"temperature": 30.5}"#);

    let development = emulator
        .config()
        .eventhub_connection_string(Some(emulator.endpoints().eventhubs))
        .unwrap();
    let common = ["--from", "earliest", "--count", "1", "--timeout", "20"].map(String::from);
    let mut args = vec![development];
    args.extend(common.iter().cloned());
    let (out, stdout) = run(args, None).await;
    assert!(out.status.success());
    assert!(stdout.contains("(device sensor-1)"), "{stdout}");
    assert!(
        stdout.contains(r#"Telemetry received: {"temperature": 30.5}"#),
        "{stdout}"
    );
    assert!(stdout.contains("temperatureAlert=true"), "{stdout}");
    assert!(
        stdout.contains("iothub-connection-device-id=sensor-1"),
        "{stdout}"
    );

    // The IoT Hub connection string: redirected to the endpoint over TLS.
    let mut args = vec![
        emulator.service_connection_string(),
        "--amqp-port".into(),
        emulator.endpoints().amqp.to_string(),
    ];
    args.extend(common.iter().cloned());
    let (out, stdout) = run(args, Some(emulator.ca_path().to_owned())).await;
    assert!(out.status.success());
    assert!(stdout.contains("(device sensor-1)"), "{stdout}");

    // A connection string that is not one: exit 2.
    let (out, _) = run(vec!["Endpoint=sb://nowhere/".into()], None).await;
    assert_eq!(out.status.code(), Some(2));
    emulator.shutdown().await;
}
