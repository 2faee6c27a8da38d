//! A module identity (IoT Edge style): connects with a module connection string, reports its
//! settings, follows desired changes of `interval` (seconds between readings), answers the
//! direct method `reset`, and sends a reading each interval, until Ctrl-C.
//!
//! ```text
//! cargo run -p iothub-device --example module_client -- "<module connection string>"
//! ```
//!
//! A module connection string is `HostName=..;DeviceId=..;ModuleId=..;SharedAccessKey=..`;
//! create the module with `ServiceClient::create_module` (or the emulator's REST API) and
//! take its primary key. It may also come from `IOTHUB_MODULE_CONNECTION_STRING`. Against the
//! emulator, trust its CA with `IOTHUB_CA_CERT` (its `env` command exports it), and write a
//! non-standard MQTT port in the host name (`HostName=localhost:18883;...`).
//!
//! Try it from the service side: `update_module_twin(dev, module, {"properties":{"desired":
//! {"interval":2}}})` changes the pace; `invoke_module_method(dev, module, reset)` resets the
//! counter; the readings arrive on the Event Hubs-compatible endpoint with
//! `iothub-connection-module-id`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iothub_device::{DeviceClient, Message, MethodResponse, display_chain};
use serde_json::json;

const ENV: &str = "IOTHUB_MODULE_CONNECTION_STRING";

#[tokio::main]
async fn main() -> ExitCode {
    let Some(cs) = std::env::args().nth(1).or_else(|| std::env::var(ENV).ok()) else {
        eprintln!("usage: module_client \"<module connection string>\" (or set {ENV})");
        return ExitCode::from(2);
    };
    match run(&cs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("module_client: {}", display_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cs: &str) -> Result<(), iothub_device::Error> {
    let client = DeviceClient::from_connection_string(cs).await?;
    let module = client.module_id().unwrap_or("(none: this is a device)");
    println!("connected as {}/{module}", client.device_id());

    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    client
        .on_method("reset", move |_req| {
            let counter = counter.clone();
            async move {
                let was = counter.swap(0, Ordering::Relaxed);
                MethodResponse::new(200, &json!({ "was": was }).to_string())
            }
        })
        .await?;

    // Follow desired changes from now on, then read the twin for the current value.
    let mut updates = client.desired_updates()?;
    let twin = client.twin().await?;
    let mut interval = interval_of(&twin.desired).unwrap_or(5);
    client
        .update_reported(&json!({ "interval": interval }))
        .await?;
    println!("sending a reading every {interval} s; Ctrl-C stops");

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            update = updates.next() => {
                let Some(update) = update else { break };
                if let Some(i) = update.patch.as_object().and_then(interval_of) {
                    interval = i;
                    client.update_reported(&json!({ "interval": interval })).await?;
                    println!("desired version {}: interval now {interval} s", update.version);
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(interval)) => {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                let mut reading = Message::new(json!({ "reading": n }).to_string());
                reading.system.content_type = Some("application/json".into());
                reading.system.content_encoding = Some("utf-8".into());
                client.send_event(reading).await?;
                println!("sent reading {n}");
            }
        }
    }
    client.close().await;
    println!("module_client stopped");
    Ok(())
}

/// `interval` from a desired section or patch, when it is a whole number of seconds >= 1.
fn interval_of(desired: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    desired
        .get("interval")
        .and_then(serde_json::Value::as_u64)
        .filter(|&i| i >= 1)
}
