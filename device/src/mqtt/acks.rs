//! PUBACKs in the order the PUBLISHes arrived ([MQTT-4.6.0-2]), whatever order the
//! application settles messages in.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not settled yet: everything after it waits.
    Pending,
    /// Completed: PUBACK when it reaches the front.
    Ack,
    /// Dropped unsettled: no PUBACK (the hub redelivers it after a reconnect), but it no
    /// longer holds later ones back.
    Release,
}

/// The QoS 1 messages received on one connection and not yet acknowledged, oldest first.
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    entries: VecDeque<(u16, Status)>,
}

impl AckQueue {
    /// Records a QoS 1 PUBLISH with packet id `pkid`.
    pub fn received(&mut self, pkid: u16) {
        self.entries.push_back((pkid, Status::Pending));
    }

    /// Settles the oldest pending message with `pkid` (`ack`: complete; else release) and
    /// returns the packet ids to PUBACK now, in order.
    pub fn settle(&mut self, pkid: u16, ack: bool) -> Vec<u16> {
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|(id, s)| *id == pkid && *s == Status::Pending)
        {
            entry.1 = if ack { Status::Ack } else { Status::Release };
        }
        let mut ready = Vec::new();
        while let Some(&(id, status)) = self.entries.front() {
            match status {
                Status::Pending => break,
                Status::Ack => ready.push(id),
                Status::Release => {}
            }
            self.entries.pop_front();
        }
        ready
    }

    /// Messages received and not yet settled or released.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_acks_at_once() {
        let mut q = AckQueue::default();
        q.received(1);
        q.received(2);
        assert_eq!(q.settle(1, true), [1]);
        assert_eq!(q.settle(2, true), [2]);
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn a_later_completion_waits_for_the_earlier_one() {
        let mut q = AckQueue::default();
        for id in [7, 8, 9] {
            q.received(id);
        }
        assert_eq!(q.settle(9, true), Vec::<u16>::new());
        assert_eq!(q.settle(8, true), Vec::<u16>::new());
        assert_eq!(q.settle(7, true), [7, 8, 9]);
    }

    #[test]
    fn a_released_message_is_skipped_without_ack() {
        let mut q = AckQueue::default();
        for id in [1, 2, 3] {
            q.received(id);
        }
        assert_eq!(q.settle(2, true), Vec::<u16>::new());
        assert_eq!(q.settle(1, false), [2]);
        assert_eq!(q.settle(3, true), [3]);
    }

    #[test]
    fn unknown_or_repeated_settles_change_nothing() {
        let mut q = AckQueue::default();
        q.received(5);
        assert_eq!(q.settle(6, true), Vec::<u16>::new());
        assert_eq!(q.settle(5, true), [5]);
        assert_eq!(q.settle(5, true), Vec::<u16>::new());
    }

    #[test]
    fn a_reused_packet_id_settles_the_oldest_first() {
        let mut q = AckQueue::default();
        q.received(1);
        q.received(2);
        assert_eq!(q.settle(1, true), [1]);
        q.received(1);
        assert_eq!(q.settle(1, true), Vec::<u16>::new());
        assert_eq!(q.settle(2, true), [2, 1]);
    }
}
