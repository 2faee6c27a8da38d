//! The async shell around the sans-IO [`Hub`]: the clock, the deadline task, and the wake-ups
//! that tell connections a message is waiting, events were appended, or that their device (or
//! their place as a partition's reader) is gone.
//!
//! The hub sits behind a `std` mutex. Every critical section is one synchronous hub call plus
//! draining its events; nothing awaits while holding the lock (mini-redis `db.rs` style), so a
//! slow peer can never stall the hub. Adapters call [`HubHandle::run`] with a closure and never
//! see the lock.
//!
//! # Why adapters get `&mut Hub` in a closure, not a narrower facade
//!
//! We considered per-adapter traits and typed operation facades (`C2dOps`, `RegistryOps`, ...
//! wrapping `run`) and kept the closure, for these reasons:
//!
//! - The narrowing that protects the rules is already in [`Hub`]'s public API: its state is
//!   private, every change is an operation that checks its own rules and reports its own
//!   events, and reads go through read-only views (`hub::views`). An adapter holding
//!   `&mut Hub` can call operations; it cannot reach around them. A facade would restate every
//!   operation's signature a second time without removing any capability.
//! - One closure is one critical section. Adapters sometimes need a read and an operation
//!   atomically (authorize and read the device's generation on CONNECT; count the devices and
//!   reset); a facade needs a new method for each such pair or gives up the atomicity.
//! - Features are added without touching this file. Twins, direct methods, the Event Hubs
//!   log and queries are hub modules (`hub/twin*`, `hub/methods*`, `hub/event_log*`,
//!   `hub/query*`) whose operations are `impl<S: Store> Hub<S>` methods: an adapter calls them
//!   through `run` the day they exist, and nothing here or in a facade must follow them.
//!
//! What an adapter uses is therefore found by searching it for `hub.run` and `hub.read`, not
//! by reading its imports. The one thing this file must learn about a new feature is how to
//! wake the connections its events concern: a new [`HubEvent`] variant gets one arm in
//! `HubHandle::dispatch` (a per-device [`Notify`] like [`HubHandle::c2d_notify`], or a
//! hub-wide one like [`HubHandle::feedback_notify`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::event_log::{Cursor, Event, Reader, ReaderRequest};
use crate::hub::{EventLogError, Hub, HubEvent, Identity};

mod twins;

pub use twins::{
    DESIRED_QUEUE, DesiredPatch, DesiredSubscription, DeviceTwinOp, TwinReply, next_desired,
};

mod methods;
pub use methods::{MethodListener, MethodResponder, PendingMethod};

mod observers;
pub use observers::Changes;

/// Wall-clock time for the hub, optionally movable by the control API.
#[derive(Debug)]
pub struct Clock {
    base_wall: OffsetDateTime,
    base_instant: Instant,
    advanced: Mutex<Duration>,
    virtual_time: bool,
}

impl Clock {
    /// A clock that follows real time; with `virtual_time` it can also be moved forward.
    pub fn new(virtual_time: bool) -> Self {
        Clock {
            base_wall: OffsetDateTime::now_utc(),
            base_instant: Instant::now(),
            advanced: Mutex::new(Duration::ZERO),
            virtual_time,
        }
    }

    /// The hub's current time.
    pub fn now(&self) -> OffsetDateTime {
        let advanced = *lock(&self.advanced);
        self.base_wall + self.base_instant.elapsed() + advanced
    }

    /// True when [`Clock::advance`] is allowed.
    pub fn is_virtual(&self) -> bool {
        self.virtual_time
    }

    /// Moves the clock forward. Refused unless the clock is virtual.
    pub fn advance(&self, by: Duration) -> bool {
        if !self.virtual_time {
            return false;
        }
        *lock(&self.advanced) += by;
        true
    }
}

/// The identity a connection key names: `{device}` or `{device}/{module}` (device ids cannot
/// contain `/`, so the split is unambiguous).
fn client_identity(key: &str) -> Identity {
    match key.split_once('/') {
        Some((d, m)) => Identity::module(d, m),
        None => Identity::device(key),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a hub call must not wedge every later request: keep serving the state.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    hub: Mutex<Hub>,
    clock: Clock,
    /// Woken when a device's queue may have a message available.
    c2d: DashMap<String, Arc<Notify>>,
    /// Woken when a feedback batch may be available.
    feedback: Notify,
    /// Open connections per device, cancelled when the device goes away.
    connections: DashMap<String, HashMap<u64, OpenConnection>>,
    next_connection: AtomicU64,
    /// Woken when the earliest deadline may have moved earlier.
    timer: Notify,
    /// Woken when events were appended to a partition, one per partition.
    partitions: Vec<Notify>,
    /// Attached event log readers, cancelled when a higher owner level displaces them.
    readers: DashMap<u64, CancellationToken>,
    /// Connections subscribed to desired-property notifications (`driver/twins.rs`).
    twins: twins::DesiredSubscribers,
    /// Method listeners and the service requests waiting for their invocations.
    methods: methods::MethodRoutes,
    /// Change counters for observers such as the dashboard.
    observers: observers::Observers,
    /// The durable store's writer; `None` keeps everything in memory (`crate::persist`).
    persist: Option<crate::persist::Persister>,
}

/// A cheap, cloneable handle to the running hub.
#[derive(Clone)]
pub struct HubHandle {
    inner: Arc<Inner>,
}

/// Keeps a connection registered for its device; unregisters on drop.
pub struct ConnectionGuard {
    handle: HubHandle,
    device_id: String,
    id: u64,
    token: CancellationToken,
}

impl ConnectionGuard {
    /// Cancelled when the device is deleted, disabled, taken over or force-disconnected.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.token
    }

    /// The device this connection belongs to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let inner = &self.handle.inner;
        let now_empty = match inner.connections.get_mut(&self.device_id) {
            Some(mut conns) => {
                conns.remove(&self.id);
                conns.is_empty()
            }
            None => false,
        };
        if now_empty {
            inner
                .connections
                .remove_if(&self.device_id, |_, c| c.is_empty());
            self.handle.run(|hub, now| {
                hub.set_identity_connection_state(&client_identity(&self.device_id), false, now)
            });
        }
    }
}

/// The device-facing protocol a connection speaks (WebSockets included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum DeviceProtocol {
    /// MQTT 3.1.1, over TLS or WebSockets.
    #[serde(rename = "MQTT")]
    Mqtt,
    /// AMQP 1.0, over TLS or WebSockets.
    #[serde(rename = "AMQP")]
    Amqp,
}

/// One registered connection: how to close it and what it speaks.
struct OpenConnection {
    token: CancellationToken,
    protocol: DeviceProtocol,
}

/// An attached event log reader (a receiver link); detaches on drop.
pub struct ReaderGuard {
    handle: HubHandle,
    reader: Reader,
    displaced: CancellationToken,
}

impl ReaderGuard {
    /// The reader: its id, consumer group and cursor.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Where it reads next.
    pub fn cursor(&self) -> &Cursor {
        &self.reader.cursor
    }

    /// Up to `max` events from the cursor on (as many as the link has credit for); the cursor
    /// moves past them.
    pub fn read(&mut self, max: usize) -> Vec<Arc<Event>> {
        let cursor = &mut self.reader.cursor;
        self.handle.read(|hub| hub.read_events(cursor, max))
    }

    /// The wake-up for "events were appended to this reader's partition"; use it as
    /// [`HubHandle::c2d_notify`] says, enabled before [`ReaderGuard::read`].
    pub fn notify(&self) -> Option<&Notify> {
        self.handle.events_notify(self.reader.cursor.partition())
    }

    /// Cancelled when a receiver with a higher or equal owner level displaced this one: close
    /// the link with [`EventLogError::ReaderDisplaced`].
    pub fn displaced(&self) -> &CancellationToken {
        &self.displaced
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let id = self.reader.id;
        self.handle.inner.readers.remove(&id.get());
        self.handle.run(|hub, _| hub.detach_reader(id));
    }
}

impl HubHandle {
    /// Wraps a hub. Spawn [`HubHandle::run_timers`] to make deadlines fire on time.
    pub fn new(hub: Hub, clock: Clock) -> Self {
        Self::with_persister(hub, clock, None)
    }

    /// Wraps a hub whose changes `persist` writes to disk (see `crate::persist`): every
    /// operation's changes are queued for it, and [`HubHandle::synced`] waits for them.
    pub fn with_persister(
        mut hub: Hub,
        clock: Clock,
        persist: Option<crate::persist::Persister>,
    ) -> Self {
        if persist.is_some() {
            hub.track_changes();
        }
        // The hub's first moment is its creation time (reported to Event Hubs clients).
        hub.handle_timeout(clock.now());
        let partitions = (0..hub.event_log().partition_count())
            .map(|_| Notify::new())
            .collect();
        HubHandle {
            inner: Arc::new(Inner {
                hub: Mutex::new(hub),
                clock,
                c2d: DashMap::new(),
                feedback: Notify::new(),
                connections: DashMap::new(),
                next_connection: AtomicU64::new(1),
                timer: Notify::new(),
                partitions,
                readers: DashMap::new(),
                twins: twins::DesiredSubscribers::default(),
                methods: methods::MethodRoutes::default(),
                observers: observers::Observers::new(),
                persist,
            }),
        }
    }

    /// The hub's current time.
    pub fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Runs one hub operation at the current time, then wakes whoever its events concern.
    pub fn run<R>(&self, op: impl FnOnce(&mut Hub, OffsetDateTime) -> R) -> R {
        let mut events = Vec::new();
        let (result, deadline_before, deadline_after, activity_waits) = {
            let mut hub = lock(&self.inner.hub);
            let before = hub.poll_timeout();
            let now = self.inner.clock.now();
            let result = op(&mut hub, now);
            // Activity that starts waiting to be written has the timer task write it on time
            // if no later operation does (`run_timers`).
            let activity_waits = self
                .inner
                .persist
                .as_ref()
                .is_some_and(|p| p.submit(&mut hub));
            while let Some(e) = hub.poll_event() {
                events.push(e);
            }
            // Under the lock, so racing writes reach devices in version order.
            self.inner.twins.deliver(&events);
            (result, before, hub.poll_timeout(), activity_waits)
        };
        if activity_waits
            || deadline_after.is_some()
                && (deadline_before.is_none() || deadline_after < deadline_before)
        {
            self.inner.timer.notify_one();
        }
        self.inner.observers.publish(&events);
        for e in events {
            self.dispatch(e);
        }
        result
    }

    /// Returns once every change made before the call is on disk; at once for an in-memory
    /// hub. Adapters await it between an operation and its acknowledgement (PUBACK, AMQP
    /// disposition, HTTP response), so acknowledged means durable.
    pub async fn synced(&self) -> Result<(), crate::persist::PersistError> {
        match &self.inner.persist {
            Some(p) => p.synced().await,
            None => Ok(()),
        }
    }

    /// Writes what is queued, with the activity times written late, and closes the state
    /// file (at shutdown).
    pub async fn close_store(&self) {
        if let Some(p) = &self.inner.persist {
            p.flush_activity(&mut lock(&self.inner.hub));
            let h = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(p) = &h.inner.persist {
                    p.close();
                }
            })
            .await;
        }
    }

    /// Counters of the hub's changes, for observers that re-read views when something changed
    /// (see [`Changes`]).
    pub fn observe(&self) -> tokio::sync::watch::Receiver<Changes> {
        self.inner.observers.subscribe()
    }

    /// Reads the hub without changing it.
    pub fn read<R>(&self, f: impl FnOnce(&Hub) -> R) -> R {
        f(&lock(&self.inner.hub))
    }

    fn dispatch(&self, event: HubEvent) {
        match event {
            HubEvent::C2dAvailable { device_id } => {
                if let Some(n) = self.inner.c2d.get(&device_id) {
                    n.notify_waiters();
                }
            }
            HubEvent::FeedbackAvailable => self.inner.feedback.notify_waiters(),
            HubEvent::DeviceGone { device_id } => {
                self.disconnect_device(&device_id);
                self.disconnect_modules_of(&device_id);
                if let Some(n) = self.inner.c2d.get(&device_id) {
                    n.notify_waiters();
                }
            }
            HubEvent::ModuleGone { identity } => {
                self.disconnect_device(&identity.to_string());
            }
            HubEvent::C2dSettled {
                device_id,
                sequence_number,
                outcome,
            } => {
                tracing::debug!(device = %device_id, seq = sequence_number, ?outcome, "c2d settled");
            }
            HubEvent::MethodRequest(request) => {
                tracing::debug!(invocation = %request.invocation, identity = %request.identity, method = %request.name, "method request");
                self.deliver_method(request);
            }
            HubEvent::MethodCompleted {
                invocation,
                outcome,
            } => {
                tracing::debug!(%invocation, ok = outcome.is_ok(), "method completed");
                self.complete_method(invocation, outcome);
            }
            HubEvent::EventsAvailable { partition } => {
                if let Some(n) = self.events_notify(partition) {
                    n.notify_waiters();
                }
            }
            HubEvent::ReaderDisplaced { reader } => {
                if let Some((_, token)) = self.inner.readers.remove(&reader.get()) {
                    token.cancel();
                }
            }
            // Already handed to the subscribed connections under the lock (`driver/twins.rs`).
            HubEvent::TwinDesiredChanged {
                identity, version, ..
            } => {
                tracing::debug!(%identity, version, "desired properties changed");
            }
            HubEvent::NonTelemetry(e) => {
                tracing::debug!(identity = %e.identity, source = e.source.as_str(), op = e.op_type, "non-telemetry event");
            }
        }
    }

    /// The wake-up for "events were appended to this partition"; same pattern as
    /// [`HubHandle::c2d_notify`]. `None` for a partition that does not exist.
    pub fn events_notify(&self, partition: u32) -> Option<&Notify> {
        self.inner.partitions.get(partition as usize)
    }

    /// Attaches an event log reader (see [`Hub::attach_reader`]); it stays registered until
    /// the guard is dropped, and its [`ReaderGuard::displaced`] token is cancelled if a higher
    /// owner level takes the partition over.
    pub fn attach_reader(&self, request: &ReaderRequest) -> Result<ReaderGuard, EventLogError> {
        let displaced = CancellationToken::new();
        let reader = self.run(|hub, now| -> Result<Reader, EventLogError> {
            let reader = hub.attach_reader(request, now)?;
            // Registered under the hub lock, so a displacement by the next attach is never
            // dispatched before the token exists.
            self.inner
                .readers
                .insert(reader.id.get(), displaced.clone());
            Ok(reader)
        })?;
        Ok(ReaderGuard {
            handle: self.clone(),
            reader,
            displaced,
        })
    }

    /// The wake-up for "a C2D message may be available for this device".
    ///
    /// Use it as: `let n = handle.c2d_notify(id); let w = n.notified(); tokio::pin!(w);
    /// w.as_mut().enable();` then try to receive, and await `w` only if nothing came. Enabling
    /// first means a message enqueued in between is never missed.
    pub fn c2d_notify(&self, device_id: &str) -> Arc<Notify> {
        self.inner
            .c2d
            .entry(device_id.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// The wake-up for "a feedback batch may be available"; same pattern as
    /// [`HubHandle::c2d_notify`].
    pub fn feedback_notify(&self) -> &Notify {
        &self.inner.feedback
    }

    /// Registers a device connection (MQTT or AMQP) and marks the device connected.
    pub fn register_connection(
        &self,
        device_id: &str,
        protocol: DeviceProtocol,
    ) -> ConnectionGuard {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.inner
            .connections
            .entry(device_id.to_owned())
            .or_default()
            .insert(
                id,
                OpenConnection {
                    token: token.clone(),
                    protocol,
                },
            );
        self.run(|hub, now| {
            hub.set_identity_connection_state(&client_identity(device_id), true, now)
        });
        ConnectionGuard {
            handle: self.clone(),
            device_id: device_id.to_owned(),
            id,
            token,
        }
    }

    /// Closes every connection of the device except `keep`; returns how many were closed.
    pub fn disconnect_device_except(
        &self,
        device_id: &str,
        keep: Option<&ConnectionGuard>,
    ) -> usize {
        let Some(conns) = self.inner.connections.get(device_id) else {
            return 0;
        };
        let mut n = 0;
        for (id, open) in conns.iter() {
            if keep.is_some_and(|k| k.id == *id) {
                continue;
            }
            open.token.cancel();
            n += 1;
        }
        n
    }

    /// Closes the connections of the device's modules (keyed `{device}/{module}`).
    fn disconnect_modules_of(&self, device_id: &str) {
        let prefix = format!("{device_id}/");
        for conns in self.inner.connections.iter() {
            if conns.key().starts_with(&prefix) {
                for open in conns.values() {
                    open.token.cancel();
                }
            }
        }
    }

    /// Closes every connection of the device (control API, delete, disable).
    pub fn disconnect_device(&self, device_id: &str) -> usize {
        self.disconnect_device_except(device_id, None)
    }

    /// The protocols the identity (`{device}` or `{device}/{module}`) is connected over now,
    /// sorted and without repeats; empty when it is not connected. The hub records only
    /// connected or not: which protocol carries a connection is the adapters' business, shown
    /// by the dashboard.
    pub fn connection_protocols(&self, identity: &str) -> Vec<DeviceProtocol> {
        let mut protocols: Vec<DeviceProtocol> = self
            .inner
            .connections
            .get(identity)
            .map(|conns| conns.values().map(|c| c.protocol).collect())
            .unwrap_or_default();
        protocols.sort_unstable();
        protocols.dedup();
        protocols
    }

    /// Number of open device connections.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.iter().map(|c| c.len()).sum()
    }

    /// Moves a virtual clock forward and fires what became due. False if the clock is real.
    pub fn advance_clock(&self, by: Duration) -> bool {
        if !self.inner.clock.advance(by) {
            return false;
        }
        self.run(|hub, now| hub.handle_timeout(now));
        self.inner.timer.notify_one();
        true
    }

    /// Fires the hub's deadlines on time until `shutdown` is cancelled.
    pub async fn run_timers(self, shutdown: CancellationToken) {
        loop {
            let wake = self.inner.timer.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let deadline = self.read(|hub| hub.poll_timeout());
            let sleep = match deadline {
                Some(at) => {
                    let left = at - self.now();
                    Duration::try_from(left).unwrap_or(Duration::ZERO)
                }
                None => Duration::from_secs(3600),
            };
            let activity = self
                .inner
                .persist
                .as_ref()
                .and_then(|p| p.activity_due_in());
            let sleep = activity.map_or(sleep, |a| sleep.min(a));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut wake => {}
                _ = tokio::time::sleep(sleep) => {
                    self.run(|hub, now| hub.handle_timeout(now));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use iothub_protocol::registry::Device;
    use iothub_protocol::{AckMode, Message};

    fn handle(virtual_time: bool) -> HubHandle {
        let settings = HubSettings {
            feedback_window: Duration::ZERO,
            ..HubSettings::default()
        };
        HubHandle::new(Hub::new(settings, 3), Clock::new(virtual_time))
    }

    #[tokio::test]
    async fn enqueue_wakes_a_waiting_receiver() {
        let h = handle(false);
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let n = h.c2d_notify("d1");
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move {
                loop {
                    let w = n.notified();
                    tokio::pin!(w);
                    w.as_mut().enable();
                    if let Some(m) = h.run(|hub, now| hub.receive_c2d("d1", now)).unwrap() {
                        return m;
                    }
                    w.await;
                }
            })
        };
        tokio::task::yield_now().await;
        h.run(|hub, now| hub.enqueue_c2d("d1", Message::new("hi"), now))
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.body, b"hi");
    }

    #[tokio::test]
    async fn virtual_clock_fires_lock_expiry_and_real_clock_refuses() {
        let h = handle(true);
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let mut m = Message::new("x");
        m.system.ack = AckMode::Full;
        h.run(|hub, now| hub.enqueue_c2d("d1", m, now)).unwrap();
        let first = h
            .run(|hub, now| hub.receive_c2d("d1", now))
            .unwrap()
            .unwrap();
        assert!(
            h.run(|hub, now| hub.receive_c2d("d1", now))
                .unwrap()
                .is_none()
        );
        assert!(h.advance_clock(Duration::from_secs(61)));
        let again = h
            .run(|hub, now| hub.receive_c2d("d1", now))
            .unwrap()
            .unwrap();
        assert_ne!(first.system.lock_token, again.system.lock_token);
        assert!(!handle(false).advance_clock(Duration::from_secs(1)));
    }

    /// Telemetry's activity is written by the timer task when no later operation comes.
    #[tokio::test]
    async fn timer_task_writes_waiting_activity() {
        let dir =
            std::env::temp_dir().join(format!("iothub-driver-activity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut p, restored) = crate::persist::open(&dir).unwrap();
        p.set_activity_interval(Duration::from_millis(100));
        let mut hub = Hub::new(HubSettings::default(), 3);
        hub.restore(restored, Clock::new(false).now());
        let h = HubHandle::with_persister(hub, Clock::new(false), Some(p));
        let stop = CancellationToken::new();
        let task = tokio::spawn(h.clone().run_timers(stop.clone()));
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let origin = crate::hub::Origin::device("d1");
        h.run(|hub, now| hub.send_telemetry(&origin, Message::new("t"), now))
            .unwrap();
        let waiting = || h.inner.persist.as_ref().and_then(|p| p.activity_due_in());
        assert!(waiting().is_some());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while waiting().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "activity never written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        h.close_store().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn timer_task_fires_deadlines_on_real_time() {
        let settings = HubSettings {
            feedback_window: Duration::from_millis(50),
            ..HubSettings::default()
        };
        let h = HubHandle::new(Hub::new(settings, 3), Clock::new(false));
        let stop = CancellationToken::new();
        let task = tokio::spawn(h.clone().run_timers(stop.clone()));
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let mut m = Message::new("x");
        m.system.ack = AckMode::Positive;
        h.run(|hub, now| hub.enqueue_c2d("d1", m, now)).unwrap();
        let got = h
            .run(|hub, now| hub.receive_c2d("d1", now))
            .unwrap()
            .unwrap();
        let token = got.system.lock_token.unwrap();
        let fb = h.feedback_notify().notified();
        tokio::pin!(fb);
        fb.as_mut().enable();
        h.run(|hub, now| hub.complete_c2d("d1", &token, now))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), fb)
            .await
            .unwrap();
        assert!(h.read(|hub| hub.has_feedback_available()));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn telemetry_wakes_a_waiting_reader_and_an_owner_level_displaces_it() {
        use crate::hub::event_log::{Origin, ReaderRequest};
        use iothub_protocol::EventPosition;

        let h = handle(false);
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let partition = crate::hub::event_log::partition_for_device("d1", 4).to_string();
        let request = ReaderRequest {
            consumer_group: "$Default".into(),
            partition_id: partition.clone(),
            position: EventPosition::Latest,
            owner_level: None,
        };
        let mut reader = h.attach_reader(&request).unwrap();
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move {
                loop {
                    let n = h.events_notify(reader.cursor().partition()).unwrap();
                    let w = n.notified();
                    tokio::pin!(w);
                    w.as_mut().enable();
                    let got = reader.read(10);
                    if !got.is_empty() {
                        return (got, reader);
                    }
                    w.await;
                }
            })
        };
        tokio::task::yield_now().await;
        h.run(|hub, now| hub.send_telemetry(&Origin::device("d1"), Message::new("t"), now))
            .unwrap();
        let (got, reader) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0].message.body, b"t");
        assert!(!reader.displaced().is_cancelled());
        let owner = h
            .attach_reader(&ReaderRequest {
                owner_level: Some(3),
                ..request.clone()
            })
            .unwrap();
        assert!(reader.displaced().is_cancelled());
        assert!(
            h.attach_reader(&request).is_err(),
            "the owner holds the partition"
        );
        drop(owner);
        drop(reader);
        assert_eq!(h.read(|hub| hub.reader_count()), 0);
        assert!(h.attach_reader(&request).is_ok());
    }

    #[tokio::test]
    async fn deleting_a_device_cancels_its_connections() {
        let h = handle(false);
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let conn = h.register_connection("d1", DeviceProtocol::Amqp);
        assert_eq!(h.connection_count(), 1);
        h.run(|hub, now| hub.delete_device("d1", None, now))
            .unwrap();
        assert!(conn.cancelled().is_cancelled());
        drop(conn);
        assert_eq!(h.connection_count(), 0);
    }

    #[tokio::test]
    async fn connection_protocols_follow_the_open_connections() {
        let h = handle(false);
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        assert!(h.connection_protocols("d1").is_empty());
        let amqp = h.register_connection("d1", DeviceProtocol::Amqp);
        let mqtt = h.register_connection("d1", DeviceProtocol::Mqtt);
        let again = h.register_connection("d1", DeviceProtocol::Amqp);
        assert_eq!(
            h.connection_protocols("d1"),
            [DeviceProtocol::Mqtt, DeviceProtocol::Amqp]
        );
        drop(mqtt);
        assert_eq!(h.connection_protocols("d1"), [DeviceProtocol::Amqp]);
        drop((amqp, again));
        assert!(h.connection_protocols("d1").is_empty());
    }
}
