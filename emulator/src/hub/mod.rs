//! The hub's rules as a deterministic, sans-IO state machine.
//!
//! [`Hub`] owns the registry, every device's C2D queue, the feedback queue, the direct-method
//! invocations, the event log read through the Event Hubs-compatible endpoint ([`event_log`])
//! and all deadlines. It opens no sockets, spawns no tasks and reads no clock: every operation
//! takes `now`, the wall-clock time the caller decided on, ids come from a seeded [`IdGen`] and
//! secrets (generated keys, lock tokens) from an injected [`Entropy`]: the OS CSPRNG in the
//! emulator, a seeded stream in tests. The same inputs therefore give the same outputs under
//! test, which is what the property tests rely on.
//!
//! The async shell around it (see `crate::driver`) does three things with a hub:
//! - calls operations (`create_device`, `enqueue_c2d`, `receive_c2d`, `send_telemetry`, ...),
//! - drains [`Hub::poll_event`] to wake connections (a message is available, events were
//!   appended, a device is gone),
//! - sleeps until [`Hub::poll_timeout`] and then calls [`Hub::handle_timeout`].
//!
//! Every operation first fires the deadlines that are due at its `now`, so the outcome never
//! depends on how punctually the shell called `handle_timeout`.
//!
//! Operations are `impl<S: Store> Hub<S>` blocks, one file per concept; state types sit beside
//! them:
//!
//! | file | what |
//! |---|---|
//! | `registry.rs` | device identities: create, read, update, delete, connection state |
//! | `modules.rs` | module identities under a device: create, read, update, delete, list |
//! | `identity.rs` | [`Identity`]: a device or a module, the key of per-identity tables |
//! | `c2d.rs`, `c2d_ops.rs` | a device's C2D queue; enqueue, receive, settle, purge |
//! | `feedback.rs`, `feedback_ops.rs` | the feedback queue; the service's receive and settle |
//! | `telemetry.rs` | D2C: recording telemetry and reading it back |
//! | `methods/` | direct methods: subscriptions, invocations and their deadlines |
//! | `views.rs` | read-only, serializable views for inspection (the control API) |
//! | `store.rs` | the storage seam ([`Store`], [`RuntimeEntry`] for message-rate changes) and the in-memory store |
//! | `persisted.rs` | durable records of devices, messages and feedback; what changed; rebuilding a hub from them |
//! | `timers.rs` | the one deadline index; `ids.rs`: seeded ids; `entropy.rs`: secrets; `settings.rs` |

mod bulk;
mod c2d;
mod c2d_ops;
mod entropy;
pub mod event_log;
mod feedback;
mod feedback_ops;
mod identity;
mod ids;
mod methods;
mod modules;
pub mod persisted;
pub mod query;
mod registry;
pub mod settings;
mod store;
mod telemetry;
mod timers;
pub mod twin;
pub mod views;

#[cfg(test)]
mod secrets_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use iothub_protocol::{FeedbackRecord, HubError};
use time::OffsetDateTime;

pub use c2d::{C2dQueue, MessageState, Outcome, QueuedMessage};
pub use c2d_ops::{Enqueued, devicebound_address};
pub use entropy::Entropy;
pub use event_log::{Appended, AuthMethod, EventLog, EventLogError, Origin, ReaderId};
pub use feedback::{FeedbackChanges, FeedbackDelivery, FeedbackQueue, StoredBatch, StoredFeedback};
pub use identity::Identity;
pub use ids::IdGen;
pub use methods::{
    ConnectionId, HTTP_TIMEOUT_MARGIN, InvocationId, MethodOutcome, MethodRequest, RequestId,
    ResponseDisposition,
};
pub use modules::ModuleEntry;
pub use registry::if_match_allows;
pub use settings::{DeliveryCountRule, EventLogSettings, EventRoutes, HubSettings, SettingsError};
pub use store::{D2cRecord, DeviceEntry, MemoryStore, RuntimeEntry, Store};
pub use timers::Timer;
pub use twin::{EventSource, NonTelemetryEvent, TwinState};

use methods::MethodTable;
use timers::Timers;

/// Something the shell should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// A message became available in this device's queue (enqueued, or back from a lock).
    C2dAvailable {
        /// The device.
        device_id: String,
    },
    /// A C2D message reached its final outcome.
    C2dSettled {
        /// The device.
        device_id: String,
        /// The message's sequence number.
        sequence_number: u64,
        /// How it ended.
        outcome: Outcome,
    },
    /// A feedback batch is waiting for a receiver.
    FeedbackAvailable,
    /// The device was deleted or disabled: its connections must close.
    DeviceGone {
        /// The device.
        device_id: String,
    },
    /// The module was deleted: its connections must close (its device's stay open).
    ModuleGone {
        /// The module.
        identity: Identity,
    },
    /// A direct method request to deliver on `request.connection`.
    MethodRequest(MethodRequest),
    /// A direct method invocation ended; this is its only completion.
    MethodCompleted {
        /// The invocation, as [`Hub::invoke_method`] returned it.
        invocation: InvocationId,
        /// The device's answer, or the hub's error.
        outcome: MethodOutcome,
    },
    /// Events were appended to this event log partition: its waiting readers can read on.
    EventsAvailable {
        /// The partition.
        partition: u32,
    },
    /// A receiver was displaced by one with a higher or equal owner level: its link must
    /// close with [`EventLogError::ReaderDisplaced`].
    ReaderDisplaced {
        /// The displaced receiver.
        reader: ReaderId,
    },
    /// Desired properties changed: send `patch` to every connected device (or module) that
    /// subscribed to desired-property notifications. Events come in `version` order.
    TwinDesiredChanged {
        /// Whose twin.
        identity: Identity,
        /// The new `properties.desired.$version`.
        version: i64,
        /// The notification body, with `$version`: the PATCH's desired part with its nulls, or
        /// for a replacement (PUT, `desired: null`) the new section plus `null` for every key
        /// it removed, so a device that merges notifications into its copy stays in step.
        patch: serde_json::Value,
    },
    /// A twin-change, lifecycle or connection-state event for the Event Hubs-compatible
    /// endpoint, emitted only for the sources switched on in [`HubSettings::routes`].
    NonTelemetry(NonTelemetryEvent),
}

/// The hub: registry, C2D queues, feedback, event log and deadlines.
pub struct Hub<S: Store = MemoryStore> {
    settings: HubSettings,
    store: S,
    event_log: EventLog,
    timers: Timers,
    ids: IdGen,
    /// Where keys and lock tokens come from.
    entropy: Entropy,
    events: VecDeque<HubEvent>,
    /// Direct-method subscriptions and invocations: live connections' state, never stored.
    methods: MethodTable,
    /// Connection-state events so far (their `sequenceNumber`).
    connection_events: u64,
}

impl Hub<MemoryStore> {
    /// An empty in-memory hub. `seed` fixes the sequence of generated ids, and of keys and lock
    /// tokens until [`Hub::with_entropy`] gives it another source.
    pub fn new(settings: HubSettings, seed: u64) -> Self {
        Hub::with_store(settings, MemoryStore::default(), seed)
    }
}

impl<S: Store> Hub<S> {
    /// A hub over the given store, its secrets from a stream seeded with `seed` (for tests; the
    /// emulator calls [`Hub::with_entropy`] with [`Entropy::os`]).
    pub fn with_store(settings: HubSettings, store: S, seed: u64) -> Self {
        Hub {
            event_log: EventLog::new(settings.event_log.partition_count),
            settings,
            store,
            timers: Timers::default(),
            ids: IdGen::seeded(seed),
            entropy: Entropy::seeded(seed),
            events: VecDeque::new(),
            methods: MethodTable::default(),
            connection_events: 0,
        }
    }

    /// The same hub drawing its keys and lock tokens from `entropy`.
    #[must_use]
    pub fn with_entropy(mut self, entropy: Entropy) -> Self {
        self.entropy = entropy;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The hub's id generator (adapters use it for tracking ids, so tests stay deterministic).
    pub fn ids(&mut self) -> &mut IdGen {
        &mut self.ids
    }

    /// The next event for the shell, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// When [`Hub::handle_timeout`] next has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<OffsetDateTime> {
        self.timers.next_deadline()
    }

    /// Number of live deadlines (locks, expiries, windows).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Fires every deadline at or before `now`: expired messages, ended locks, closed feedback
    /// windows, events past retention. Calling it early or twice does nothing. The first call
    /// (every operation makes it) also fixes the hub's creation time.
    pub fn handle_timeout(&mut self, now: OffsetDateTime) {
        self.event_log.start(now);
        while let Some((id, timer)) = self.timers.pop_due(now) {
            // Effects carry the deadline's time, not the time we noticed it: feedback says
            // when a message expired, and a window runs from the outcome, however late the
            // shell called.
            let now = id.at();
            match timer {
                Timer::MessageExpiry { device_id, seq } => {
                    self.finish_c2d(&device_id, seq, Outcome::Expired, now);
                }
                Timer::MessageLock { device_id, seq } => {
                    let counts =
                        self.settings.delivery_count_rule == DeliveryCountRule::EveryRelease;
                    self.release_c2d(&device_id, seq, counts, now);
                }
                Timer::FeedbackWindow => {
                    let fb = self.store.feedback_mut();
                    if fb.window_closed(now, &self.settings, &mut self.timers) {
                        self.events.push_back(HubEvent::FeedbackAvailable);
                    }
                }
                Timer::FeedbackLock { batch } => {
                    let max = self.settings.feedback_max_delivery_count;
                    if self
                        .store
                        .feedback_mut()
                        .unlock(batch, max, &mut self.timers)
                    {
                        self.events.push_back(HubEvent::FeedbackAvailable);
                    }
                }
                Timer::FeedbackExpiry { batch } => {
                    self.store.feedback_mut().expire(batch, &mut self.timers);
                }
                Timer::MethodDeadline { invocation } => self.method_deadline(invocation),
                Timer::EventRetention { partition } => {
                    self.event_log.expire(
                        partition,
                        now,
                        &self.settings.event_log,
                        &mut self.timers,
                    );
                }
            }
        }
    }

    /// The event log (partitions, readers); queries are methods of the hub itself.
    pub fn event_log(&self) -> &EventLog {
        &self.event_log
    }

    /// Empties the hub: every device, message, feedback record and event; pending method
    /// invocations end with `DeviceNotFound`. Event sequence numbers and offsets continue where
    /// they were, so attached readers stay consistent.
    pub fn reset(&mut self) {
        self.methods_reset();
        let ids: Vec<String> = self
            .store
            .list(None, usize::MAX)
            .iter()
            .map(|e| e.device.device_id.clone())
            .collect();
        self.store.clear();
        self.timers.clear();
        self.event_log.clear();
        for device_id in ids {
            self.events.push_back(HubEvent::DeviceGone { device_id });
        }
        self.store.commit(&[]);
    }

    /// The device's entry, or `DeviceNotFound`.
    fn entry(&self, device_id: &str) -> Result<&DeviceEntry, HubError> {
        self.store
            .get(device_id)
            .ok_or_else(|| not_found(device_id))
    }

    /// Adds a feedback record if the message's ack mode asks for it.
    fn feedback_for(&mut self, record: Option<FeedbackRecord>, now: OffsetDateTime) {
        if let Some(record) = record
            && self
                .store
                .feedback_mut()
                .push(record, now, &self.settings, &mut self.timers)
        {
            self.events.push_back(HubEvent::FeedbackAvailable);
        }
    }
}

/// `DeviceNotFound` for this id.
fn not_found(device_id: &str) -> HubError {
    HubError::DeviceNotFound {
        device_id: device_id.to_owned(),
    }
}

/// `DeviceMessageLockLost` for this token (C2D and feedback locks alike).
fn lock_lost(token: &str) -> HubError {
    HubError::DeviceMessageLockLost {
        lock_token: token.to_owned(),
    }
}
