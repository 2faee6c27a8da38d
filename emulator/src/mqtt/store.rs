//! Persisted MQTT sessions (clean session 0), one slot per device, owned by one emulator.
//!
//! A connection holds its device's slot for as long as it lives. A new connection for the same
//! device first closes the old one (takeover), then waits for the slot: the old connection
//! releases its C2D locks and writes its session back before the new one reads it, so the new
//! connection sees the subscriptions and the "sent before" set, and CONNACK's session-present
//! is right. The store is a value in the emulator's context, never a global, so two emulators
//! in one process do not share sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::session::PersistedSession;

type Slot = Arc<tokio::sync::Mutex<Option<PersistedSession>>>;

/// Every device's persisted MQTT session.
#[derive(Debug, Default)]
pub struct SessionStore {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Exclusive access to one device's persisted session, held by its live connection.
pub type SessionSlot = OwnedMutexGuard<Option<PersistedSession>>;

impl SessionStore {
    /// An empty store.
    pub fn new() -> Self {
        SessionStore::default()
    }

    /// Waits until no other connection holds the device's session, then holds it.
    pub async fn acquire(&self, device_id: &str) -> SessionSlot {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(device_id.to_owned()).or_default().clone()
        };
        slot.lock_owned().await
    }

    /// True when a session is stored for the device and no connection holds it.
    pub fn has_stored(&self, device_id: &str) -> bool {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(device_id).cloned()
        };
        slot.is_some_and(|s| s.try_lock().is_ok_and(|g| g.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_slot_is_exclusive_and_keeps_its_value() {
        let store = Arc::new(SessionStore::new());
        let mut first = store.acquire("d1").await;
        *first = Some(PersistedSession::default());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.acquire("d1").await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(!store.has_stored("d1"));
        drop(first);
        assert!(waiter.await.unwrap());
        assert!(store.has_stored("d1"));
        // Other devices are independent.
        let _a = store.acquire("a").await;
        let _b = store.acquire("b").await;
    }
}
