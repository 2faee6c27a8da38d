//! The seed tutorial's `SendCloudToDeviceMessage.py`, in Rust: sends C2D messages to one
//! device with full feedback requested, prints each send's outcome, then waits for the
//! feedback records of those messages and prints them.
//!
//! ```sh
//! cargo run -p iothub-service --example send_cloud_to_device_message -- \
//!     "HostName=...;SharedAccessKeyName=service;SharedAccessKey=..." my-device
//! ```
//!
//! Both arguments can come from `IOTHUB_CONNECTION_STRING` and `IOTHUB_DEVICE_ID` instead.
//! `--count N` (or `MESSAGE_COUNT`) sends N messages (default 1); `--timeout SECS` (default 60)
//! bounds the wait for feedback. To use the emulator, trust its CA with `IOTHUB_CA_CERT` (the
//! emulator prints the path) and, if it does not listen on 5671, give `--amqp-port` (or
//! `IOTHUB_AMQP_PORT`, or write the port in the connection string: `HostName=localhost:15671`).
//!
//! `--method reboot [--payload '{"delay":5}'] [--connect-timeout 30]` invokes a direct method
//! instead and prints the device's status and payload (exit 1 if the hub reports an error,
//! e.g. 404103 when the device is offline).
//!
//! Exit status: 0 when every message was enqueued and got a feedback record, 1 otherwise,
//! 2 for bad arguments or configuration.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use iothub_service::{AckMode, FeedbackRecord, Message, ServiceClient, display_chain};
use tokio::time::{Instant, timeout_at};

/// Sends cloud-to-device messages and waits for their feedback.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The service connection string (`HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`).
    #[arg(env = "IOTHUB_CONNECTION_STRING", hide_env_values = true)]
    connection_string: String,

    /// The device to send to.
    #[arg(env = "IOTHUB_DEVICE_ID")]
    device_id: String,

    /// How many messages to send.
    #[arg(long, env = "MESSAGE_COUNT", default_value_t = 1)]
    count: u32,

    /// How long to wait for feedback, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,

    /// AMQP port of the hub (a real hub uses 5671).
    #[arg(long, env = "IOTHUB_AMQP_PORT")]
    amqp_port: Option<u16>,

    /// Instead of sending messages, invoke this direct method and print the device's answer.
    #[arg(long)]
    method: Option<String>,

    /// The method's JSON payload (with `--method`).
    #[arg(long, default_value = "null")]
    payload: String,

    /// Seconds the hub waits for the device to connect (with `--method`; 0 to 300).
    #[arg(long, default_value_t = 0)]
    connect_timeout: u32,
}

/// Wind speed between 12 and 16, like the tutorial's `AVG_WIND_SPEED + (random() * 4 + 2)`.
fn wind_speed(seed: &mut u64) -> f64 {
    // xorshift64*: plenty for a demo value, no dependency needed.
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    let r = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    let unit = r as f64 / (1u64 << 53) as f64;
    10.0 + unit * 4.0 + 2.0
}

fn message(i: u32, seed: &mut u64) -> Message {
    let body = format!(
        "{{\"service client sent a message\": {:.2}}}",
        wind_speed(seed)
    );
    let mut m = Message::new(body);
    m.system.message_id = Some(format!("message_{i}").into());
    m.system.correlation_id = Some(format!("correlation_{i}").into());
    m.system.ack = AckMode::Full;
    m.properties.insert("Property", format!("PropMsg_{i}"));
    m
}

fn print_record(r: &FeedbackRecord) {
    println!(
        "    Feedback: originalMessageId={} statusCode={} description={} deviceId={} deviceGenerationId={} enqueuedTimeUtc={}",
        r.original_message_id,
        r.status_code,
        r.description,
        r.device_id,
        r.device_generation_id,
        iothub_protocol::time_format::format_millis(r.enqueued_time_utc),
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = match ServiceClient::builder(&args.connection_string) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(port) = args.amqp_port {
        builder = builder.amqp_port(port);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::from(2);
        }
    };

    println!("Starting the IoT Hub Service Client Messaging Rust sample...");
    println!("    Connection string host = {}", client.host_name());
    println!("    Device ID              = {}", args.device_id);

    if let Some(name) = &args.method {
        return invoke(&client, &args, name).await;
    }

    // Open the feedback receiver first, so no feedback can arrive before we listen.
    let mut feedback = match client.feedback().await {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: cannot open the feedback receiver: {}",
                display_chain(&e)
            );
            return ExitCode::from(1);
        }
    };

    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
        | 1;
    let messages: Vec<Message> = (0..args.count).map(|i| message(i, &mut seed)).collect();
    for (i, m) in messages.iter().enumerate() {
        println!("Sending message: {i} {}", String::from_utf8_lossy(&m.body));
    }
    let sends = messages.iter().map(|m| client.send_c2d(&args.device_id, m));
    let results = futures_util::future::join_all(sends).await;

    let mut waiting: BTreeMap<String, Option<FeedbackRecord>> = BTreeMap::new();
    let mut failed = 0;
    for (m, result) in messages.iter().zip(results) {
        let id = m
            .system
            .message_id
            .as_ref()
            .map(|id| id.canonical())
            .unwrap_or_default();
        match result {
            Ok(()) => {
                println!("Send complete: {id}: MessageEnqueued");
                waiting.insert(id, None);
            }
            Err(e) => {
                println!("Send failed: {id}: {}", display_chain(&e));
                failed += 1;
            }
        }
    }

    if !waiting.is_empty() {
        let limit = Duration::from_secs(args.timeout);
        println!(
            "Waiting up to {} s for feedback on {} message(s)...",
            limit.as_secs(),
            waiting.len()
        );
        let deadline = Instant::now() + limit;
        while waiting.values().any(Option::is_none) {
            let batch = match timeout_at(deadline, feedback.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    eprintln!("error while receiving feedback: {}", display_chain(&e));
                    break;
                }
                Ok(Ok(batch)) => batch,
            };
            println!(
                "Feedback batch received ({} record(s), enqueued {}):",
                batch.records().len(),
                iothub_protocol::time_format::format_millis(batch.enqueued_time)
            );
            for r in batch.records() {
                print_record(r);
                match waiting.get_mut(&r.original_message_id) {
                    Some(slot) => *slot = Some(r.clone()),
                    None => println!(
                        "    (not one of this run's messages: {})",
                        r.original_message_id
                    ),
                }
            }
            if let Err(e) = batch.complete().await {
                eprintln!(
                    "warning: cannot complete the feedback batch: {}",
                    display_chain(&e)
                );
            }
        }
    }
    feedback.close().await;
    client.close().await;

    let missing: Vec<&String> = waiting
        .iter()
        .filter_map(|(id, r)| r.is_none().then_some(id))
        .collect();
    let got = waiting.len() - missing.len();
    if got == 0 && !waiting.is_empty() {
        println!(
            "No feedback arrived within {} s. Is the device running and completing messages? (Feedback is sent when the device completes, rejects or lets a message expire.)",
            args.timeout
        );
    } else if !missing.is_empty() {
        println!(
            "No feedback within {} s for {} message(s): {}",
            args.timeout,
            missing.len(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if failed == 0 && missing.is_empty() {
        println!("Every message got its feedback ({got} of {}).", args.count);
        ExitCode::SUCCESS
    } else {
        println!(
            "{} of {} message(s) sent, {got} got feedback.",
            args.count - failed,
            args.count
        );
        ExitCode::from(1)
    }
}

/// `--method`: one direct-method call, its answer printed.
async fn invoke(client: &ServiceClient, args: &Args, name: &str) -> ExitCode {
    let request = match iothub_service::MethodRequest::new(name).with_json(&args.payload) {
        Ok(r) => r.connect_timeout(args.connect_timeout),
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::from(2);
        }
    };
    println!("Invoking method {name} on {} ...", args.device_id);
    let result = client.invoke_method(&args.device_id, &request).await;
    client.close().await;
    match result {
        Ok(r) => {
            println!(
                "Method response: status={} payload={}",
                r.status,
                r.payload.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("Method failed: {}", display_chain(&e));
            ExitCode::from(1)
        }
    }
}
