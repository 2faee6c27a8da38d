//! Helpers shared by the end-to-end tests.

use std::time::Duration;

use iothub_device::{
    AckMode, ConnectionEvents, ConnectionState, DeviceClient, DeviceClientBuilder, Message,
    ReceivedMessage, Transport,
};
use iothub_emulator::hub::QueuedMessage;
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_protocol::FeedbackRecord;
use tokio::time::Instant;

/// How long any single expectation may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh emulator on free ports.
pub async fn start() -> RunningEmulator {
    Emulator::builder()
        .start()
        .await
        .expect("the emulator starts")
}

/// The emulator's port for a transport.
pub fn port(emu: &RunningEmulator, transport: Transport) -> u16 {
    match transport {
        Transport::Mqtt => emu.endpoints().mqtt,
        _ => emu.endpoints().https,
    }
}

/// A builder pointed at the emulator: its port, its CA only, fast polling and backoff.
pub fn builder(emu: &RunningEmulator, cs: &str, transport: Transport) -> DeviceClientBuilder {
    DeviceClient::builder(cs)
        .expect("a valid connection string")
        .transport(transport)
        .port(port(emu, transport))
        .trust_ca_pem(emu.ca_pem())
        .platform_roots(false)
        .trust_ca_from_env(false)
        .poll_interval(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400))
}

/// Creates `id` and connects it with default options.
pub async fn device(emu: &RunningEmulator, id: &str, transport: Transport) -> DeviceClient {
    let cs = emu.create_device(id).expect("device created");
    builder(emu, &cs, transport)
        .connect()
        .await
        .expect("the device connects")
}

/// A C2D message with this id and ack mode.
pub fn c2d(message_id: &str, ack: AckMode) -> Message {
    let mut m = Message::new(format!("body of {message_id}"));
    m.system.message_id = Some(message_id.into());
    m.system.ack = ack;
    m
}

/// Enqueues a C2D message as the service would.
pub fn enqueue(emu: &RunningEmulator, id: &str, message: Message) {
    emu.hub()
        .run(|h, now| h.enqueue_c2d(id, message, now))
        .expect("enqueued");
}

/// The device's C2D queue.
pub fn queue(emu: &RunningEmulator, id: &str) -> Vec<QueuedMessage> {
    emu.hub().read(|h| h.peek_c2d(id)).expect("device exists")
}

/// The next message, within [`WAIT`].
pub async fn recv(client: &DeviceClient) -> ReceivedMessage {
    tokio::time::timeout(WAIT, client.recv())
        .await
        .expect("a message within the wait")
        .expect("recv succeeds")
}

/// The message id as text.
pub fn mid(m: &ReceivedMessage) -> String {
    m.message_id().map(|id| id.to_string()).unwrap_or_default()
}

/// Waits until `n` feedback records arrived (completing each batch) and returns them.
pub async fn feedback(emu: &RunningEmulator, n: usize) -> Vec<FeedbackRecord> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "expected {n} feedback records, got {out:?}"
        );
        match emu.hub().run(|h, now| h.receive_feedback(now)) {
            Some(d) => {
                emu.hub()
                    .run(|h, now| h.complete_feedback(&d.lock_token, now))
                    .expect("feedback completed");
                out.extend(d.batch.records);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    out
}

/// Asserts that no feedback arrives within `d`.
pub async fn no_feedback(emu: &RunningEmulator, d: Duration) {
    tokio::time::sleep(d).await;
    emu.hub().run(|h, now| h.flush_feedback(now));
    assert!(
        emu.hub().run(|h, now| h.receive_feedback(now)).is_none(),
        "no feedback expected yet"
    );
}

/// Waits until `cond` holds, within [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads connection events until one matches, within [`WAIT`]; returns those seen.
pub async fn events_until(
    events: &mut ConnectionEvents,
    mut done: impl FnMut(&ConnectionState) -> bool,
) -> Vec<ConnectionState> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; saw {seen:?}"))
            .expect("events continue");
        let stop = done(&next);
        seen.push(next);
        if stop {
            return seen;
        }
    }
}
