//! Polling for C2D messages over HTTPS: only while someone waits for a message, so the
//! client never locks messages nobody is about to take.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::Https;
use crate::backoff::Backoff;
use crate::config::Transport;
use crate::error::Error;
use crate::message::{ReceivedMessage, Settle};
use crate::mqtt::C2dSender;

/// How many receivers wait for a message versus how many messages wait for a receiver. The
/// poller only polls while receivers outnumber buffered messages, so it never locks messages
/// nobody is about to take.
#[derive(Default)]
pub(crate) struct Demand {
    waiting: AtomicUsize,
    buffered: AtomicUsize,
    notify: Notify,
}

/// Counts one waiting receiver while it lives.
pub(crate) struct DemandGuard(Arc<Demand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Demand {
    /// A receiver starts waiting.
    pub fn enter(self: &Arc<Self>) -> DemandGuard {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
        DemandGuard(self.clone())
    }

    /// A receiver took a buffered message.
    pub fn taken(&self) {
        let _ = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > self.buffered.load(Ordering::Acquire)
    }
}

/// Polls for C2D messages while someone waits for one, until the client stops.
pub(crate) async fn poll_loop(
    https: Arc<Https>,
    demand: Arc<Demand>,
    c2d_tx: C2dSender,
    interval: Duration,
    backoff: Backoff,
) {
    let shutdown = https.shutdown();
    let mut failures: u32 = 0;
    loop {
        while !demand.wanted() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = demand.notify.notified() => {}
            }
        }
        let wait = match https.receive().await {
            Ok(Some(message)) => {
                failures = 0;
                let lock_token = message.system.lock_token.clone().unwrap_or_default();
                demand.buffered.fetch_add(1, Ordering::AcqRel);
                let settle = Settle::Https {
                    lock_token,
                    https: https.clone(),
                };
                if c2d_tx
                    .send(ReceivedMessage::new(message, settle, Transport::Https))
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(None) => {
                failures = 0;
                interval
            }
            Err(e) if e.is_fatal() || e == Error::Closed => return,
            Err(e) => {
                tracing::info!(device = %https.device_id(), error = %e, "HTTPS poll failed; retrying");
                let wait = backoff.delay(failures).max(interval);
                failures = failures.saturating_add(1);
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_counts_waiters_against_buffered_messages() {
        let d = Arc::new(Demand::default());
        assert!(!d.wanted());
        let g = d.enter();
        assert!(d.wanted());
        d.buffered.fetch_add(1, Ordering::AcqRel);
        assert!(!d.wanted());
        d.taken();
        assert!(d.wanted());
        drop(g);
        assert!(!d.wanted());
        d.taken();
        assert_eq!(d.buffered.load(Ordering::Acquire), 0);
    }
}
