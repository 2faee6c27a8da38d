//! D2C read back: device telemetry from MQTT/TLS publish to a back end that reads it.
//!
//! On the emulator the back end is an AMQP consumer on the Event Hubs-compatible endpoint
//! (fe2o3's client, a receiver per partition over one or more TLS connections, SASL PLAIN with
//! the `iothubowner` policy); on mosquitto it is one MQTT subscriber on
//! `devices/+/messages/events/#`. Both hand each body to an [`EventSink`], which reads the send
//! time the device stamped into it (see [`super::load::stamped`]) and keeps the
//! send-to-receive latency. The sequence number in the body carries the run number in its
//! high 32 bits, so what a reader takes from an earlier run is not counted in the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Receiver, Session};
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;
use iothub_device::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::emulator::Emulator;
use super::lean_reader;
use super::load::{Fleet, client_tls, now_ns, stamped};
use super::report::Latency;
use super::sys::{CpuMeter, CpuSplit};
use super::{BenchResult, ctx};

/// Partitions of the bench emulator's event log (`[eventhubs] partition_count`).
pub const PARTITIONS: usize = 4;
/// Link credit of each partition receiver (fe2o3 tops it up at half).
const CREDIT: u32 = 2_000;
/// Longest wait for the last events of a run to reach the reader.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

fn read_stamp(body: &[u8]) -> Option<(u64, u64)> {
    let t = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let s = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((t, s))
}

/// What the readers report into during one run.
pub struct EventSink {
    run: u64,
    received: AtomicU64,
    /// From earlier runs (or not stamped): not counted.
    stale: AtomicU64,
    last_ns: AtomicU64,
    /// Send-to-receive latencies per reader lane, µs.
    latencies: Vec<Mutex<Vec<u32>>>,
}

impl EventSink {
    fn new(run: u64, lanes: usize) -> EventSink {
        EventSink {
            run,
            received: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            latencies: (0..lanes.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    pub(super) fn on_body(&self, lane: usize, body: &[u8]) {
        let now = now_ns();
        match read_stamp(body) {
            Some((t, seq)) if seq >> 32 == self.run => {
                let us = (now.saturating_sub(t) / 1000).min(u64::from(u32::MAX)) as u32;
                if let Some(l) = self.latencies.get(lane % self.latencies.len()) {
                    l.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                }
                self.last_ns.fetch_max(now, Ordering::Relaxed);
                self.received.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.stale.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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

/// The AMQP side kept open while the reader runs.
struct AmqpHandles {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
}

/// A back end reading telemetry: the emulator's Event Hubs consumer or a mosquitto subscriber.
pub struct Reader {
    sink: watch::Sender<Arc<EventSink>>,
    lanes: usize,
    runs: u64,
    tasks: JoinSet<()>,
    amqp: Vec<AmqpHandles>,
    mqtt: Option<AsyncClient>,
    /// The first error a reader task met (it stops then).
    error: Arc<Mutex<Option<String>>>,
}

impl Reader {
    fn new(lanes: usize) -> Reader {
        let (sink, _) = watch::channel(Arc::new(EventSink::new(0, lanes)));
        Reader {
            sink,
            lanes,
            runs: 0,
            tasks: JoinSet::new(),
            amqp: Vec::new(),
            mqtt: None,
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// One receiver per partition of the emulator's Event Hubs-compatible endpoint, spread
    /// over `connections` TLS connections on the AMQP port (partition `p` on connection
    /// `p % connections`), each from the start of its partition (empty before the first run).
    ///
    /// fe2o3 runs each connection and each session as one task on either side, so the
    /// connection count decides how many lanes the reader's frame handling has; an Event Hubs
    /// processor spread over several hosts reads over a connection per partition.
    pub async fn event_hubs(emu: &Emulator, connections: usize) -> BenchResult<Reader> {
        let mut reader = Reader::new(PARTITIONS);
        let (key_name, token) = policy_token(emu)?;
        let connections = connections.clamp(1, PARTITIONS);
        for c in 0..connections {
            let tls = consumer_tls(emu).await?;
            let mut connection = Connection::builder()
                .container_id(format!("iothub-bench-consumer-{c}"))
                .hostname("localhost")
                .sasl_profile(SaslProfile::Plain {
                    username: format!("{key_name}@sas.root.{}", emu.hub_name),
                    password: token.clone(),
                })
                .open_with_stream(tls)
                .await
                .map_err(ctx("consumer AMQP open"))?;
            let session = Session::begin(&mut connection)
                .await
                .map_err(ctx("consumer AMQP session"))?;
            reader.amqp.push(AmqpHandles {
                connection,
                session,
            });
        }
        for p in 0..PARTITIONS {
            let address = format!("{}/ConsumerGroups/$Default/Partitions/{p}", emu.hub_name);
            let session = &mut reader.amqp[p % connections].session;
            let mut receiver = Receiver::builder()
                .name(format!("bench-partition-{p}"))
                .source(address)
                .target("iothub-bench")
                .credit_mode(CreditMode::Auto(CREDIT))
                .attach(session)
                .await
                .map_err(|e| format!("attaching the partition {p} receiver: {e}"))?;
            let rx = reader.sink.subscribe();
            let error = reader.error.clone();
            reader.tasks.spawn(async move {
                let failed = |e: String| {
                    error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(format!("partition {p}: {e}"));
                };
                loop {
                    let d = match receiver.recv::<Body<Value>>().await {
                        Ok(d) => d,
                        Err(e) => return failed(e.to_string()),
                    };
                    if let Body::Data(batch) = d.body()
                        && let Some(first) = batch.first()
                    {
                        let sink = rx.borrow().clone();
                        sink.on_body(p, &first.0);
                    }
                    // Pre-settled: no disposition goes out, but fe2o3 counts it for credit.
                    if let Err(e) = receiver.accept(&d).await {
                        return failed(e.to_string());
                    }
                }
            });
        }
        Ok(reader)
    }

    /// The same receivers as [`Reader::event_hubs`], read by [`lean_reader`]: each
    /// connection's task walks the frames and takes only the bodies.
    pub async fn event_hubs_lean(emu: &Emulator, connections: usize) -> BenchResult<Reader> {
        let mut reader = Reader::new(PARTITIONS);
        let (key_name, token) = policy_token(emu)?;
        let connections = connections.clamp(1, PARTITIONS);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<BenchResult<()>>(connections);
        for c in 0..connections {
            let tls = consumer_tls(emu).await?;
            let plan = lean_reader::LeanPlan {
                hub_name: emu.hub_name.clone(),
                username: format!("{key_name}@sas.root.{}", emu.hub_name),
                token: token.clone(),
                partitions: (c..PARTITIONS).step_by(connections).collect(),
                credit: CREDIT,
            };
            let rx = reader.sink.subscribe();
            let error = reader.error.clone();
            let ready = ready_tx.clone();
            reader.tasks.spawn(async move {
                let on_ready = || {
                    let _ = ready.try_send(Ok(()));
                };
                let r = lean_reader::read(tls, plan, || rx.borrow().clone(), on_ready).await;
                if let Err(e) = r {
                    let _ = ready.try_send(Err(e.clone()));
                    error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(format!("connection {c}: {e}"));
                }
            });
        }
        // Every receiver attached (or the first failure) before the first run starts.
        for _ in 0..connections {
            match tokio::time::timeout(Duration::from_secs(10), ready_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => return Err(format!("lean Event Hubs reader: {e}")),
                Ok(None) | Err(_) => {
                    return Err("lean Event Hubs reader: not attached in 10 s".into());
                }
            }
        }
        Ok(reader)
    }

    /// One MQTT/TLS subscriber on every device's telemetry topic, QoS 0 (the counterpart of
    /// the pre-settled transfers Event Hubs readers get).
    pub async fn mqtt(port: u16, ca_pem: &str) -> BenchResult<Reader> {
        let mut reader = Reader::new(1);
        let mut o = MqttOptions::new("iothub-bench-subscriber", "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            client_tls(ca_pem)?,
        )));
        o.set_keep_alive(Duration::from_secs(60));
        o.set_clean_session(true);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        client
            .subscribe("devices/+/messages/events/#", QoS::AtMostOnce)
            .await
            .map_err(ctx("subscribe"))?;
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "mosquitto subscriber: no SUBACK within 10 s".to_owned())?;
        subscribed.map_err(|e| format!("mosquitto subscriber: {e}"))?;
        let rx = reader.sink.subscribe();
        let error = reader.error.clone();
        reader.tasks.spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let sink = rx.borrow().clone();
                        sink.on_body(0, &p.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e.to_string());
                        return;
                    }
                }
            }
        });
        reader.mqtt = Some(client);
        Ok(reader)
    }

    /// A fresh sink for the next run; its number goes into the high bits of every sequence.
    fn new_run(&mut self) -> Arc<EventSink> {
        self.runs += 1;
        let sink = Arc::new(EventSink::new(self.runs, self.lanes));
        self.sink.send_replace(sink.clone());
        sink
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Detaches and closes (bounded).
    pub async fn close(mut self) {
        self.tasks.abort_all();
        for mut h in self.amqp.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = h.session.end().await;
                let _ = h.connection.close().await;
            })
            .await;
        }
        if let Some(c) = self.mqtt.take() {
            let _ = c.try_disconnect();
        }
    }
}

/// A TLS connection to the emulator's AMQP port, as a consumer opens it.
async fn consumer_tls(
    emu: &Emulator,
) -> BenchResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", emu.amqp_port))
        .await
        .map_err(ctx("consumer TCP connect"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(ctx("server name"))?
        .to_owned();
    tokio_rustls::TlsConnector::from(client_tls(&emu.ca_pem)?)
        .connect(name, tcp)
        .await
        .map_err(ctx("consumer TLS handshake"))
}

/// The service policy's name and a SAS token it signs for the hub host, valid an hour.
fn policy_token(emu: &Emulator) -> BenchResult<(String, String)> {
    let (key_name, key) = policy_of(&emu.service_connection_string)?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(ctx("clock"))?
        .as_secs()
        + 3600;
    let token = iothub_protocol::sas::build_token("localhost", &key, Some(&key_name), expiry)
        .map_err(ctx("SAS token"))?;
    Ok((key_name, token))
}

/// `SharedAccessKeyName` and `SharedAccessKey` of a service connection string.
fn policy_of(cs: &str) -> BenchResult<(String, String)> {
    let field = |name: &str| {
        cs.split(';')
            .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    match (field("SharedAccessKeyName"), field("SharedAccessKey")) {
        (Some(n), Some(k)) => Ok((n, k)),
        _ => Err(format!("no policy in the service connection string {cs}")),
    }
}

/// One end-to-end run.
#[derive(Debug, Clone)]
pub struct EventPlan {
    /// The first `devices` devices of the fleet publish.
    pub devices: usize,
    /// Closed loop: sends outstanding per device. Ignored with `rate`.
    pub inflight: usize,
    /// Open loop at this many events per second over all devices instead.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub max_messages: u64,
    pub payload: usize,
}

/// What one end-to-end run measured.
#[derive(Debug, Clone, Default)]
pub struct EventOutcome {
    /// PUBACKed sends.
    pub acked: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Events the reader took from this run.
    pub received: u64,
    pub acked_per_s: f64,
    /// Received per second, from the first send to the last receive.
    pub received_per_s: f64,
    /// Device send call to reader receive, µs.
    pub latency: Latency,
    pub cpu: CpuSplit,
    /// Everything acked reached the reader before the drain timeout.
    pub drained: bool,
    pub reader_error: Option<String>,
}

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    failed: AtomicU64,
    last_ack_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn count(&self, r: Result<(), iothub_device::Error>) {
        match r {
            Ok(()) => {
                self.last_ack_ns.fetch_max(now_ns(), Ordering::Relaxed);
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e.to_string());
            }
        }
    }
}

fn per_s(n: u64, from_ns: u64, to_ns: u64) -> f64 {
    let secs = to_ns.saturating_sub(from_ns) as f64 / 1e9;
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Telemetry from the fleet to `reader`: closed loop (`inflight` per device) or at a fixed
/// rate; then waits until the reader has everything that was acked.
pub async fn run_events(
    fleet: &Fleet,
    reader: &mut Reader,
    plan: &EventPlan,
    server_pid: u32,
) -> EventOutcome {
    let devices = plan.devices.clamp(1, fleet.len().max(1));
    let sink = reader.new_run();
    let run_bits = sink.run << 32;
    let tally = Arc::new(Tally::default());
    let cpu = CpuMeter::start(server_pid);
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let deadline = t0 + plan.duration;
    let mut set = JoinSet::new();
    match plan.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            for d in 0..devices {
                for _ in 0..plan.inflight.max(1) {
                    let client = fleet.clients[d].clone();
                    let (next, tally) = (next.clone(), tally.clone());
                    let (max, payload) = (plan.max_messages, plan.payload);
                    set.spawn(async move {
                        while Instant::now() < deadline {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= max {
                                return;
                            }
                            let m = Message::new(stamped(payload, now_ns(), run_bits | i));
                            match tokio::time::timeout_at(deadline.into(), client.send_event(m))
                                .await
                            {
                                Ok(r) => {
                                    let failed = r.is_err();
                                    tally.count(r);
                                    if failed {
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                    }
                                }
                                // In flight at the deadline: not counted as acked (it may
                                // still reach the reader, and then counts there).
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        }
        Some(rate) => {
            let n = ((plan.duration.as_secs_f64() * rate) as u64).min(plan.max_messages);
            let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let clients: Vec<_> = fleet.clients[..devices].to_vec();
            let (tally2, payload) = (tally.clone(), plan.payload);
            set.spawn(async move {
                let mut inner = JoinSet::new();
                for i in 0..n {
                    tokio::time::sleep_until((t0 + gap.mul_f64(i as f64)).into()).await;
                    let client = clients[(i % clients.len() as u64) as usize].clone();
                    let tally = tally2.clone();
                    inner.spawn(async move {
                        let m = Message::new(stamped(payload, now_ns(), run_bits | i));
                        tally.count(client.send_event(m).await);
                    });
                    while inner.try_join_next().is_some() {}
                }
                while inner.join_next().await.is_some() {}
            });
        }
    }
    while set.join_next().await.is_some() {}

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut drained = false;
    while Instant::now() < drain_deadline {
        if sink.received() >= tally.acked.load(Ordering::Relaxed) {
            drained = true;
            break;
        }
        if reader.error().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu = cpu.stop();
    let acked = tally.acked.load(Ordering::Relaxed);
    let received = sink.received();
    EventOutcome {
        acked,
        failed: tally.failed.load(Ordering::Relaxed),
        first_error: tally
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        received,
        acked_per_s: per_s(acked, t0_ns, tally.last_ack_ns.load(Ordering::Relaxed)),
        received_per_s: per_s(received, t0_ns, sink.last_ns.load(Ordering::Relaxed)),
        latency: Latency::of(sink.take_latencies()),
        cpu,
        drained,
        reader_error: reader.error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_comes_from_the_connection_string() {
        let cs = "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5PQ==";
        assert_eq!(
            policy_of(cs).unwrap(),
            ("iothubowner".to_owned(), "a2V5PQ==".to_owned())
        );
        assert!(policy_of("HostName=localhost;DeviceId=d;SharedAccessKey=x").is_err());
    }

    #[test]
    fn a_sink_counts_only_its_own_run() {
        let sink = EventSink::new(2, 4);
        sink.on_body(1, &stamped(32, now_ns(), (2 << 32) | 7));
        sink.on_body(3, &stamped(32, now_ns(), (1 << 32) | 7));
        sink.on_body(0, b"short");
        assert_eq!(sink.received(), 1);
        assert_eq!(sink.stale.load(Ordering::Relaxed), 2);
        assert_eq!(sink.take_latencies().len(), 1);
    }
}
