//! Helpers shared by the end-to-end tests: an emulator in this process, a client that trusts
//! it, and a device played by the hub's own API.

#![allow(dead_code)]

use std::time::Duration;

use iothub_emulator::hub::HubSettings;
use iothub_emulator::{Emulator, EmulatorBuilder, RunningEmulator};
use iothub_protocol::Message;
use iothub_service::{FeedbackBatch, FeedbackReceiver, ServiceClient, ServiceClientBuilder};

/// Hub settings for tests: the emulator's test defaults (feedback sent at once).
pub fn settings() -> HubSettings {
    HubSettings {
        feedback_window: Duration::ZERO,
        ..HubSettings::default()
    }
}

/// Starts an emulator from `builder`.
pub async fn start(builder: EmulatorBuilder) -> RunningEmulator {
    builder.start().await.expect("the emulator starts")
}

/// Starts an emulator with the test defaults.
pub async fn emulator() -> RunningEmulator {
    start(Emulator::builder()).await
}

/// A client builder for `emulator`: its CA, its ports, no platform roots or environment.
pub fn builder_for(emulator: &RunningEmulator, connection_string: &str) -> ServiceClientBuilder {
    let ports = emulator.endpoints();
    ServiceClient::builder(connection_string)
        .expect("a valid connection string")
        .platform_roots(false)
        .trust_ca_from_env(false)
        .trust_ca_pem(emulator.ca_pem())
        .amqp_port(ports.amqp)
        .https_port(ports.https)
        .connect_timeout(Duration::from_secs(20))
        .request_timeout(Duration::from_secs(20))
}

/// A client for `emulator` with the `iothubowner` policy.
pub fn client(emulator: &RunningEmulator) -> ServiceClient {
    builder_for(emulator, &emulator.service_connection_string())
        .build()
        .expect("the client builds")
}

/// Receives the device's next message through the hub, if one is available.
pub fn receive(emulator: &RunningEmulator, device_id: &str) -> Option<Message> {
    emulator
        .hub()
        .run(|h, now| h.receive_c2d(device_id, now))
        .expect("the device exists")
}

/// Receives the device's next message, waiting up to 10 s for it to arrive.
pub async fn receive_wait(emulator: &RunningEmulator, device_id: &str) -> Message {
    for _ in 0..1000 {
        if let Some(m) = receive(emulator, device_id) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no message for {device_id}");
}

fn lock_token(m: &Message) -> String {
    m.system
        .lock_token
        .clone()
        .expect("a received message has a lock token")
}

/// Completes a received message, as a device would.
pub fn complete(emulator: &RunningEmulator, device_id: &str, m: &Message) {
    let token = lock_token(m);
    emulator
        .hub()
        .run(|h, now| h.complete_c2d(device_id, &token, now))
        .expect("complete");
}

/// Rejects a received message, as a device would.
pub fn reject(emulator: &RunningEmulator, device_id: &str, m: &Message) {
    let token = lock_token(m);
    emulator
        .hub()
        .run(|h, now| h.reject_c2d(device_id, &token, now))
        .expect("reject");
}

/// Receives and completes every available message of the device; returns how many.
pub fn drain(emulator: &RunningEmulator, device_id: &str) -> usize {
    emulator.hub().run(|h, now| {
        let mut n = 0;
        while let Ok(Some(m)) = h.receive_c2d(device_id, now) {
            let token = m.system.lock_token.clone().unwrap_or_default();
            h.complete_c2d(device_id, &token, now).expect("complete");
            n += 1;
        }
        n
    })
}

/// The next feedback batch, waiting at most `secs`.
pub async fn next_batch(feedback: &mut FeedbackReceiver, secs: u64) -> FeedbackBatch {
    tokio::time::timeout(Duration::from_secs(secs), feedback.recv())
        .await
        .expect("a feedback batch in time")
        .expect("a feedback batch")
}

/// A message with an id and the given ack mode.
pub fn message(id: &str, ack: iothub_protocol::AckMode) -> Message {
    let mut m = Message::new(format!("{{\"id\":\"{id}\"}}"));
    m.system.message_id = Some(id.into());
    m.system.ack = ack;
    m
}
