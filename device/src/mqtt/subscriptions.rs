//! Every topic filter the client subscribes to (C2D, methods, twins): whether the hub's session
//! holds it, the SUBSCRIBE in flight for it, and who waits for its SUBACK.
//!
//! A SUBACK finds its filter by the packet id its SUBSCRIBE was sent with. On a new
//! connection, filters the hub's session does not hold (`session_present = 0`, or never
//! granted) are subscribed again; waiters keep waiting across the reconnect.
//!
//! A feature uses it by calling [`Driver::want_subscription`] (online or offline) and, if it
//! must know, awaiting the waiter it passed.

use std::collections::{BTreeMap, HashMap};

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, SubAck, Subscribe, SubscribeReasonCode};
use tokio::sync::oneshot;

use super::connection::Connection;
use super::driver::Driver;
use crate::error::Error;

/// Told once whether the hub granted a subscription.
pub(crate) type SubscribeWaiter = oneshot::Sender<Result<(), Error>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent on the current connection (yet).
    Unsent,
    /// SUBSCRIBE queued or written; no SUBACK yet.
    Sent,
    /// The hub granted it; its session holds it.
    Granted,
    /// The hub refused it (SUBACK 0x80).
    Refused,
}

#[derive(Debug)]
struct Filter {
    qos: QoS,
    state: State,
    waiters: Vec<SubscribeWaiter>,
}

/// The client's subscriptions across connections.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    filters: BTreeMap<String, Filter>,
    /// Filters whose SUBSCRIBE was sent, by packet id (on the current connection).
    by_pkid: HashMap<u16, String>,
}

impl Subscriptions {
    /// Records that the client wants `filter`; `waiter` (if any) is told once the hub answers.
    /// Returns true when a SUBSCRIBE should be sent now (if connected; otherwise the next
    /// connection sends it).
    pub fn want(&mut self, filter: &str, qos: QoS, waiter: Option<SubscribeWaiter>) -> bool {
        let entry = self
            .filters
            .entry(filter.to_owned())
            .or_insert_with(|| Filter {
                qos,
                state: State::Unsent,
                waiters: Vec::new(),
            });
        match entry.state {
            State::Granted => {
                if let Some(w) = waiter {
                    let _ = w.send(Ok(()));
                }
                false
            }
            State::Sent => {
                entry.waiters.extend(waiter);
                false
            }
            State::Unsent | State::Refused => {
                entry.qos = qos;
                entry.state = State::Unsent;
                entry.waiters.extend(waiter);
                true
            }
        }
    }

    /// Records that a SUBSCRIBE for `filter` went out with packet id `pkid`.
    pub fn sent(&mut self, filter: &str, pkid: u16) {
        if let Some(f) = self.filters.get_mut(filter) {
            f.state = State::Sent;
            self.by_pkid.insert(pkid, filter.to_owned());
        }
    }

    /// True when a SUBSCRIBE with packet id `pkid` awaits its SUBACK.
    pub fn holds(&self, pkid: u16) -> bool {
        self.by_pkid.contains_key(&pkid)
    }

    /// Applies a SUBACK; returns the filter it answers and whether it was granted.
    pub fn acked(&mut self, ack: &SubAck) -> Option<(String, bool)> {
        let filter = self.by_pkid.remove(&ack.pkid)?;
        let granted = !ack.return_codes.is_empty()
            && ack
                .return_codes
                .iter()
                .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
        let f = self.filters.get_mut(&filter)?;
        f.state = if granted {
            State::Granted
        } else {
            State::Refused
        };
        for w in f.waiters.drain(..) {
            let _ = w.send(if granted {
                Ok(())
            } else {
                Err(refused(&filter))
            });
        }
        Some((filter, granted))
    }

    /// A new connection: forgets the old one's packet ids and returns the filters to
    /// subscribe on it (all of them unless the hub kept the session and granted them).
    pub fn connected(&mut self, session_present: bool) -> Vec<(String, QoS)> {
        self.by_pkid.clear();
        self.filters
            .iter_mut()
            .filter(|(_, f)| f.state != State::Refused)
            .filter_map(|(name, f)| {
                if session_present && f.state == State::Granted {
                    return None;
                }
                f.state = State::Unsent;
                Some((name.clone(), f.qos))
            })
            .collect()
    }

    /// True when the hub's session holds `filter`.
    #[cfg(test)]
    pub fn is_granted(&self, filter: &str) -> bool {
        self.filters
            .get(filter)
            .is_some_and(|f| f.state == State::Granted)
    }

    /// The client stops: every waiter gets `err`.
    pub fn fail_all(&mut self, err: &Error) {
        for f in self.filters.values_mut() {
            for w in f.waiters.drain(..) {
                let _ = w.send(Err(err.clone()));
            }
        }
    }
}

fn refused(filter: &str) -> Error {
    Error::Protocol {
        message: format!("the hub refused the subscription to '{filter}' (SUBACK 0x80)"),
    }
}

impl Driver {
    /// Subscribes to `filter` now if connected and needed; `waiter` learns the hub's answer.
    pub(super) fn want_subscription(
        &mut self,
        conn: Option<&mut Connection>,
        filter: &str,
        qos: QoS,
        waiter: Option<SubscribeWaiter>,
    ) {
        if self.subscriptions.want(filter, qos, waiter)
            && let Some(conn) = conn
        {
            self.send_subscribe(conn, filter, qos);
        }
    }

    /// Sends a SUBSCRIBE on the connection.
    pub(super) fn send_subscribe(&mut self, conn: &mut Connection, filter: &str, qos: QoS) {
        let subscriptions = &self.subscriptions;
        let pkid = conn.next_pkid(|id| subscriptions.holds(id));
        let mut subscribe = Subscribe::new(filter, qos);
        subscribe.pkid = pkid;
        match conn.send(&Packet::Subscribe(subscribe)) {
            Ok(()) => self.subscriptions.sent(filter, pkid),
            Err(e) => tracing::warn!(error = ?e, %filter, "SUBSCRIBE cannot be encoded"),
        }
    }

    /// A SUBACK: the table learns the answer; a refusal is worth a warning.
    pub(super) fn on_suback(&mut self, ack: &SubAck) {
        if let Some((filter, false)) = self.subscriptions.acked(ack) {
            tracing::warn!(
                device = %self.params.device_id,
                %filter,
                "the hub refused the subscription; nothing will arrive on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(pkid: u16, ok: bool) -> SubAck {
        let code = if ok {
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        } else {
            SubscribeReasonCode::Failure
        };
        SubAck::new(pkid, vec![code])
    }

    #[test]
    fn subacks_find_their_filter_by_packet_id_and_tell_the_waiters() {
        let mut s = Subscriptions::default();
        let (tx_a, mut rx_a) = oneshot::channel();
        let (tx_b, mut rx_b) = oneshot::channel();
        assert!(s.want("a/#", QoS::AtLeastOnce, Some(tx_a)));
        s.sent("a/#", 7);
        assert!(s.want("b/#", QoS::AtMostOnce, Some(tx_b)));
        s.sent("b/#", 8);
        assert!(s.holds(7) && s.holds(8) && !s.holds(9));
        // Answered out of order.
        assert_eq!(s.acked(&ack(8, false)), Some(("b/#".into(), false)));
        assert_eq!(s.acked(&ack(7, true)), Some(("a/#".into(), true)));
        assert!(rx_a.try_recv().unwrap().is_ok());
        assert!(matches!(
            rx_b.try_recv().unwrap(),
            Err(Error::Protocol { .. })
        ));
        assert!(s.is_granted("a/#") && !s.is_granted("b/#"));
        assert_eq!(
            s.acked(&ack(7, true)),
            None,
            "a repeated SUBACK changes nothing"
        );
    }

    #[test]
    fn a_granted_filter_answers_at_once_and_a_pending_one_gathers_waiters() {
        let mut s = Subscriptions::default();
        assert!(s.want("a/#", QoS::AtLeastOnce, None));
        s.sent("a/#", 1);
        let (tx, mut rx) = oneshot::channel();
        assert!(!s.want("a/#", QoS::AtLeastOnce, Some(tx)), "already sent");
        s.acked(&ack(1, true));
        assert!(rx.try_recv().unwrap().is_ok());
        let (tx, mut rx) = oneshot::channel();
        assert!(!s.want("a/#", QoS::AtLeastOnce, Some(tx)));
        assert!(rx.try_recv().unwrap().is_ok());
    }

    #[test]
    fn reconnects_resubscribe_what_the_session_does_not_hold() {
        let mut s = Subscriptions::default();
        s.want("a/#", QoS::AtLeastOnce, None);
        s.sent("a/#", 1);
        s.acked(&ack(1, true));
        let (tx, mut rx) = oneshot::channel();
        s.want("b/#", QoS::AtMostOnce, Some(tx));
        s.sent("b/#", 2);
        // Lost before b's SUBACK; the hub kept the session.
        assert_eq!(s.connected(true), [("b/#".to_owned(), QoS::AtMostOnce)]);
        assert!(rx.try_recv().is_err(), "still waiting");
        assert!(!s.holds(2), "the old connection's packet ids are forgotten");
        s.sent("b/#", 1);
        s.acked(&ack(1, true));
        assert!(rx.try_recv().unwrap().is_ok());
        // A fresh session needs everything again.
        let again = s.connected(false);
        assert_eq!(again.len(), 2);
        assert!(!s.is_granted("a/#"));
    }

    #[test]
    fn stopping_fails_the_waiters() {
        let mut s = Subscriptions::default();
        let (tx, mut rx) = oneshot::channel();
        s.want("a/#", QoS::AtLeastOnce, Some(tx));
        s.fail_all(&Error::Closed);
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::Closed)));
    }
}
