//! The seed tutorial's `SimulatedDevice.py`, in Rust: connects as a device, waits for
//! cloud-to-device messages and prints each one, until Ctrl-C.
//!
//! ```text
//! cargo run -p iothub-device --example simulated_device -- "<device connection string>"
//! ```
//!
//! The connection string may also come from `IOTHUB_DEVICE_CONNECTION_STRING` (the emulator's
//! `env` command exports it). Against the emulator, trust its CA by pointing `IOTHUB_CA_CERT`
//! at its `ca.pem` (the emulator prints the path and exports the variable); against a real hub
//! nothing else is needed. The client uses MQTT on port 8883; for an emulator on another port,
//! write it in the connection string (`HostName=localhost:18883;...`).
//!
//! For each message it prints, as the Python sample does (`Data` shows the body as text, and
//! `Properties` the application properties the way Python prints a `dict`):
//!
//! ```text
//! Message received
//!     Data: <<{"service client sent a message": 12.34}>>
//!     Properties: {'Property': 'PropMsg_0'}
//!     Total calls received: 1
//! ```
//!
//! It also answers the direct method `reboot` (status 200, `{"rebooted":true,"request":<payload>}`),
//! e.g. `cargo run -p iothub-service --example send_cloud_to_device_message -- --method reboot`.
//!
//! Ctrl-C closes the connection and prints `IoTHubDeviceClient sample stopped`. Messages are
//! completed as they are printed.

#[path = "support/c2d_sample.rs"]
mod c2d_sample;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    c2d_sample::main().await
}
