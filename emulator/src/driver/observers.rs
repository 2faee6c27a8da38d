//! Change notices for observers that are not connections (the dashboard's live updates).
//!
//! Connections wait on precise wake-ups ([`super::HubHandle::c2d_notify`] and friends). An
//! observer such as a browser tab only needs to know *that* something changed, and roughly
//! what, to re-read the views it shows; it must never slow the hub down. So every hub operation
//! bumps counters in a [`tokio::sync::watch`] value: a receiver that wakes late sees the latest
//! counters once, which coalesces any number of changes into one re-read. With no observer
//! subscribed the hook costs one atomic load.

use tokio::sync::watch;

use crate::hub::HubEvent;

/// Counters of the changes seen so far. Each grows by one per operation of its kind; compare
/// with the values from the last look to know what to re-read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Any hub operation (registry, connection state, queues, settings, reset, ...).
    pub any: u64,
    /// Operations that appended events to the event log (telemetry, routed events).
    pub events: u64,
    /// Operations that released feedback or settled a C2D message.
    pub feedback: u64,
}

/// The publishing side, owned by the hub handle.
#[derive(Debug)]
pub(super) struct Observers {
    tx: watch::Sender<Changes>,
}

impl Observers {
    pub(super) fn new() -> Self {
        Observers {
            tx: watch::Sender::new(Changes::default()),
        }
    }

    /// Records one operation and the events it raised.
    pub(super) fn publish(&self, events: &[HubEvent]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let appended = events
            .iter()
            .any(|e| matches!(e, HubEvent::EventsAvailable { .. }));
        let feedback = events
            .iter()
            .any(|e| matches!(e, HubEvent::FeedbackAvailable | HubEvent::C2dSettled { .. }));
        self.tx.send_modify(|c| {
            c.any += 1;
            c.events += u64::from(appended);
            c.feedback += u64::from(feedback);
        });
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Changes> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_operations_by_kind_only_while_observed() {
        let o = Observers::new();
        o.publish(&[HubEvent::FeedbackAvailable]);
        let rx = o.subscribe();
        assert_eq!(*rx.borrow(), Changes::default(), "nobody was watching");
        o.publish(&[]);
        o.publish(&[HubEvent::EventsAvailable { partition: 1 }]);
        o.publish(&[HubEvent::FeedbackAvailable]);
        assert_eq!(
            *rx.borrow(),
            Changes {
                any: 3,
                events: 1,
                feedback: 1
            }
        );
    }
}
