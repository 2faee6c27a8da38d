//! One round of load from several clients at once, every operation written in the ledger
//! before it is sent and marked when it is acknowledged:
//!
//! - two service clients send C2D messages (AMQP, `ack=full`) to the `c2d-*` devices;
//! - the `c2d-*` devices receive over HTTPS and complete, reject or keep each message (an
//!   HTTPS settle is answered, unlike an MQTT PUBACK, so it can be acknowledged);
//! - two registry writers create devices and replace their keys (HTTPS);
//! - a twin writer patches desired `v` on the `tel-*` twins (HTTPS);
//! - the `tel-*` devices send telemetry and patch reported `r` (MQTT/TLS);
//! - a feedback receiver writes down every feedback record (AMQP).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use iothub_device::{CompletionMode, DeviceClient, Transport};
use iothub_service::{AckMode, Device, ErrorCode, IfMatch, Message, ServiceClient};
use serde_json::json;
use tokio::task::JoinSet;

use crate::ledger::{Ledger, Outcome, Sent, Settle};
use crate::process::Process;
use crate::rng::Rng;

/// The key of every seeded device (32 bytes, base64). Not a secret.
pub const DEVICE_KEY: &str = "Y3Jhc2gtdGVzdC1kZXZpY2Uta2V5LTMyLWJ5dGVzISE=";
/// Devices that receive C2D over HTTPS.
pub const C2D_DEVICES: usize = 4;
/// Devices that send telemetry and reported properties over MQTT.
pub const TEL_DEVICES: usize = 4;
const SENDERS: usize = 2;
const REGISTRY_WRITERS: usize = 2;
/// Every client call gives up after this; the crash ends calls far sooner.
const TIMEOUT: Duration = Duration::from_secs(5);

pub fn c2d_device(i: usize) -> String {
    format!("c2d-{i}")
}

pub fn tel_device(i: usize) -> String {
    format!("tel-{i}")
}

/// The emulator's configuration: the seeded devices and a feedback window of 0, so every
/// outcome's record is available at once.
pub fn config_toml() -> String {
    let mut s = String::from("[hub]\nfeedback_window_ms = 0\n\n");
    let ids = (0..C2D_DEVICES)
        .map(c2d_device)
        .chain((0..TEL_DEVICES).map(tel_device));
    for id in ids {
        s.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nprimary_key = \"{DEVICE_KEY}\"\n\n"
        ));
    }
    s
}

fn lock(l: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes why a worker stops (normally: the emulator is gone).
fn stopped(l: &Mutex<Ledger>, worker: &str, e: impl std::fmt::Display) {
    lock(l)
        .stops
        .push((std::time::Instant::now(), format!("{worker}: {e}")));
}

/// The load of one round, running until [`Round::stop`].
pub struct Round {
    tasks: JoinSet<()>,
    service: Vec<ServiceClient>,
    devices: Vec<DeviceClient>,
}

impl Round {
    /// Connects every client, then starts the load.
    pub async fn start(
        p: &Process,
        ledger: &Arc<Mutex<Ledger>>,
        round: usize,
        rng: &mut Rng,
    ) -> Result<Round, String> {
        let service = (0..SENDERS)
            .map(|_| {
                ServiceClient::builder(&p.service_connection_string)
                    .and_then(|b| {
                        b.trust_ca_pem(&p.ca_pem)
                            .platform_roots(false)
                            .trust_ca_from_env(false)
                            .amqp_port(p.amqp_port)
                            .https_port(p.https_port)
                            .connect_timeout(TIMEOUT)
                            .request_timeout(TIMEOUT)
                            .build()
                    })
                    .map_err(|e| format!("service client: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cs =
            |id: &str| format!("HostName=localhost;DeviceId={id};SharedAccessKey={DEVICE_KEY}");
        let mut connects = JoinSet::new();
        for i in 0..C2D_DEVICES + TEL_DEVICES {
            let (id, transport, port) = if i < C2D_DEVICES {
                (c2d_device(i), Transport::Https, p.https_port)
            } else {
                (tel_device(i - C2D_DEVICES), Transport::Mqtt, p.mqtt_port)
            };
            let (cs, ca) = (cs(&id), p.ca_pem.clone());
            connects.spawn(async move {
                let c = DeviceClient::builder(&cs)?
                    .transport(transport)
                    .port(port)
                    .platform_roots(false)
                    .trust_ca_from_env(false)
                    .trust_ca_pem(ca)
                    .completion_mode(CompletionMode::Manual)
                    .poll_interval(Duration::from_millis(10))
                    .connect_timeout(TIMEOUT)
                    .request_timeout(TIMEOUT)
                    .connect()
                    .await?;
                Ok::<_, iothub_device::Error>((i, c))
            });
        }
        let mut devices: Vec<Option<DeviceClient>> = vec![None; C2D_DEVICES + TEL_DEVICES];
        while let Some(r) = connects.join_next().await {
            let (i, c) = r
                .map_err(|e| format!("device connect task: {e}"))?
                .map_err(|e| format!("device connect: {e}"))?;
            devices[i] = Some(c);
        }
        let devices: Vec<DeviceClient> = devices.into_iter().flatten().collect();

        let mut tasks = JoinSet::new();
        for (k, svc) in service.iter().enumerate() {
            let (svc, l, r) = (svc.clone(), ledger.clone(), rng.fork());
            tasks.spawn(send_c2d(svc, l, r, format!("r{round}-s{k}")));
        }
        for c in &devices[..C2D_DEVICES] {
            tasks.spawn(receive_c2d(c.clone(), ledger.clone(), rng.fork()));
        }
        for (k, c) in devices[C2D_DEVICES..].iter().enumerate() {
            tasks.spawn(telemetry(c.clone(), ledger.clone(), tel_device(k), round));
        }
        for w in 0..REGISTRY_WRITERS {
            let (svc, l, r) = (service[w % SENDERS].clone(), ledger.clone(), rng.fork());
            tasks.spawn(registry(svc, l, r, w, round));
        }
        tasks.spawn(desired(service[0].clone(), ledger.clone(), round));
        tasks.spawn(feedback(service[1 % SENDERS].clone(), ledger.clone()));
        Ok(Round {
            tasks,
            service,
            devices,
        })
    }

    /// Stops the load (after the crash): every task dropped where it was, every client
    /// closed, so nothing of this round reaches the restarted emulator.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let mut closing = JoinSet::new();
        for c in self.devices.drain(..) {
            closing.spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT, c.close()).await;
            });
        }
        for s in self.service.drain(..) {
            closing.spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT, s.close()).await;
            });
        }
        while closing.join_next().await.is_some() {}
    }
}

async fn send_c2d(svc: ServiceClient, ledger: Arc<Mutex<Ledger>>, mut rng: Rng, prefix: String) {
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        let device = c2d_device(rng.below(C2D_DEVICES as u64) as usize);
        let mut m = Message::new(format!("crash test {id}"));
        m.system.message_id = Some(id.clone().into());
        m.system.ack = AckMode::Full;
        lock(&ledger).sends.insert(
            id.clone(),
            Sent {
                device: device.clone(),
                acked: false,
            },
        );
        match svc.send_c2d(&device, &m).await {
            Ok(()) => {
                let mut l = lock(&ledger);
                if let Some(s) = l.sends.get_mut(&id) {
                    s.acked = true;
                }
                l.acked.c2d_sends += 1;
            }
            // The receivers are behind; the check forgets this one (it is not pending).
            Err(e) if e.code() == Some(ErrorCode::DeviceMaximumQueueDepthExceeded) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return stopped(&ledger, &prefix, e),
        }
        tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
    }
}

async fn receive_c2d(c: DeviceClient, ledger: Arc<Mutex<Ledger>>, mut rng: Rng) {
    loop {
        let m = match c.recv().await {
            Ok(m) => m,
            Err(e) => return stopped(&ledger, c.device_id(), e),
        };
        let id = m.message_id().map(|i| i.canonical()).unwrap_or_default();
        let outcome = match rng.below(10) {
            0..=5 => Outcome::Complete,
            6..=8 => Outcome::Reject,
            // Kept locked: after the crash it must be back in the queue.
            _ => continue,
        };
        lock(&ledger).settles.insert(
            id.clone(),
            Settle {
                outcome,
                acked: false,
            },
        );
        let r = match outcome {
            Outcome::Complete => m.complete().await,
            Outcome::Reject => m.reject().await,
        };
        if let Err(e) = r {
            return stopped(&ledger, &format!("{} {outcome:?} {id}", c.device_id()), e);
        }
        let mut l = lock(&ledger);
        if let Some(s) = l.settles.get_mut(&id) {
            s.acked = true;
        }
        l.acked.settles += 1;
    }
}

async fn telemetry(c: DeviceClient, ledger: Arc<Mutex<Ledger>>, id: String, round: usize) {
    for n in 0u64.. {
        lock(&ledger).telemetry.entry(id.clone()).or_default().high += 1;
        let m = iothub_device::Message::new(format!("{id} telemetry {n}"));
        if let Err(e) = c.send_event(m).await {
            return stopped(&ledger, &id, e);
        }
        {
            let mut l = lock(&ledger);
            l.telemetry.entry(id.clone()).or_default().low += 1;
            l.acked.telemetry += 1;
        }
        if n % 4 == 3 {
            let v = (round as i64) * 1_000_000 + n as i64;
            lock(&ledger)
                .twins
                .entry(id.clone())
                .or_default()
                .reported
                .doubt = Some(v);
            let version = match c.update_reported(&json!({ "r": v })).await {
                Ok(v) => v,
                Err(e) => return stopped(&ledger, &id, e),
            };
            let mut l = lock(&ledger);
            let t = l.twins.entry(id.clone()).or_default();
            t.reported.acked = Some(v);
            t.reported.doubt = None;
            t.min_version = t.min_version.max(version);
            l.acked.reported += 1;
        }
    }
}

async fn registry(
    svc: ServiceClient,
    ledger: Arc<Mutex<Ledger>>,
    mut rng: Rng,
    writer: usize,
    round: usize,
) {
    for n in 0.. {
        let key = base64::engine::general_purpose::STANDARD.encode(rng.bytes32());
        // An acknowledged device of this writer's with nothing in flight, or a new one.
        let existing = {
            let l = lock(&ledger);
            let mine: Vec<&String> = l
                .registry
                .iter()
                .filter(|(_, (w, v))| *w == writer && v.doubt.is_none() && v.acked.is_some())
                .map(|(id, _)| id)
                .collect();
            if mine.len() < 3 || rng.below(10) < 3 {
                None
            } else {
                Some(mine[rng.below(mine.len() as u64) as usize].clone())
            }
        };
        let id = existing
            .clone()
            .unwrap_or_else(|| format!("reg-r{round}-w{writer}-{n}"));
        let mut d = Device::new(id.clone());
        d.authentication.symmetric_key.primary_key = Some(key.clone());
        d.authentication.symmetric_key.secondary_key = Some(key.clone());
        lock(&ledger)
            .registry
            .entry(id.clone())
            .or_insert_with(|| (writer, Default::default()))
            .1
            .doubt = Some(key.clone());
        let r = match existing {
            Some(_) => svc.update_device(&d, IfMatch::Any).await,
            None => svc.create_device(&d).await,
        };
        if let Err(e) = r {
            return stopped(&ledger, &id, e);
        }
        let mut l = lock(&ledger);
        if let Some((_, w)) = l.registry.get_mut(&id) {
            w.acked = Some(key);
            w.doubt = None;
        }
        l.acked.registry += 1;
    }
}

async fn desired(svc: ServiceClient, ledger: Arc<Mutex<Ledger>>, round: usize) {
    for n in 0usize.. {
        let id = tel_device(n % TEL_DEVICES);
        let v = (round * 1_000_000 + n) as i64;
        lock(&ledger)
            .twins
            .entry(id.clone())
            .or_default()
            .desired
            .doubt = Some(v);
        let patch = json!({ "properties": { "desired": { "v": v } } });
        let twin = match svc.update_twin(&id, &patch, IfMatch::Any).await {
            Ok(t) => t,
            Err(e) => return stopped(&ledger, "desired", e),
        };
        let mut l = lock(&ledger);
        let t = l.twins.entry(id).or_default();
        t.desired.acked = Some(v);
        t.desired.doubt = None;
        t.min_version = t.min_version.max(twin.version.unwrap_or(0));
        l.acked.desired += 1;
    }
}

async fn feedback(svc: ServiceClient, ledger: Arc<Mutex<Ledger>>) {
    let mut rx = match svc.feedback().await {
        Ok(rx) => rx,
        Err(e) => return stopped(&ledger, "feedback", e),
    };
    loop {
        let batch = match rx.recv().await {
            Ok(b) => b,
            Err(e) => return stopped(&ledger, "feedback", e),
        };
        record_feedback(&ledger, batch.records());
        // Not acknowledged by the hub (an AMQP disposition has no answer): a batch may come
        // again after the crash, with the same records.
        if let Err(e) = batch.complete().await {
            return stopped(&ledger, "feedback complete", e);
        }
    }
}

/// Writes down a batch's records.
pub fn record_feedback(ledger: &Mutex<Ledger>, records: &[iothub_service::FeedbackRecord]) {
    let mut l = lock(ledger);
    for r in records {
        let at = r.enqueued_time_utc.unix_timestamp_nanos() / 1_000_000;
        let fresh = l
            .feedback
            .entry(r.original_message_id.clone())
            .or_default()
            .insert((r.status_code.as_str().to_owned(), at));
        if fresh {
            l.acked.feedback_records += 1;
        }
    }
}
