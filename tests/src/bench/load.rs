//! The load generator: fleets of the project's `DeviceClient`s, C2D senders (the project's
//! `ServiceClient` over AMQP for the emulator, plain MQTT publishers for mosquitto), and the
//! C2D and D2C engines with their bounded loops.
//!
//! Every message body starts with 16 bytes: the send time (ns since [`epoch`], little
//! endian) and a sequence number. The device that receives it computes send-to-delivery
//! latency from the first eight; everything runs in this one process, so one clock serves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iothub_device::{ConnectionState, DeviceClient, Message};
use iothub_protocol::AckMode;
use iothub_protocol::property_bag::encode_c2d_topic;
use iothub_service::ServiceClient;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::BenchResult;
use super::report::Latency;
use super::sys::{CpuMeter, CpuSplit};

/// Sequence number of probe messages (warm-up; no feedback, no credit).
const PROBE: u64 = u64::MAX;
/// Longest wait for the last deliveries and feedback records of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The common time base of every timestamp in a body.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn at_ns(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A body of `size` bytes stamped with `t_ns` and `seq`.
pub fn stamped(size: usize, t_ns: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![b'x'; size.max(16)];
    b[..8].copy_from_slice(&t_ns.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b
}

fn read_stamp(body: &[u8]) -> Option<(u64, u64)> {
    let t = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let s = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((t, s))
}

/// A rustls client configuration (ring) trusting exactly `ca_pem`.
pub fn client_tls(ca_pem: &str) -> BenchResult<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where a fleet connects.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub ca_pem: String,
    /// Connection string of a device id.
    pub connection_string: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

/// What the device tasks report into during one run.
pub struct RunSink {
    delivered: AtomicU64,
    last_ns: AtomicU64,
    /// Send-to-delivery latencies per device, µs.
    latencies: Vec<Mutex<Vec<u32>>>,
    /// Per-device credit: a C2D send takes one, the delivery gives it back, so a device
    /// never has more than the credit queued and the hub's queue depth is not hit.
    credit: Vec<Semaphore>,
    probed: Vec<AtomicBool>,
    probes_seen: AtomicU64,
}

impl RunSink {
    fn new(devices: usize, credit: usize) -> RunSink {
        RunSink {
            delivered: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            latencies: (0..devices).map(|_| Mutex::new(Vec::new())).collect(),
            credit: (0..devices).map(|_| Semaphore::new(credit)).collect(),
            probed: (0..devices).map(|_| AtomicBool::new(false)).collect(),
            probes_seen: AtomicU64::new(0),
        }
    }

    fn on_message(&self, idx: usize, body: &[u8]) {
        let now = now_ns();
        let Some((t, seq)) = read_stamp(body) else {
            return;
        };
        if seq == PROBE {
            if let Some(p) = self.probed.get(idx)
                && !p.swap(true, Ordering::Relaxed)
            {
                self.probes_seen.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let us = (now.saturating_sub(t) / 1000).min(u64::from(u32::MAX)) as u32;
        if let Some(l) = self.latencies.get(idx) {
            l.lock().unwrap_or_else(|p| p.into_inner()).push(us);
        }
        if let Some(c) = self.credit.get(idx) {
            c.add_permits(1);
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn take_latencies(&self) -> Vec<u64> {
        let mut all = Vec::new();
        for l in &self.latencies {
            let mut v = l.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(v.drain(..).map(u64::from));
        }
        all
    }
}

/// How connecting a batch of devices went.
#[derive(Debug, Clone, Default)]
pub struct ConnectStats {
    pub connected: usize,
    /// Including those skipped.
    pub failed: usize,
    /// Not tried after too many failures.
    pub skipped: usize,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

/// Connected devices, each with a task that takes its C2D messages (automatic completion:
/// the client PUBACKs as the message is taken).
pub struct Fleet {
    pub clients: Vec<DeviceClient>,
    pub ids: Vec<String>,
    sink: watch::Sender<Arc<RunSink>>,
    tasks: JoinSet<()>,
    /// Connections lost after the first connect (the client reconnects by itself).
    drops: Arc<AtomicU64>,
}

impl Fleet {
    pub fn new() -> Fleet {
        let (sink, _) = watch::channel(Arc::new(RunSink::new(0, 0)));
        Fleet {
            clients: Vec::new(),
            ids: Vec::new(),
            sink,
            tasks: JoinSet::new(),
            drops: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Connections lost so far, over all devices.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Connects `ids` (at most `concurrency` handshakes at once) and starts their receivers.
    /// After `give_up_after` failures the devices not yet started are skipped (counted as
    /// failed), so a server that stopped accepting ends the step quickly.
    pub async fn connect(
        &mut self,
        target: &Target,
        ids: Vec<String>,
        concurrency: usize,
        give_up_after: usize,
    ) -> ConnectStats {
        let t0 = Instant::now();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let failures = Arc::new(AtomicU64::new(0));
        let limit = give_up_after as u64;
        let mut set = JoinSet::new();
        for (k, id) in ids.into_iter().enumerate() {
            let gate = gate.clone();
            let failures = failures.clone();
            let cs = (target.connection_string)(&id);
            let ca = target.ca_pem.clone();
            let port = target.port;
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                if failures.load(Ordering::Relaxed) >= limit {
                    return (k, id, Err(None));
                }
                let r = async {
                    DeviceClient::builder(&cs)?
                        .port(port)
                        .platform_roots(false)
                        .trust_ca_from_env(false)
                        .trust_ca_pem(ca)
                        .connect_timeout(Duration::from_secs(20))
                        .connect()
                        .await
                }
                .await;
                if r.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                (k, id, r.map_err(Some))
            });
        }
        let mut done = Vec::new();
        let mut stats = ConnectStats::default();
        while let Some(j) = set.join_next().await {
            match j {
                Ok((k, id, Ok(c))) => done.push((k, id, c)),
                Ok((_, id, Err(Some(e)))) => {
                    stats.failed += 1;
                    stats.first_error.get_or_insert(format!("{id}: {e}"));
                }
                Ok((_, _, Err(None))) => {
                    stats.failed += 1;
                    stats.skipped += 1;
                }
                Err(e) => {
                    stats.failed += 1;
                    stats.first_error.get_or_insert(e.to_string());
                }
            }
        }
        done.sort_by_key(|(k, _, _)| *k);
        for (_, id, client) in done {
            let idx = self.clients.len();
            let rx = self.sink.subscribe();
            let c = client.clone();
            self.tasks.spawn(async move {
                let mut messages = c.messages();
                while let Some(m) = messages.next().await {
                    let sink = rx.borrow().clone();
                    sink.on_message(idx, m.body());
                }
            });
            let mut events = client.connection_events();
            let drops = self.drops.clone();
            self.tasks.spawn(async move {
                while let Some(state) = events.recv().await {
                    match state {
                        ConnectionState::Disconnected { retrying: true, .. } => {
                            drops.fetch_add(1, Ordering::Relaxed);
                        }
                        ConnectionState::Disconnected {
                            retrying: false, ..
                        } => return,
                        _ => {}
                    }
                }
            });
            self.clients.push(client);
            self.ids.push(id);
            stats.connected += 1;
        }
        stats.elapsed = t0.elapsed();
        stats
    }

    /// A new sink for the next run, with `credit` per device.
    fn new_run(&self, credit: usize) -> Arc<RunSink> {
        let sink = Arc::new(RunSink::new(self.clients.len(), credit));
        self.sink.send_replace(sink.clone());
        sink
    }

    /// Sends one probe message (no feedback, no credit) to each of the first `devices`
    /// devices and waits until each received one; returns how many did. With `resend`, a
    /// device that has none after half a second gets another (a device subscribes on its
    /// first receive, and a broker drops what comes before that; the emulator keeps it).
    pub async fn probe(
        &self,
        senders: &Senders,
        devices: usize,
        within: Duration,
        resend: bool,
    ) -> usize {
        let devices = devices.min(self.len());
        let sink = self.new_run(0);
        let deadline = Instant::now() + within;
        let mut first = true;
        loop {
            let missing: Vec<usize> = (0..devices)
                .filter(|&i| !sink.probed[i].load(Ordering::Relaxed))
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            if first || resend {
                first = false;
                let gate = Arc::new(Semaphore::new(256));
                let mut set = JoinSet::new();
                for (n, i) in missing.into_iter().enumerate() {
                    let gate = gate.clone();
                    let senders = senders.clone();
                    let id = self.ids[i].clone();
                    set.spawn(async move {
                        let _p = gate.acquire_owned().await;
                        let body = stamped(16, now_ns(), PROBE);
                        senders.send(n, &id, body, PROBE, AckMode::None).await
                    });
                }
                while set.join_next().await.is_some() {}
            }
            let wait_until = (Instant::now() + Duration::from_millis(500)).min(deadline);
            while Instant::now() < wait_until
                && (sink.probes_seen.load(Ordering::Relaxed) as usize) < devices
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        sink.probes_seen.load(Ordering::Relaxed) as usize
    }

    /// Closes every client (at most 512 at once).
    pub async fn close(mut self) {
        let gate = Arc::new(Semaphore::new(512));
        let mut set = JoinSet::new();
        for c in self.clients.drain(..) {
            let gate = gate.clone();
            set.spawn(async move {
                let _p = gate.acquire_owned().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
            });
        }
        while set.join_next().await.is_some() {}
        self.tasks.abort_all();
    }
}

/// An MQTT publisher standing in for the service side on mosquitto; it counts PUBACKs.
pub struct MqttPublisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    last_ack_ns: Arc<AtomicU64>,
}

impl MqttPublisher {
    pub async fn connect(
        port: u16,
        ca_pem: &str,
        client_id: &str,
        inflight: u16,
    ) -> BenchResult<MqttPublisher> {
        let mut o = MqttOptions::new(client_id, "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            client_tls(ca_pem)?,
        )));
        o.set_keep_alive(Duration::from_secs(60));
        o.set_clean_session(true);
        o.set_inflight(inflight);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "mosquitto publisher: no CONNACK within 10 s".to_owned())?;
        connected.map_err(|e| format!("mosquitto publisher: {e}"))?;
        let acked = Arc::new(AtomicU64::new(0));
        let last_ack_ns = Arc::new(AtomicU64::new(0));
        let (a, l) = (acked.clone(), last_ack_ns.clone());
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        l.fetch_max(now_ns(), Ordering::Relaxed);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(MqttPublisher {
            client,
            acked,
            last_ack_ns,
        })
    }
}

/// Whoever sends C2D messages.
#[derive(Clone)]
pub enum Senders {
    /// The project's service client, one AMQP connection each.
    Amqp(Arc<Vec<ServiceClient>>),
    /// MQTT publishers on mosquitto.
    Mqtt(Arc<Vec<MqttPublisher>>),
}

/// How one send ended.
pub enum Sent {
    Accepted,
    QueueFull,
    Failed(String),
}

impl Senders {
    fn count(&self) -> usize {
        match self {
            Senders::Amqp(v) => v.len(),
            Senders::Mqtt(v) => v.len(),
        }
    }

    /// For MQTT: PUBACKs so far and the time of the last one.
    fn acked(&self) -> Option<(u64, u64)> {
        match self {
            Senders::Amqp(_) => None,
            Senders::Mqtt(v) => Some((
                v.iter().map(|p| p.acked.load(Ordering::Relaxed)).sum(),
                v.iter()
                    .map(|p| p.last_ack_ns.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0),
            )),
        }
    }

    /// Sends one C2D message on sender `k % count`. Over MQTT the topic is exactly what the
    /// emulator would publish for the same message.
    pub async fn send(
        &self,
        k: usize,
        device_id: &str,
        body: Vec<u8>,
        seq: u64,
        ack: AckMode,
    ) -> Sent {
        let mut m = Message::new(body);
        m.system.message_id = Some(seq.to_string().into());
        m.system.ack = ack;
        match self {
            Senders::Amqp(v) => match v[k % v.len()].send_c2d(device_id, &m).await {
                Ok(()) => Sent::Accepted,
                Err(iothub_service::Error::DeviceMaximumQueueDepthExceeded { .. }) => {
                    Sent::QueueFull
                }
                Err(e) => Sent::Failed(e.to_string()),
            },
            Senders::Mqtt(v) => {
                let topic = encode_c2d_topic(device_id, &m);
                let p = &v[k % v.len()];
                match p
                    .client
                    .publish(topic, QoS::AtLeastOnce, false, Bytes::from(m.body))
                    .await
                {
                    Ok(()) => Sent::Accepted,
                    Err(e) => Sent::Failed(e.to_string()),
                }
            }
        }
    }
}

/// Counts feedback records on one receiver for as long as it lives.
pub struct FeedbackCounter {
    records: Arc<AtomicU64>,
    last_ns: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FeedbackCounter {
    pub async fn start(client: &ServiceClient) -> BenchResult<FeedbackCounter> {
        let mut rx = client
            .feedback()
            .await
            .map_err(|e| format!("feedback receiver: {e}"))?;
        let records = Arc::new(AtomicU64::new(0));
        let last_ns = Arc::new(AtomicU64::new(0));
        let (r, l) = (records.clone(), last_ns.clone());
        let task = tokio::spawn(async move {
            let mut errors = 0;
            while errors < 20 {
                match rx.recv().await {
                    Ok(batch) => {
                        let n = batch.records().len() as u64;
                        l.fetch_max(now_ns(), Ordering::Relaxed);
                        r.fetch_add(n, Ordering::Relaxed);
                        if let Err(e) = batch.complete().await {
                            eprintln!("bench: completing a feedback batch failed: {e}");
                        }
                    }
                    Err(iothub_service::Error::Closed) => return,
                    Err(e) => {
                        errors += 1;
                        eprintln!("bench: feedback receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(FeedbackCounter {
            records,
            last_ns,
            task,
        })
    }

    fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl Drop for FeedbackCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One C2D run.
#[derive(Debug, Clone)]
pub struct C2dPlan {
    /// The first `devices` devices of the fleet receive, round robin.
    pub devices: usize,
    /// Sending stops after this long ...
    pub duration: Duration,
    /// ... or after this many messages.
    pub max_messages: u64,
    /// Closed loop: sends in flight. Ignored with `rate`.
    pub window: usize,
    /// Per-device credit (messages sent and not yet delivered).
    pub per_device: usize,
    /// Open loop at this many messages per second instead: sends start on schedule whatever
    /// the earlier ones are doing (how late each started is reported as the schedule lag).
    pub rate: Option<f64>,
    pub payload: usize,
}

/// What one C2D run measured.
#[derive(Debug, Clone, Default)]
pub struct C2dOutcome {
    pub accepted: u64,
    pub queue_full: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub delivered: u64,
    pub feedback: u64,
    pub accepted_per_s: f64,
    pub delivered_per_s: f64,
    pub feedback_per_s: f64,
    pub latency: Latency,
    /// Fixed rate only: send start minus its scheduled time.
    pub schedule_lag: Option<Latency>,
    pub cpu: CpuSplit,
    /// Everything accepted was delivered (and fed back) before the drain timeout.
    pub drained: bool,
    /// Device connections lost during the run.
    pub drops: u64,
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    queue_full: AtomicU64,
    failed: AtomicU64,
    last_accept_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Fixed rate: how late each send started against its schedule, µs.
    lags: Mutex<Vec<u64>>,
}

impl Tally {
    fn count(&self, s: Sent) -> bool {
        match s {
            Sent::Accepted => {
                self.last_accept_ns.fetch_max(now_ns(), Ordering::Relaxed);
                self.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Sent::QueueFull => {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Sent::Failed(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                false
            }
        }
    }
}

fn per_s(n: u64, from_ns: u64, to_ns: u64) -> f64 {
    let secs = to_ns.saturating_sub(from_ns) as f64 / 1e9;
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Runs C2D from `senders` to the fleet; `feedback` counts records when the emulator is the
/// server. `server_pid` is the process whose CPU time is reported beside this one's.
pub async fn run_c2d(
    fleet: &Fleet,
    senders: &Senders,
    feedback: Option<&FeedbackCounter>,
    plan: &C2dPlan,
    server_pid: u32,
) -> C2dOutcome {
    let devices = plan.devices.clamp(1, fleet.len().max(1));
    let sink = fleet.new_run(plan.per_device.max(1));
    let tally = Arc::new(Tally::default());
    let acked0 = senders.acked().map_or(0, |(n, _)| n);
    let feedback0 = feedback.map_or(0, FeedbackCounter::records);
    let drops0 = fleet.drops();
    let cpu = CpuMeter::start(server_pid);
    let t0 = Instant::now();
    let t0_ns = at_ns(t0);
    let deadline = t0 + plan.duration;
    let ids: Arc<Vec<String>> = Arc::new(fleet.ids[..devices].to_vec());
    let mut set = JoinSet::new();
    match plan.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            for w in 0..plan.window.max(1) {
                let (next, sink, tally, ids, senders) = (
                    next.clone(),
                    sink.clone(),
                    tally.clone(),
                    ids.clone(),
                    senders.clone(),
                );
                let (max, payload) = (plan.max_messages, plan.payload);
                set.spawn(async move {
                    loop {
                        if Instant::now() >= deadline {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= max {
                            return;
                        }
                        let d = (i % ids.len() as u64) as usize;
                        let Ok(Ok(permit)) =
                            tokio::time::timeout_at(deadline.into(), sink.credit[d].acquire())
                                .await
                        else {
                            return;
                        };
                        permit.forget();
                        let body = stamped(payload, now_ns(), i);
                        let s = senders.send(w, &ids[d], body, i, AckMode::Positive).await;
                        if !tally.count(s) {
                            sink.credit[d].add_permits(1);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                });
            }
        }
        Some(rate) => {
            let n = ((plan.duration.as_secs_f64() * rate) as u64).min(plan.max_messages);
            let gap = Duration::from_secs_f64(1.0 / rate);
            let (tally2, ids2, senders2, payload) =
                (tally.clone(), ids.clone(), senders.clone(), plan.payload);
            set.spawn(async move {
                let mut inner = JoinSet::new();
                for i in 0..n {
                    let at = t0 + gap.mul_f64(i as f64);
                    tokio::time::sleep_until(at.into()).await;
                    let d = (i % ids2.len() as u64) as usize;
                    let (tally, ids, senders) = (tally2.clone(), ids2.clone(), senders2.clone());
                    inner.spawn(async move {
                        let now = now_ns();
                        tally
                            .lags
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(now.saturating_sub(at_ns(at)) / 1000);
                        let body = stamped(payload, now, i);
                        let s = senders.send(i as usize, &ids[d], body, i, AckMode::Positive);
                        tally.count(s.await);
                    });
                    while inner.try_join_next().is_some() {}
                }
                while inner.join_next().await.is_some() {}
            });
        }
    }
    while set.join_next().await.is_some() {}

    // Drain: everything accepted delivered, and (emulator) fed back.
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut drained = false;
    while Instant::now() < drain_deadline {
        let accepted = match senders.acked() {
            Some((n, _)) => n - acked0,
            None => tally.accepted.load(Ordering::Relaxed),
        };
        let delivered_ok = sink.delivered() >= accepted;
        let feedback_ok = feedback.is_none_or(|f| f.records() - feedback0 >= accepted);
        if delivered_ok && feedback_ok {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu = cpu.stop();

    let (accepted, last_accept_ns) = match senders.acked() {
        Some((n, last)) => (n - acked0, last),
        None => (
            tally.accepted.load(Ordering::Relaxed),
            tally.last_accept_ns.load(Ordering::Relaxed),
        ),
    };
    let delivered = sink.delivered();
    let fb = feedback.map_or(0, |f| f.records() - feedback0);
    let fb_last = feedback.map_or(0, |f| f.last_ns.load(Ordering::Relaxed));
    let first_error = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    C2dOutcome {
        accepted,
        queue_full: tally.queue_full.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        first_error,
        delivered,
        feedback: fb,
        accepted_per_s: per_s(accepted, t0_ns, last_accept_ns),
        delivered_per_s: per_s(delivered, t0_ns, sink.last_ns.load(Ordering::Relaxed)),
        feedback_per_s: if feedback.is_some() {
            per_s(fb, t0_ns, fb_last)
        } else {
            0.0
        },
        latency: Latency::of(sink.take_latencies()),
        schedule_lag: plan.rate.map(|_| {
            Latency::of(std::mem::take(
                &mut *tally.lags.lock().unwrap_or_else(|p| p.into_inner()),
            ))
        }),
        cpu,
        drained,
        drops: fleet.drops() - drops0,
    }
}

/// One D2C run: `devices` devices, each with `inflight` sends outstanding.
#[derive(Debug, Clone)]
pub struct D2cPlan {
    pub devices: usize,
    pub inflight: usize,
    pub duration: Duration,
    pub max_messages: u64,
    pub payload: usize,
}

#[derive(Debug, Clone, Default)]
pub struct D2cOutcome {
    pub sent: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub per_s: f64,
    /// `send_event` call to PUBACK, µs.
    pub latency: Latency,
    pub cpu: CpuSplit,
    /// Device connections lost during the run.
    pub drops: u64,
}

/// Telemetry from the first `devices` devices of the fleet as fast as PUBACKs come back.
pub async fn run_d2c(fleet: &Fleet, plan: &D2cPlan, server_pid: u32) -> D2cOutcome {
    let devices = plan.devices.clamp(1, fleet.len().max(1));
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let drops0 = fleet.drops();
    let cpu = CpuMeter::start(server_pid);
    let t0 = Instant::now();
    let deadline = t0 + plan.duration;
    let mut set = JoinSet::new();
    for d in 0..devices {
        for _ in 0..plan.inflight.max(1) {
            let client = fleet.clients[d].clone();
            let (next, failed, first_error) = (next.clone(), failed.clone(), first_error.clone());
            let (max, payload) = (plan.max_messages, plan.payload);
            set.spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max {
                        break;
                    }
                    let t = Instant::now();
                    let m = Message::new(stamped(payload, at_ns(t), i));
                    match tokio::time::timeout_at(deadline.into(), client.send_event(m)).await {
                        Ok(Ok(())) => lat.push(t.elapsed().as_micros() as u64),
                        Ok(Err(e)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e.to_string());
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        // Still in flight at the deadline: not counted.
                        Err(_) => break,
                    }
                }
                lat
            });
        }
    }
    let mut all = Vec::new();
    while let Some(j) = set.join_next().await {
        if let Ok(v) = j {
            all.extend(v);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    let sent = all.len() as u64;
    let first_error = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    D2cOutcome {
        sent,
        failed: failed.load(Ordering::Relaxed),
        first_error,
        per_s: if elapsed > 0.0 {
            sent as f64 / elapsed
        } else {
            0.0
        },
        latency: Latency::of(all),
        cpu,
        drops: fleet.drops() - drops0,
    }
}

/// `n` service clients on the emulator (AMQP connects lazily; a probe send opens them).
pub fn service_clients(
    connection_string: &str,
    ca_pem: &str,
    amqp_port: u16,
    https_port: u16,
    n: usize,
) -> BenchResult<Vec<ServiceClient>> {
    (0..n.max(1))
        .map(|_| {
            ServiceClient::builder(connection_string)
                .and_then(|b| {
                    b.trust_ca_pem(ca_pem)
                        .platform_roots(false)
                        .trust_ca_from_env(false)
                        .amqp_port(amqp_port)
                        .https_port(https_port)
                        .build()
                })
                .map_err(|e| format!("service client: {e}"))
        })
        .collect()
}

/// "2 AMQP service client(s)", for table titles.
pub fn describe(s: &Senders) -> String {
    match s {
        Senders::Amqp(_) => format!("{} AMQP service client(s)", s.count()),
        Senders::Mqtt(_) => format!("{} MQTT publisher(s)", s.count()),
    }
}
