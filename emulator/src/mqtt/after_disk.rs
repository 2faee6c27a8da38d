//! Answers that may only go out once what they acknowledge is on disk (PUBACKs of telemetry,
//! twin responses), pipelined.
//!
//! Waiting for the disk after each PUBLISH before reading the next made a device that keeps
//! many QoS 1 messages in flight wait for one commit per message. Here the connection keeps
//! reading and applying PUBLISHes while a sync is pending; the answers queue up in order, and
//! when a sync completes, the answers queued before it started go out (MQTT-4.6.0-2: PUBACKs in
//! the order of their PUBLISHes), and the next sync covers the rest. A sync that completes at
//! once (no data directory, or nothing left to write) releases its answers without a wait.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;
use rumqttc::mqttbytes::v4::Packet;

use crate::persist::PersistError;

/// Answers queued for the disk before the connection stops reading (the device then has this
/// many messages unacknowledged; well-behaved clients keep far fewer in flight).
pub const MAX_WAITING: usize = 1024;

type Sync = Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send>>;

/// The queue of one connection.
#[derive(Default)]
pub struct AfterDisk {
    waiting: VecDeque<Packet>,
    /// How many at the front may go out.
    ready: usize,
    /// How many at the front the sync in flight covers.
    covered: usize,
    sync: Option<Sync>,
}

impl AfterDisk {
    /// Queues an answer behind everything queued before it.
    pub fn push(&mut self, answer: Packet) {
        self.waiting.push_back(answer);
    }

    /// Answers queued, ready or not.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// True while a sync is in flight ([`AfterDisk::wait`] then completes).
    pub fn syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// The next answer that may go out.
    pub fn pop_ready(&mut self) -> Option<Packet> {
        if self.ready == 0 {
            return None;
        }
        self.ready -= 1;
        self.covered = self.covered.saturating_sub(1);
        self.waiting.pop_front()
    }

    /// Unless a sync is in flight or everything queued is ready, starts `sync()`, which must
    /// complete once everything applied so far is on disk. True when it completed at once
    /// (answers became ready).
    pub fn begin<F>(&mut self, sync: impl FnOnce() -> F) -> Result<bool, PersistError>
    where
        F: Future<Output = Result<(), PersistError>> + Send + 'static,
    {
        if self.sync.is_some() || self.ready == self.waiting.len() {
            return Ok(false);
        }
        self.covered = self.waiting.len();
        let mut fut: Sync = Box::pin(sync());
        match fut.as_mut().now_or_never() {
            Some(r) => {
                r?;
                self.ready = self.covered;
                Ok(true)
            }
            None => {
                self.sync = Some(fut);
                Ok(false)
            }
        }
    }

    /// Completes when the sync in flight does; its answers are then ready. Never completes
    /// when no sync is in flight.
    pub async fn wait(&mut self) -> Result<(), PersistError> {
        let Some(fut) = self.sync.as_mut() else {
            return std::future::pending().await;
        };
        let r = fut.await;
        self.sync = None;
        r?;
        self.ready = self.covered;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::PubAck;
    use tokio::sync::oneshot;

    fn ack(pkid: u16) -> Packet {
        Packet::PubAck(PubAck::new(pkid))
    }

    fn pkids(q: &mut AfterDisk) -> Vec<u16> {
        std::iter::from_fn(|| q.pop_ready())
            .map(|p| match p {
                Packet::PubAck(a) => a.pkid,
                other => panic!("not a PUBACK: {other:?}"),
            })
            .collect()
    }

    fn disk() -> (
        oneshot::Sender<()>,
        impl Future<Output = Result<(), PersistError>> + Send + 'static,
    ) {
        let (tx, rx) = oneshot::channel::<()>();
        (
            tx,
            async move { rx.await.map_err(|_| PersistError::Closed) },
        )
    }

    #[tokio::test]
    async fn answers_wait_for_the_sync_that_covers_them_and_keep_their_order() {
        let mut q = AfterDisk::default();
        q.push(ack(1));
        q.push(ack(2));
        let (first, sync) = disk();
        assert!(!q.begin(|| sync).unwrap());
        assert!(q.syncing());
        // Applied while the first sync is pending: not covered by it.
        q.push(ack(3));
        let (_unused, sync) = disk();
        assert!(!q.begin(|| sync).unwrap(), "one sync at a time");
        assert_eq!(pkids(&mut q), Vec::<u16>::new(), "nothing before the disk");
        first.send(()).unwrap();
        q.wait().await.unwrap();
        assert_eq!(pkids(&mut q), vec![1, 2]);
        assert_eq!(q.len(), 1);
        let (second, sync) = disk();
        assert!(!q.begin(|| sync).unwrap());
        second.send(()).unwrap();
        q.wait().await.unwrap();
        assert_eq!(pkids(&mut q), vec![3]);
        assert!(q.is_empty() && !q.syncing());
    }

    #[tokio::test]
    async fn a_sync_that_is_done_at_once_releases_without_waiting() {
        let mut q = AfterDisk::default();
        assert!(!q.begin(|| async { Ok(()) }).unwrap(), "nothing to cover");
        q.push(ack(7));
        q.push(ack(8));
        assert!(q.begin(|| async { Ok(()) }).unwrap());
        assert!(!q.syncing());
        assert_eq!(pkids(&mut q), vec![7, 8]);
    }

    #[tokio::test]
    async fn a_failed_sync_releases_nothing() {
        let mut q = AfterDisk::default();
        q.push(ack(1));
        let failed = q.begin(|| async { Err(PersistError::WriteFailed("disk full".into())) });
        assert!(failed.is_err());
        assert_eq!(pkids(&mut q), Vec::<u16>::new());
        let (tx, sync) = disk();
        q.begin(|| sync).unwrap();
        drop(tx);
        assert!(q.wait().await.is_err());
        assert_eq!(pkids(&mut q), Vec::<u16>::new());
    }
}
