//! `GET /dashboard/api/events`: server-sent events that keep the page current without polling.
//!
//! Events:
//! - `changed` `{"events": bool, "feedback": bool}`: the hub changed; the page re-reads what
//!   it shows (the device page, the open device, the feedback queue when `feedback`).
//! - `telemetry` `[{deviceId, moduleId, enqueuedTime, ...message}]`: telemetry appended to
//!   the event log since the last one, read with unregistered cursors (the dashboard is not a
//!   consumer group reader, so it never displaces or counts as an Event Hubs receiver).
//!
//! Changes are coalesced: after a change the stream waits [`COALESCE`] and then reports the
//! latest counters once, so ten thousand devices sending telemetry cost the page a few events
//! per second, never one per operation. At most [`MAX_TELEMETRY`] messages go out per notice;
//! beyond that the feed skips ahead and says how many it dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use iothub_protocol::EventPosition;
use iothub_protocol::time_format::format_millis;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::guard::Read;
use crate::driver::{Changes, HubHandle};
use crate::http::AppState;
use crate::hub::event_log::{Cursor, EventSource};
use crate::hub::views::MessageView;

/// How long the stream gathers changes before it reports them.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Most telemetry messages per notice.
pub const MAX_TELEMETRY: usize = 100;

struct Feed {
    hub: HubHandle,
    changes: watch::Receiver<Changes>,
    last: Changes,
    cursors: Vec<Cursor>,
    shutdown: CancellationToken,
    queued: VecDeque<SseEvent>,
}

fn latest_cursors(hub: &HubHandle) -> Vec<Cursor> {
    hub.read(|h| {
        (0..h.event_log().partition_count())
            .filter_map(|p| h.cursor(&p.to_string(), &EventPosition::Latest).ok())
            .collect()
    })
}

fn sse(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

impl Feed {
    /// Telemetry appended since the last read, oldest partition first, at most
    /// [`MAX_TELEMETRY`]; the number of messages skipped when there were more.
    fn telemetry(&mut self) -> (Vec<Value>, u64) {
        let cursors = &mut self.cursors;
        let (events, skipped) = self.hub.read(|h| {
            let mut out = Vec::new();
            let mut skipped = 0_u64;
            for c in cursors.iter_mut() {
                let room = MAX_TELEMETRY.saturating_sub(out.len());
                let mut got = h.read_events(c, room);
                out.append(&mut got);
                if out.len() >= MAX_TELEMETRY && h.has_events(c) {
                    let p = c.partition().to_string();
                    if let Ok(latest) = h.cursor(&p, &EventPosition::Latest) {
                        let gap = latest.next_sequence_number() - c.next_sequence_number();
                        skipped += u64::try_from(gap).unwrap_or(0);
                        *c = latest;
                    }
                }
            }
            (out, skipped)
        });
        let items = events
            .iter()
            .filter(|e| e.source == EventSource::Telemetry)
            .map(|e| {
                let mut v = json!(MessageView::of(&e.message));
                if let Some(o) = v.as_object_mut() {
                    o.insert("deviceId".into(), json!(e.origin.device_id));
                    o.insert("moduleId".into(), json!(e.origin.module_id));
                    o.insert("enqueuedTime".into(), json!(format_millis(e.enqueued_time)));
                    o.insert("partition".into(), json!(e.partition));
                }
                v
            })
            .collect();
        (items, skipped)
    }

    /// Waits for the next change and turns it into events; `false` when the stream must end.
    async fn wait(&mut self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => return false,
            r = self.changes.changed() => if r.is_err() { return false },
        }
        tokio::select! {
            () = self.shutdown.cancelled() => return false,
            () = tokio::time::sleep(COALESCE) => {}
        }
        let now = *self.changes.borrow_and_update();
        let events = now.events != self.last.events;
        let feedback = now.feedback != self.last.feedback;
        self.last = now;
        self.queued.push_back(sse(
            "changed",
            &json!({ "events": events, "feedback": feedback }),
        ));
        if events {
            let (items, skipped) = self.telemetry();
            if !items.is_empty() || skipped > 0 {
                self.queued.push_back(sse(
                    "telemetry",
                    &json!({ "messages": items, "skipped": skipped }),
                ));
            }
        }
        true
    }
}

fn stream(feed: Feed) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(e) = feed.queued.pop_front() {
                return Some((Ok(e), feed));
            }
            if !feed.wait().await {
                return None;
            }
        }
    })
}

/// `GET /dashboard/api/events`.
pub async fn events(State(st): State<AppState>, _: Read) -> impl IntoResponse {
    let hub = st.ctx.hub.clone();
    let mut changes = hub.observe();
    let last = *changes.borrow_and_update();
    let cursors = latest_cursors(&hub);
    let mut queued = VecDeque::new();
    queued.push_back(sse("hello", &json!({ "now": format_millis(hub.now()) })));
    let feed = Feed {
        hub,
        changes,
        last,
        cursors,
        shutdown: st.ctx.shutdown.clone(),
        queued,
    };
    Sse::new(stream(feed)).keep_alive(KeepAlive::default())
}
