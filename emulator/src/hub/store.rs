//! The storage seam: where the hub's state lives.
//!
//! The rules in [`super::Hub`] reach devices, their queues and the feedback queue only through
//! [`Store`]. [`MemoryStore`] keeps everything in memory; a durable store can implement the same
//! trait (writing the entries named in [`Store::commit`]) without any change to the rules.

use std::collections::{BTreeMap, VecDeque};

use iothub_protocol::Message;
use iothub_protocol::registry::Device;
use time::OffsetDateTime;

use super::c2d::C2dQueue;
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
    /// The message with its decoded properties.
    pub message: Message,
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
        }
    }
}

/// Where the hub's state lives.
pub trait Store: Send {
    /// The device with this id.
    fn get(&self, id: &str) -> Option<&DeviceEntry>;
    /// The device with this id, to change it.
    fn get_mut(&mut self, id: &str) -> Option<&mut DeviceEntry>;
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
/// With [`MemoryStore::track_changes`] it also records which devices, and whether the
/// feedback queue, were changed, for a durable writer to copy to disk (`crate::persist`).
/// Every mutable access counts as a change, not only [`Store::commit`]: a rule that forgets
/// to commit can then cost a needless write, never a lost one.
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
    }

    /// The changes since the last call; `None` when not tracking or nothing changed. Names
    /// the C2D messages each changed device's operations touched (all of them for a device
    /// created or replaced).
    pub fn take_changes(&mut self) -> Option<Changes> {
        let c = self.changes.as_mut()?;
        if c.is_empty() {
            return None;
        }
        let mut c = std::mem::take(c);
        for id in &c.devices {
            let Some(e) = self.devices.get_mut(id) else {
                continue;
            };
            let seqs = if c.replaced.contains(id) {
                e.queue.take_touched();
                e.queue.sequence_numbers()
            } else {
                e.queue.take_touched()
            };
            if !seqs.is_empty() {
                c.messages.insert(id.clone(), seqs);
            }
        }
        Some(c)
    }

    fn touch(&mut self, id: &str) {
        if let Some(c) = &mut self.changes
            && !c.devices.contains(id)
        {
            c.devices.insert(id.to_owned());
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
        if let Some(c) = &mut self.changes {
            c.feedback = true;
        }
        &mut self.feedback
    }

    fn clear(&mut self) {
        self.devices.clear();
        self.feedback.clear();
        if let Some(c) = &mut self.changes {
            *c = Changes {
                cleared: true,
                feedback: true,
                ..Changes::default()
            };
        }
    }

    fn commit(&mut self, devices: &[&str]) {
        for id in devices {
            if self.devices.contains_key(*id) {
                self.touch(id);
            }
        }
    }
}
