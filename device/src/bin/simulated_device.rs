//! The `simulated_device` example as a binary target, so the end-to-end tests can run the
//! very program the example is (cargo builds binaries, not examples, for integration tests
//! and hands their paths over as `CARGO_BIN_EXE_*`). Use the example:
//! `cargo run -p iothub-device --example simulated_device -- "<device connection string>"`.

#[path = "../../examples/support/c2d_sample.rs"]
mod c2d_sample;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    c2d_sample::main().await
}
