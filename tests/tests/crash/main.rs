//! The crash test of issue 18: acknowledged means durable, under `kill -9`.
//!
//! ```text
//! cargo build --release -p iothub-emulator
//! cargo test -p iothub-tests --test crash -- --ignored --nocapture
//! ```
//!
//! It starts the release emulator (`target/release/iothub-emulator`, or the binary named by
//! `IOTHUB_CRASH_EMULATOR`) on a fresh data directory with ports the OS picks, drives it from
//! several clients at once (`workload.rs`: C2D sends, completes and rejects, registry writes,
//! twin writes from both sides, telemetry, feedback), kills it with SIGKILL at a random
//! moment, restarts it on the same directory and checks every acknowledged operation
//! (`ledger.rs`); several rounds (`CRASH_ROUNDS`, default 5), then a clean stop, a last
//! restart, and the feedback drained and checked. `CRASH_SEED` replays the random choices
//! (the seed is printed first). `tests/run-all` runs it after the SDK suite, on the release
//! binary that suite built.
//!
//! Ignored by default: `cargo test --workspace` runs before any release build exists.
//!
//! Telemetry is checked twice: at the end every acknowledged event read back from the Event
//! Hubs-compatible endpoint (from the earliest event of every partition, after all the kills),
//! and each device's counter after every restart. The counter is written late on purpose (at
//! most once a second, and at a clean stop: `emulator/src/persist/mod.rs`, *Activity*), so
//! after a kill it may lag behind the acknowledged sends but never go below what the last
//! restart showed nor above what was sent; after a clean stop it is exact.

mod control;
mod ledger;
mod process;
mod rng;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iothub_service::{ErrorCode, ServiceClient};
use serde_json::Value;

use control::Control;
use ledger::Stop;
use ledger::{Ledger, Observed};
use process::Process;
use rng::Rng;
use workload::{C2D_DEVICES, Round, TEL_DEVICES, c2d_device, tel_device};

const DEFAULT_ROUNDS: usize = 5;

#[test]
#[ignore = "needs the release emulator: cargo build --release -p iothub-emulator, then --ignored (see tests/tests/crash/main.rs)"]
fn acknowledged_operations_survive_kill_9() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("iothub-crash-{}", std::process::id()));
    let r = rt.block_on(run(&dir));
    rt.shutdown_timeout(Duration::from_secs(2));
    match r {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => panic!("{e}\n(data directory kept: {})", dir.display()),
    }
}

fn emulator_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("IOTHUB_CRASH_EMULATOR") {
        // cargo runs tests in the package's directory; a relative path is meant from the
        // workspace root, where the README's commands run.
        let p = PathBuf::from(p);
        return Ok(if p.is_relative() {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
        } else {
            p
        });
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/iothub-emulator");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no release emulator at {}: run `cargo build --release -p iothub-emulator` first, or set IOTHUB_CRASH_EMULATOR",
            bin.display()
        ))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn run(dir: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let bin = emulator_bin()?;
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(18)
    });
    let rounds = env_u64("CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n.max(1) as usize);
    println!(
        "crash test: seed {seed} (CRASH_SEED={seed} replays it), {rounds} rounds, emulator {}",
        bin.display()
    );
    let data = dir.join("data");
    let config = dir.join("emulator.toml");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    std::fs::write(&config, workload::config_toml())
        .map_err(|e| format!("{}: {e}", config.display()))?;

    let mut starts = 0;
    let mut start = || {
        starts += 1;
        let log = dir.join(format!("emulator-{starts}.log"));
        Process::start(&bin, &data, &config, &log)
    };
    let mut rng = Rng::new(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..rounds {
        let p = start()?;
        if round > 0 {
            verify(&p, &ledger, &format!("after kill {round}"), Stop::Kill).await?;
        }
        let load = Round::start(&p, &ledger, round, &mut rng)
            .await
            .map_err(|e| format!("round {round}: {e}\nemulator:\n{}", p.output_tail()))?;
        let after = Duration::from_millis(300 + rng.below(1200));
        tokio::time::sleep(after).await;
        let killed = Instant::now();
        p.kill9();
        load.stop().await;
        // Workers stop when the emulator dies; one that stopped before is worth a line.
        for (at, why) in std::mem::take(&mut lock(&ledger).stops) {
            if at < killed {
                println!(
                    "round {round}: a worker stopped {} ms before the kill: {why}",
                    (killed - at).as_millis()
                );
            }
        }
        let a = lock(&ledger).acked;
        println!(
            "round {round}: kill -9 after {} ms of load; acknowledged so far: {} C2D sends, {} settles, {} registry writes, {} desired and {} reported twin writes, {} telemetry, {} feedback records",
            after.as_millis(),
            a.c2d_sends,
            a.settles,
            a.registry,
            a.desired,
            a.reported,
            a.telemetry,
            a.feedback_records
        );
    }

    // The last crash's state, then a clean stop and start: the graceful path keeps it too.
    let p = start()?;
    verify(&p, &ledger, &format!("after kill {rounds}"), Stop::Kill).await?;
    p.stop()?;
    let p = start()?;
    verify(&p, &ledger, "after a clean stop", Stop::Clean).await?;
    drain_feedback(&p, &ledger).await?;
    let read = read_events(&p, &ledger).await?;
    let errors = lock(&ledger).events.check(&read);
    report("event log", &errors, &p)?;
    let errors = lock(&ledger).check_feedback();
    report("feedback", &errors, &p)?;
    p.stop()?;

    let l = lock(&ledger);
    let a = l.acked;
    for (what, n) in [
        ("C2D sends", a.c2d_sends),
        ("settles", a.settles),
        ("registry writes", a.registry),
        ("desired writes", a.desired),
        ("reported writes", a.reported),
        ("telemetry messages", a.telemetry),
        ("feedback records", a.feedback_records),
    ] {
        if n == 0 {
            return Err(format!(
                "no {what} were acknowledged in {rounds} rounds: the test proved nothing about them"
            ));
        }
    }
    println!(
        "crash test passed in {:.1} s: {} messages with an outcome, {} still pending, {} registry devices, {} twins checked after every restart (seed {seed})",
        started.elapsed().as_secs_f64(),
        l.outcomes.len(),
        l.sends.len() - l.outcomes.len(),
        l.registry.len(),
        l.twins.len()
    );
    Ok(())
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn report(when: &str, errors: &[String], p: &Process) -> Result<(), String> {
    if errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = errors.iter().take(30).map(String::as_str).collect();
    Err(format!(
        "{when}: {} violation(s):\n  {}\nemulator output:\n{}",
        errors.len(),
        shown.join("\n  "),
        p.output_tail()
    ))
}

fn service_client(p: &Process) -> Result<ServiceClient, String> {
    ServiceClient::builder(&p.service_connection_string)
        .and_then(|b| {
            b.trust_ca_pem(&p.ca_pem)
                .platform_roots(false)
                .trust_ca_from_env(false)
                .amqp_port(p.amqp_port)
                .https_port(p.https_port)
                .build()
        })
        .map_err(|e| format!("service client: {e}"))
}

/// Reads what the restarted hub holds and checks it against the ledger.
async fn verify(p: &Process, ledger: &Mutex<Ledger>, when: &str, stop: Stop) -> Result<(), String> {
    let control = Control::new(p.https_port, &p.ca_pem, &p.service_connection_string)?;
    let svc = service_client(p)?;
    let registry_ids: Vec<String> = lock(ledger).registry.keys().cloned().collect();
    let mut o = Observed::default();
    for i in 0..C2D_DEVICES {
        let id = c2d_device(i);
        o.pending
            .insert(id.clone(), control.pending_c2d(&id).await?);
    }
    for id in registry_ids {
        let key = match svc.get_device(&id).await {
            Ok(d) => d.authentication.symmetric_key.primary_key,
            Err(e) if e.code() == Some(ErrorCode::DeviceNotFound) => None,
            Err(e) => return Err(format!("{when}: get device {id}: {e}")),
        };
        o.registry.insert(id, key);
    }
    for i in 0..TEL_DEVICES {
        let id = tel_device(i);
        let t = svc
            .get_twin(&id)
            .await
            .map_err(|e| format!("{when}: get twin {id}: {e}"))?;
        let int = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).and_then(Value::as_i64);
        o.twins.insert(
            id,
            (
                t.version.unwrap_or(0),
                int(&t.properties.desired, "v"),
                int(&t.properties.reported, "r"),
            ),
        );
    }
    o.telemetry = control.telemetry_counts().await?;
    svc.close().await;
    let errors = lock(ledger).check(&o, stop);
    report(when, &errors, p)?;
    let pending: usize = o.pending.values().map(Vec::len).sum();
    println!(
        "{when}: ready in {} ms; state as acknowledged ({pending} C2D pending, {} registry devices, {} twins, {} telemetry counters)",
        p.ready_after.as_millis(),
        o.registry.len(),
        o.twins.len(),
        o.telemetry.len()
    );
    Ok(())
}

/// Takes every feedback batch left, over HTTPS: it answers 204 once the queue is empty.
async fn drain_feedback(p: &Process, ledger: &Mutex<Ledger>) -> Result<(), String> {
    let control = Control::new(p.https_port, &p.ca_pem, &p.service_connection_string)?;
    // The window is 0, so nothing should wait for it; release it anyway.
    control.call("POST", "/_emulator/feedback/flush").await?;
    while let Some(records) = control.take_feedback().await? {
        workload::record_feedback(ledger, &records);
    }
    Ok(())
}

/// Reads every partition of the Event Hubs-compatible endpoint from the start until every
/// acknowledged event was seen or nothing came for a while; returns each body's count.
async fn read_events(
    p: &Process,
    ledger: &Mutex<Ledger>,
) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let consumer = iothub_service::EventConsumer::builder(&p.service_connection_string)
        .map_err(|e| format!("event consumer: {e}"))?
        .trust_ca_pem(&p.ca_pem)
        .platform_roots(false)
        .trust_ca_from_env(false)
        .amqp_port(p.amqp_port)
        .build()
        .map_err(|e| format!("event consumer: {e}"))?;
    let mut stream = consumer
        .receive_all(iothub_service::EventPosition::Earliest)
        .await
        .map_err(|e| format!("event consumer: {e}"))?;
    let want = lock(ledger).events.acked.clone();
    let mut read = std::collections::BTreeMap::new();
    let mut missing = want.len();
    while missing > 0 {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await else {
            break;
        };
        let event = event.map_err(|e| format!("reading events: {e}"))?;
        let body = String::from_utf8_lossy(event.body()).into_owned();
        let n: &mut usize = read.entry(body.clone()).or_default();
        *n += 1;
        if *n == 1 && want.contains(&body) {
            missing -= 1;
        }
    }
    // Whatever else is there arrives with the rest; a short wait catches events never sent.
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(300), stream.recv()).await
    {
        *read
            .entry(String::from_utf8_lossy(event.body()).into_owned())
            .or_default() += 1;
    }
    consumer.close().await;
    println!(
        "event log: {} acknowledged telemetry events, {} distinct events read back after {} restarts",
        want.len(),
        read.len(),
        lock(ledger).restarts
    );
    Ok(read)
}
