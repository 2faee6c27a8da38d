//! The storage seam: where the hub's state lives.
//!
//! The rules in [`super::Hub`] reach devices, their queues and the feedback queue only through
//! [`Store`]. [`MemoryStore`] keeps everything in memory; a durable store can implement the same
//! trait (writing the entries named in [`Store::commit`]) without any change to the rules.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use iothub_protocol::Message;
use iothub_protocol::registry::Device;
use time::OffsetDateTime;

use super::c2d::C2dQueue;
use super::event_log::Event;
use super::feedback::FeedbackQueue;
use super::modules::ModuleEntry;
use super::persisted::Changes;
use super::twin::TwinState;

/// A device-to-cloud message kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct D2cRecord {
    /// Per-device sequence number of received telemetry.
    pub sequence_number: u64,
    /// When the hub received it.
    pub received: OffsetDateTime,
    /// The event it became, shared with the event log (which may drop it first): the message
    /// is kept once, not copied per telemetry message.
    pub event: Arc<Event>,
}

impl D2cRecord {
    /// The message with its decoded properties.
    pub fn message(&self) -> &Message {
        &self.event.message
    }
}

/// Everything the hub keeps about one device.
#[derive(Debug)]
pub struct DeviceEntry {
    /// The registry identity.
    pub device: Device,
    /// Its C2D queue.
    pub queue: C2dQueue,
    /// Its most recent telemetry, oldest first.
    pub d2c: VecDeque<D2cRecord>,
    /// Telemetry received so far (numbers `d2c` records).
    pub d2c_count: u64,
    /// Its twin.
    pub twin: TwinState,
    /// Its module identities, by module id; they go with the device.
    pub modules: BTreeMap<String, ModuleEntry>,
    /// Its telemetry counter or an activity time changed through a [`RuntimeEntry`] since the
    /// last [`MemoryStore::take_changes`].
    activity_changed: bool,
}

impl DeviceEntry {
    /// A device with an empty queue, no telemetry, and a new twin stamped at the epoch (the
    /// registry uses [`DeviceEntry::created`]).
    pub fn new(device: Device) -> Self {
        Self::created(device, OffsetDateTime::UNIX_EPOCH)
    }

    /// A device created at `now`: empty queue, no telemetry, a new twin stamped `now`.
    pub fn created(device: Device, now: OffsetDateTime) -> Self {
        DeviceEntry {
            device,
            queue: C2dQueue::default(),
            d2c: VecDeque::new(),
            d2c_count: 0,
            twin: TwinState::new(now),
            modules: BTreeMap::new(),
            activity_changed: false,
        }
    }
}

/// A device opened for the changes that come at message rates: its C2D queue, its telemetry
/// view and counter, its and its modules' last activity times. Nothing else of the device can
/// be changed through it, so a durable store writes the queue's touched messages and, now and
/// then, the counters, instead of re-encoding the whole device (keys, twin, modules) per
/// message.
#[derive(Debug)]
pub struct RuntimeEntry<'a> {
    entry: &'a mut DeviceEntry,
}

impl RuntimeEntry<'_> {
    /// The registry identity, to read.
    pub fn device(&self) -> &Device {
        &self.entry.device
    }

    /// The C2D queue.
    pub fn queue(&mut self) -> &mut C2dQueue {
        &mut self.entry.queue
    }

    /// The recent-telemetry view and the telemetry counter.
    pub fn telemetry(&mut self) -> (&mut VecDeque<D2cRecord>, &mut u64) {
        self.entry.activity_changed = true;
        (&mut self.entry.d2c, &mut self.entry.d2c_count)
    }

    /// Records activity from the device at `now`.
    pub fn set_last_activity(&mut self, now: OffsetDateTime) {
        self.entry.activity_changed = true;
        self.entry.device.last_activity_time = Some(now);
    }

    /// Records activity from one of its modules at `now`; false if it has no such module.
    pub fn set_module_last_activity(&mut self, module_id: &str, now: OffsetDateTime) -> bool {
        match self.entry.modules.get_mut(module_id) {
            Some(m) => {
                m.module.last_activity_time = Some(now);
                self.entry.activity_changed = true;
                true
            }
            None => false,
        }
    }
}

/// Where the hub's state lives.
pub trait Store: Send {
    /// The device with this id.
    fn get(&self, id: &str) -> Option<&DeviceEntry>;
    /// The device with this id, to change it.
    fn get_mut(&mut self, id: &str) -> Option<&mut DeviceEntry>;
    /// The device with this id, to change only what [`RuntimeEntry`] offers.
    fn get_runtime_mut(&mut self, id: &str) -> Option<RuntimeEntry<'_>>;
    /// Adds or replaces a device.
    fn insert(&mut self, entry: DeviceEntry);
    /// Removes a device with its queue and telemetry.
    fn remove(&mut self, id: &str) -> Option<DeviceEntry>;
    /// Devices in id order, starting after `after`, at most `limit`.
    fn list(&self, after: Option<&str>, limit: usize) -> Vec<&DeviceEntry>;
    /// Number of devices.
    fn len(&self) -> usize;
    /// True when no device exists.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The feedback queue.
    fn feedback(&self) -> &FeedbackQueue;
    /// The feedback queue, to change it.
    fn feedback_mut(&mut self) -> &mut FeedbackQueue;
    /// Removes every device and all feedback.
    fn clear(&mut self);
    /// Called at the end of an operation that changed these devices (and maybe the feedback
    /// queue). A durable store writes them here; the in-memory store has nothing to do.
    fn commit(&mut self, _devices: &[&str]) {}
}

/// The default store: everything in memory, gone when the process ends.
///
/// With [`MemoryStore::track_changes`] it also records which devices were changed, and how
/// (their records, or only their [`RuntimeEntry`] parts), and which C2D messages and feedback
/// records, for a durable writer to copy to disk (`crate::persist`). Every mutable access
/// counts as a change, not only [`Store::commit`]: a rule that forgets to commit can then
/// cost a needless write, never a lost one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    devices: BTreeMap<String, DeviceEntry>,
    feedback: FeedbackQueue,
    changes: Option<Changes>,
}

impl MemoryStore {
    /// Starts recording changes.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Changes::default);
        for e in self.devices.values_mut() {
            e.queue.track_changes();
        }
        self.feedback.track_changes();
    }

    /// The changes since the last call; `None` when not tracking or nothing changed. Names
    /// the C2D messages each changed device's operations touched (all of them for a device
    /// created or replaced).
    pub fn take_changes(&mut self) -> Option<Changes> {
        let c = self.changes.as_mut()?;
        c.feedback = self.feedback.take_touched();
        if c.is_empty() {
            return None;
        }
        let mut c = std::mem::take(c);
        let mut messages = BTreeMap::new();
        let mut activity = BTreeSet::new();
        for id in c.devices.iter().chain(&c.runtime) {
            let Some(e) = self.devices.get_mut(id) else {
                continue;
            };
            // A device whose record is written anyway needs no separate activity write.
            if std::mem::take(&mut e.activity_changed) && !c.devices.contains(id) {
                activity.insert(id.clone());
            }
            let seqs = if c.replaced.contains(id) {
                e.queue.take_touched();
                e.queue.sequence_numbers()
            } else {
                e.queue.take_touched()
            };
            if !seqs.is_empty() {
                messages.insert(id.clone(), seqs);
            }
        }
        c.messages = messages;
        c.activity = activity;
        Some(c)
    }

    fn touch(&mut self, id: &str) {
        if let Some(c) = &mut self.changes
            && !c.devices.contains(id)
        {
            c.runtime.remove(id);
            c.devices.insert(id.to_owned());
        }
    }

    fn touch_runtime(&mut self, id: &str) {
        if let Some(c) = &mut self.changes
            && !c.devices.contains(id)
            && !c.runtime.contains(id)
        {
            c.runtime.insert(id.to_owned());
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, id: &str) -> Option<&DeviceEntry> {
        self.devices.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut DeviceEntry> {
        if self.changes.is_some() && self.devices.contains_key(id) {
            self.touch(id);
        }
        self.devices.get_mut(id)
    }

    fn get_runtime_mut(&mut self, id: &str) -> Option<RuntimeEntry<'_>> {
        if self.changes.is_some() && self.devices.contains_key(id) {
            self.touch_runtime(id);
        }
        self.devices.get_mut(id).map(|entry| RuntimeEntry { entry })
    }

    fn insert(&mut self, mut entry: DeviceEntry) {
        let id = entry.device.device_id.clone();
        self.touch(&id);
        if let Some(c) = &mut self.changes {
            entry.queue.track_changes();
            c.replaced.insert(id.clone());
        }
        self.devices.insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> Option<DeviceEntry> {
        let removed = self.devices.remove(id);
        if removed.is_some() {
            self.touch(id);
            if let Some(c) = &mut self.changes {
                c.replaced.insert(id.to_owned());
            }
        }
        removed
    }

    fn list(&self, after: Option<&str>, limit: usize) -> Vec<&DeviceEntry> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.devices
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| e)
            .collect()
    }

    fn len(&self) -> usize {
        self.devices.len()
    }

    fn feedback(&self) -> &FeedbackQueue {
        &self.feedback
    }

    fn feedback_mut(&mut self) -> &mut FeedbackQueue {
        // The queue notes its own changes, record by record.
        &mut self.feedback
    }

    fn clear(&mut self) {
        self.devices.clear();
        self.feedback.clear();
        if let Some(c) = &mut self.changes {
            *c = Changes {
                cleared: true,
                ..Changes::default()
            };
        }
    }

    fn commit(&mut self, devices: &[&str]) {
        for id in devices {
            if self.devices.contains_key(*id) {
                self.touch_runtime(id);
            }
        }
    }
}
