//! Desired-property notifications for connected devices: which connections subscribed, and
//! the fan-out of [`HubEvent::TwinDesiredChanged`](crate::hub::HubEvent) to them.
//!
//! Delivery happens inside the hub's critical section ([`HubHandle::run`] calls
//! [`DesiredSubscribers::deliver`] before it releases the lock), so two writes that race on
//! different threads still reach every device in version order. A send never waits: each
//! subscription has a bounded queue, and a connection that lets it fill up is closed instead
//! of losing a patch silently; the device then reconnects, reads the full twin and compares
//! versions, as the SDKs do after every reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use iothub_protocol::HubError;
use iothub_protocol::twin::{device_error_body, reported_patch_from_json};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{HubEvent, Identity};

use super::HubHandle;

/// Most notifications waiting for one connection before it is closed.
pub const DESIRED_QUEUE: usize = 1024;

/// One desired-property notification: the patch with its `$version`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPatch {
    /// `properties.desired.$version` after the change.
    pub version: i64,
    /// The body devices receive (the patch with nulls, and `$version`).
    pub patch: Value,
}

struct Subscriber {
    tx: mpsc::Sender<DesiredPatch>,
    /// Cancelled when the queue overflows: the connection closes.
    overflow: CancellationToken,
}

/// The subscribed connections, per identity.
#[derive(Default)]
pub(crate) struct DesiredSubscribers {
    by_identity: DashMap<Identity, HashMap<u64, Subscriber>>,
    next: AtomicU64,
}

impl DesiredSubscribers {
    /// Hands the desired changes among `events` to their subscribers, in order.
    pub(crate) fn deliver(&self, events: &[HubEvent]) {
        for e in events {
            let HubEvent::TwinDesiredChanged {
                identity,
                version,
                patch,
            } = e
            else {
                continue;
            };
            let Some(subs) = self.by_identity.get(identity) else {
                continue;
            };
            for s in subs.values() {
                let n = DesiredPatch {
                    version: *version,
                    patch: patch.clone(),
                };
                if s.tx.try_send(n).is_err() {
                    tracing::warn!(%identity, version, "desired notifications not read in time; closing the connection");
                    s.overflow.cancel();
                }
            }
        }
    }
}

/// A connection's subscription to desired-property notifications; unsubscribes on drop.
pub struct DesiredSubscription {
    handle: HubHandle,
    identity: Identity,
    id: u64,
    rx: mpsc::Receiver<DesiredPatch>,
    overflow: CancellationToken,
}

impl DesiredSubscription {
    /// The next notification, in version order. Never ends while subscribed.
    pub async fn recv(&mut self) -> DesiredPatch {
        match self.rx.recv().await {
            Some(p) => p,
            // The sender lives in the subscriber table until this guard drops.
            None => std::future::pending().await,
        }
    }

    /// Cancelled when notifications piled up unread: close the connection, the device will
    /// read the full twin after it reconnects.
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflow
    }
}

impl Drop for DesiredSubscription {
    fn drop(&mut self) {
        let subs = &self.handle.inner.twins.by_identity;
        if let Some(mut m) = subs.get_mut(&self.identity) {
            m.remove(&self.id);
        }
        subs.remove_if(&self.identity, |_, m| m.is_empty());
    }
}

impl HubHandle {
    /// Subscribes a connection to the desired-property notifications of `identity`.
    pub fn subscribe_desired(&self, identity: &Identity) -> DesiredSubscription {
        let twins = &self.inner.twins;
        let id = twins.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(DESIRED_QUEUE);
        let overflow = CancellationToken::new();
        twins
            .by_identity
            .entry(identity.clone())
            .or_default()
            .insert(
                id,
                Subscriber {
                    tx,
                    overflow: overflow.clone(),
                },
            );
        DesiredSubscription {
            handle: self.clone(),
            identity: identity.clone(),
            id,
            rx,
            overflow,
        }
    }
}

/// A device's twin request, as MQTT and AMQP carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTwinOp {
    /// Read the device view of the twin.
    Get,
    /// Patch reported properties with the JSON payload.
    PatchReported,
}

/// The hub's answer to a [`DeviceTwinOp`], in the terms both transports use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinReply {
    /// 200 (GET), 204 (PATCH) or the error's HTTP status.
    pub status: u16,
    /// The new `properties.reported.$version` after a PATCH.
    pub version: Option<i64>,
    /// The device view (GET), nothing (PATCH), or a JSON error body with `errorCode`.
    pub body: Vec<u8>,
}

impl HubHandle {
    /// Serves one device twin request for `identity`.
    pub fn device_twin_request(
        &self,
        identity: &Identity,
        op: DeviceTwinOp,
        payload: &[u8],
    ) -> TwinReply {
        let result = match op {
            DeviceTwinOp::Get => self
                .read(|hub| hub.get_twin_properties(identity))
                .and_then(|p| {
                    serde_json::to_vec(&p).map_err(|e| HubError::ServerError {
                        detail: e.to_string(),
                    })
                })
                .map(|body| (200, None, body)),
            DeviceTwinOp::PatchReported => serde_json::from_slice(payload)
                .map_err(|e| {
                    HubError::argument(format!("the reported properties patch is not JSON: {e}"))
                })
                .and_then(|v| reported_patch_from_json(&v))
                .and_then(|patch| {
                    self.run(|hub, now| hub.update_reported_properties(identity, &patch, now))
                })
                .map(|version| (204, Some(version), Vec::new())),
        };
        match result {
            Ok((status, version, body)) => TwinReply {
                status,
                version,
                body,
            },
            Err(e) => {
                tracing::debug!(%identity, ?op, error = %e, "twin request failed");
                let tracking = uuid::Uuid::new_v4().simple().to_string();
                TwinReply {
                    status: e.code().http_status(),
                    version: None,
                    body: device_error_body(&e, &tracking, self.now()),
                }
            }
        }
    }
}

/// The next notification of an optional subscription, or `None` once its queue overflowed
/// (close the connection). Pending forever without a subscription, so it can sit in a
/// `select!` beside the connection's other wake-ups.
pub async fn next_desired(sub: &mut Option<DesiredSubscription>) -> Option<DesiredPatch> {
    let Some(s) = sub else {
        return std::future::pending().await;
    };
    let overflow = s.overflow.clone();
    tokio::select! {
        biased;
        _ = overflow.cancelled() => None,
        p = s.recv() => Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Clock;
    use crate::hub::{Hub, HubSettings};
    use iothub_protocol::registry::Device;
    use iothub_protocol::twin::TwinWrite;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn desired_changes_reach_subscribers_in_version_order_and_stop_after_drop() {
        let h = HubHandle::new(Hub::new(HubSettings::default(), 1), Clock::new(false));
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let id = Identity::device("d1");
        let mut a = h.subscribe_desired(&id);
        let mut b = h.subscribe_desired(&id);
        for i in 0..5 {
            let w = TwinWrite::from_json(&json!({"properties": {"desired": {"n": i}}})).unwrap();
            h.run(|hub, now| hub.update_twin(&id, &w, None, now))
                .unwrap();
        }
        for sub in [&mut a, &mut b] {
            for v in 2..7 {
                let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                    .await
                    .unwrap();
                assert_eq!(got.version, v);
                assert_eq!(got.patch["$version"], json!(v));
                assert_eq!(got.patch["n"], json!(v - 2));
            }
        }
        drop(a);
        drop(b);
        assert!(h.inner.twins.by_identity.is_empty());
    }

    #[tokio::test]
    async fn an_unread_queue_closes_the_connection() {
        let h = HubHandle::new(Hub::new(HubSettings::default(), 1), Clock::new(false));
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        let id = Identity::device("d1");
        let sub = h.subscribe_desired(&id);
        for i in 0..=DESIRED_QUEUE {
            let w = TwinWrite::from_json(&json!({"properties": {"desired": {"n": i}}})).unwrap();
            h.run(|hub, now| hub.update_twin(&id, &w, None, now))
                .unwrap();
        }
        assert!(sub.overflowed().is_cancelled());
    }
}
