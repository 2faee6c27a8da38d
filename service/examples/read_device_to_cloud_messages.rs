//! The Azure sample `read_device_to_cloud_messages`, in Rust: reads every partition of the
//! hub's built-in Event Hubs-compatible endpoint and prints each device's telemetry as it
//! arrives (device, body, the properties the device set, the ones the hub set).
//!
//! ```sh
//! # the emulator's development string (plain AMQP, no CA): eval "$(iothub-emulator env)"
//! cargo run -p iothub-service --example read_device_to_cloud_messages -- "$EVENTHUB_CONNECTION_STRING"
//! # or a hub's IoT Hub connection string: the consumer follows the hub's redirect
//! cargo run -p iothub-service --example read_device_to_cloud_messages -- \
//!     "HostName=...;SharedAccessKeyName=service;SharedAccessKey=..."
//! ```
//!
//! The connection string can come from `EVENTHUB_CONNECTION_STRING` instead. `--from earliest`
//! reads what the hub still holds first (default: only new telemetry); `--consumer-group`
//! (default `$Default`); `--count N` stops after N events and `--timeout SECS` after that long
//! without one. Over TLS, trust the emulator's CA with `IOTHUB_CA_CERT`, and give
//! `--amqp-port` when it does not listen on 5671.
//!
//! Exit status: 0 when stopped by `--count`, `--timeout` or Ctrl-C, 1 when reading failed,
//! 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use iothub_service::display_chain;
use iothub_service::events::{Event, EventConsumer, EventPosition};

/// Prints device telemetry as it arrives.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// An Event Hubs-compatible connection string (`Endpoint=sb://..;EntityPath=..`) or an IoT
    /// Hub service connection string (`HostName=..`).
    #[arg(env = "EVENTHUB_CONNECTION_STRING", hide_env_values = true)]
    connection_string: String,

    /// Consumer group to read as.
    #[arg(long, default_value = "$Default")]
    consumer_group: String,

    /// Where to start in each partition.
    #[arg(long, value_enum, default_value_t = From::Latest)]
    from: From,

    /// AMQP port of the first connection (a real hub uses 5671).
    #[arg(long, env = "IOTHUB_AMQP_PORT")]
    amqp_port: Option<u16>,

    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,

    /// Stop after this many seconds without an event.
    #[arg(long)]
    timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum From {
    /// Only telemetry sent from now on.
    Latest,
    /// Everything the hub still holds, then new telemetry.
    Earliest,
}

fn print_event(event: &Event) {
    println!(
        "Received event from partition {} (device {}):",
        event.partition_id,
        event.device_id.as_deref().unwrap_or("?")
    );
    println!(
        "  Telemetry received: {}",
        String::from_utf8_lossy(event.body())
    );
    let properties: Vec<String> = event
        .properties()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  Properties (set by device): {{{}}}",
        properties.join(", ")
    );
    let system: Vec<String> = event
        .system_properties
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  System properties (set by IoT Hub): {{{}}}",
        system.join(", ")
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = match EventConsumer::builder(&args.connection_string) {
        Ok(b) => b.consumer_group(args.consumer_group.clone()),
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(port) = args.amqp_port {
        builder = builder.amqp_port(port);
    }
    let consumer = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::from(2);
        }
    };
    let position = match args.from {
        From::Latest => EventPosition::Latest,
        From::Earliest => EventPosition::Earliest,
    };
    let mut events = match consumer.receive_all(position).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Reading partitions {:?} as {}; Ctrl-C to stop.",
        events.partition_ids(),
        consumer.consumer_group()
    );
    let mut received = 0usize;
    let status = loop {
        if args.count.is_some_and(|n| received >= n) {
            break ExitCode::SUCCESS;
        }
        let next = async {
            match args.timeout {
                Some(secs) => tokio::time::timeout(Duration::from_secs(secs), events.next())
                    .await
                    .ok(),
                None => Some(events.next().await),
            }
        };
        let next = tokio::select! {
            n = next => n,
            _ = tokio::signal::ctrl_c() => break ExitCode::SUCCESS,
        };
        match next {
            None => {
                println!("No event for {} s; stopping.", args.timeout.unwrap_or(0));
                break ExitCode::SUCCESS;
            }
            Some(None) => break ExitCode::SUCCESS,
            Some(Some(Ok(event))) => {
                print_event(&event);
                received += 1;
            }
            Some(Some(Err(e))) => {
                eprintln!("error: {}", display_chain(&e));
                break ExitCode::FAILURE;
            }
        }
    };
    drop(events);
    consumer.close().await;
    status
}
