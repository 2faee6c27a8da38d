//! Scenario 7: device twins. Desired-property round trip (service `PATCH /twins/{id}` → the
//! device's MQTT notification) with 1 and with 1,000 subscribed devices, reported-property
//! patches per second from 100 MQTT devices, and a tag query over 10,000 twins, per page.

use std::time::{Duration, Instant};

use iothub_device::{DesiredUpdates, DeviceClient};
use iothub_service::{ExportImportDevice, IfMatch, ImportMode, ServiceClient};
use serde_json::json;

use super::{connect_json, connect_note, emulator_rig, ids, lengths};
use crate::bench::load::Senders;
use crate::bench::report::{Latency, Table, int, json_line};
use crate::bench::sys::round3;
use crate::bench::{BenchResult, Cli, Mode};

const FLEET: usize = 1000;
const REPORTERS: usize = 100;
const QUERY_TWINS: usize = 10_000;
const PAGE: usize = 100;

/// Round trips: the service patches `devices[k % n]`'s desired properties and waits for that
/// device's notification; microseconds each.
async fn round_trips(
    service: &ServiceClient,
    ids: &[String],
    streams: &mut [DesiredUpdates],
    count: usize,
) -> BenchResult<Vec<u64>> {
    let mut samples = Vec::with_capacity(count);
    for k in 0..count {
        let i = k % streams.len();
        let t = Instant::now();
        let patch = json!({"properties": {"desired": {"n": k}}});
        service
            .update_twin(&ids[i], &patch, IfMatch::Any)
            .await
            .map_err(|e| format!("update_twin: {e}"))?;
        let n = tokio::time::timeout(Duration::from_secs(10), streams[i].next())
            .await
            .map_err(|_| format!("no desired notification for {} within 10 s", ids[i]))?
            .ok_or("the desired stream ended")?;
        if n.patch["n"] != json!(k) {
            return Err(format!("{} got {} for patch {k}", ids[i], n.patch));
        }
        samples.push(t.elapsed().as_micros() as u64);
    }
    Ok(samples)
}

async fn subscribe(clients: &[DeviceClient]) -> BenchResult<Vec<DesiredUpdates>> {
    let streams = clients
        .iter()
        .map(|c| {
            c.desired_updates()
                .map_err(|e| format!("desired_updates: {e}"))
        })
        .collect::<BenchResult<Vec<_>>>()?;
    // A twin read after subscribing: the hub handled the SUBSCRIBE before answering it.
    let mut reads = tokio::task::JoinSet::new();
    for c in clients {
        let c = c.clone();
        reads.spawn(async move { c.twin().await.map(|_| ()) });
    }
    while let Some(r) = reads.join_next().await {
        r.map_err(|e| format!("twin task: {e}"))?
            .map_err(|e| format!("twin: {e}"))?;
    }
    Ok(streams)
}

/// Scenario 7: twins.
pub(super) async fn twin(cli: &Cli) -> BenchResult<()> {
    let mode = cli.mode();
    let (trips, run) = match mode {
        Mode::Quick => (500, lengths(mode).run),
        Mode::Full => (5_000, lengths(mode).run),
    };
    let mut rig = emulator_rig(cli, FLEET).await?;
    let service = match &rig.senders {
        Senders::Amqp(c) => c[0].clone(),
        _ => return Err("the twin scenario needs the emulator's service client".into()),
    };
    let c = rig
        .fleet
        .connect(
            &rig.target,
            ids(0..FLEET),
            cli.connect_concurrency,
            usize::MAX,
        )
        .await;
    let mut table = Table::new(
        format!(
            "Twins ({} mode): desired round trip, reported patches, query pages",
            mode.name()
        ),
        &["run", "count", "rate or latency p50/p99/max ms", "notes"],
    );
    table.note(connect_note("fleet", &c));
    let clients = rig.fleet.clients.clone();
    let fleet_ids = rig.fleet.ids.clone();

    let mut one = subscribe(&clients[..1]).await?;
    let lat1 = Latency::of(round_trips(&service, &fleet_ids[..1], &mut one, trips).await?);
    table.row(vec![
        "desired round trip, 1 subscribed device".into(),
        int(lat1.n as f64),
        lat1.text(),
        "service PATCH (HTTPS) → MQTT notification".into(),
    ]);
    drop(one);
    let mut all = subscribe(&clients).await?;
    let lat_n = Latency::of(round_trips(&service, &fleet_ids, &mut all, trips).await?);
    table.row(vec![
        format!("desired round trip, {FLEET} subscribed devices"),
        int(lat_n.n as f64),
        lat_n.text(),
        "round robin over the devices".into(),
    ]);
    drop(all);

    let reporters = &clients[..REPORTERS.min(clients.len())];
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in reporters {
        let client = client.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut first_error = None;
            while t0.elapsed() < run {
                match client.update_reported(&json!({"seq": n})).await {
                    Ok(_) => n += 1,
                    Err(e) => {
                        first_error = Some(e.to_string());
                        break;
                    }
                }
            }
            (n, first_error)
        });
    }
    let mut counts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        counts.push(r.map_err(|e| format!("reporter task: {e}"))?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let reported: u64 = counts.iter().map(|(n, _)| n).sum();
    let reported_per_s = reported as f64 / elapsed.max(1e-9);
    let errors: Vec<String> = counts.into_iter().filter_map(|(_, e)| e).collect();
    table.row(vec![
        format!(
            "reported patches, {} devices × 1 in flight",
            reporters.len()
        ),
        int(reported as f64),
        format!("{}/s", int(reported_per_s)),
        errors.first().cloned().unwrap_or_default(),
    ]);

    let chunks: Vec<Vec<ExportImportDevice>> = (0..QUERY_TWINS)
        .map(|i| {
            let mut d = ExportImportDevice::new(format!("q-{i:05}"), ImportMode::Create);
            d.tags = json!({"floor": i % 10}).as_object().cloned();
            d
        })
        .collect::<Vec<_>>()
        .chunks(100)
        .map(<[ExportImportDevice]>::to_vec)
        .collect();
    for chunk in &chunks {
        service
            .bulk_registry(chunk)
            .await
            .map_err(|e| format!("bulk_registry: {e}"))?;
    }
    let q = "SELECT * FROM devices WHERE tags.floor = 3";
    let mut page_us = Vec::new();
    let mut rows = 0;
    let mut token: Option<String> = None;
    loop {
        let t = Instant::now();
        let page = service
            .query_page(q, PAGE, token.as_deref())
            .await
            .map_err(|e| format!("query: {e}"))?;
        page_us.push(t.elapsed().as_micros() as u64);
        rows += page.items.len();
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let pages = Latency::of(page_us);
    table.row(vec![
        format!(
            "query over {} twins, pages of {PAGE}",
            int((QUERY_TWINS + FLEET) as f64)
        ),
        format!("{rows} rows, {} pages", pages.n),
        pages.text(),
        format!("`{q}`"),
    ]);
    table.print();
    json_line(
        "twin",
        mode.name(),
        json!({
            "connect": connect_json(&c),
            "desired_round_trip_1": lat1.json(),
            "desired_round_trip_fleet": lat_n.json(),
            "fleet": FLEET,
            "reported": {"devices": reporters.len(), "patches": reported, "per_s": round3(reported_per_s)},
            "query": {"twins": QUERY_TWINS + FLEET, "rows": rows, "page_size": PAGE, "per_page": pages.json()},
        }),
    );
    rig.finish().await;
    Ok(())
}
