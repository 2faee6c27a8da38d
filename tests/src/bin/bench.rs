//! `bench`: throughput, latency, capacity and start-up figures for the emulator, side by side
//! with Debian's mosquitto on the same machine (issue 9).
//!
//! ```text
//! cargo build --release -p iothub-emulator
//! cargo run --release -p iothub-tests --bin bench -- <scenario> [--quick|--full]
//! ```
//!
//! Scenarios: `c2d`, `capacity`, `d2c`, `d2c-e2e`, `startup`, `mosquitto`, `hub`, `twin`, `methods`, `durable`, `all`. Each prints one
//! table and one JSON line. `tests/bench/README.md` explains every figure; `tests/bench/run.sh`
//! installs mosquitto, raises the open-file limit, builds and runs everything.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
