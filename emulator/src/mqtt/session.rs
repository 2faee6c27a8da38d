//! One device's MQTT session, without sockets: subscriptions, packet ids, the C2D in-flight
//! window, and which messages were sent before (for DUP).
//!
//! Reference: iothub-protocol.md 3.5–3.7. The hub owns the C2D queue and its locks; the session
//! only remembers which lock each unacknowledged PUBLISH holds, so a PUBACK completes the right
//! delivery and a dropped connection can release every lock it held. Delivery follows the
//! hub's order (oldest available first); the window caps how many deliveries are unacknowledged
//! at once.
//!
//! With clean session 0 the subscriptions and the "sent before" set outlive the connection
//! ([`PersistedSession`], kept in the [`super::SessionStore`]); a message sent before and not
//! acknowledged is sent again with DUP=1.

use std::collections::{BTreeMap, BTreeSet};

use iothub_protocol::Message;
use iothub_protocol::property_bag::encode_c2d_topic;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};

use super::topics::{Filter, c2d_filter, classify_filter};

/// Most sequence numbers remembered for DUP; the oldest are forgotten first.
const MAX_SENT_BEFORE: usize = 1024;

/// What survives a connection with clean session 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistedSession {
    /// The device generation the session belongs to: a re-created device starts fresh.
    pub generation: Option<String>,
    c2d: Option<QoS>,
    sdk_filters: BTreeMap<String, QoS>,
    sent_before: BTreeSet<u64>,
}

impl PersistedSession {
    /// True when the device is subscribed to its C2D topic.
    pub fn has_c2d_subscription(&self) -> bool {
        self.c2d.is_some()
    }
}

/// A C2D delivery waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The PUBLISH's packet id.
    pub pkid: u16,
    /// The message's sequence number in the device queue.
    pub sequence_number: u64,
    /// The lock the delivery holds.
    pub lock_token: String,
}

/// What to do with a message the hub just locked for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Send this PUBLISH. With `complete_on_send` (a QoS 0 subscription) complete the message
    /// with that lock token once it is written.
    Send {
        /// The packet.
        publish: Publish,
        /// The lock token to complete after writing, for QoS 0.
        complete_on_send: Option<String>,
    },
    /// The message is already in flight here (its lock ran out and the hub locked it again):
    /// nothing is sent, the PUBACK will complete the new lock.
    Relocked,
}

/// Why a locked message cannot be delivered on this session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The message carries no lock token or sequence number (the hub sets both on receive).
    #[error("the hub returned a C2D message without a lock token or sequence number")]
    Unlocked,
    /// Every packet id is in use.
    #[error("no free packet id")]
    NoPacketId,
}

/// One connection's view of a device session.
#[derive(Debug)]
pub struct Session {
    device_id: String,
    max_inflight: usize,
    c2d: Option<QoS>,
    sdk_filters: BTreeMap<String, QoS>,
    inflight: BTreeMap<u16, InFlight>,
    sent_before: BTreeSet<u64>,
    next_pkid: u16,
}

fn granted(requested: QoS) -> QoS {
    // QoS 2 is granted as 1 (iothub-protocol.md 3.5).
    match requested {
        QoS::AtMostOnce => QoS::AtMostOnce,
        QoS::AtLeastOnce | QoS::ExactlyOnce => QoS::AtLeastOnce,
    }
}

impl Session {
    /// A session for `device_id`, continuing `restored` if given.
    pub fn new(device_id: &str, max_inflight: usize, restored: Option<PersistedSession>) -> Self {
        let p = restored.unwrap_or_default();
        Session {
            device_id: device_id.to_owned(),
            max_inflight: max_inflight.clamp(1, usize::from(u16::MAX)),
            c2d: p.c2d,
            sdk_filters: p.sdk_filters,
            inflight: BTreeMap::new(),
            sent_before: p.sent_before,
            next_pkid: 1,
        }
    }

    /// Answers a SUBSCRIBE: the device's own C2D filter and the SDK filters are granted (QoS
    /// 2 as 1), everything else fails (0x80).
    pub fn subscribe(&mut self, subscribe: &Subscribe) -> SubAck {
        let codes = subscribe
            .filters
            .iter()
            .map(|f| match classify_filter(&self.device_id, &f.path) {
                Filter::C2d => {
                    let q = granted(f.qos);
                    self.c2d = Some(q);
                    SubscribeReasonCode::Success(q)
                }
                Filter::Sdk => {
                    let q = granted(f.qos);
                    self.sdk_filters.insert(f.path.clone(), q);
                    SubscribeReasonCode::Success(q)
                }
                Filter::Denied => SubscribeReasonCode::Failure,
            })
            .collect();
        SubAck::new(subscribe.pkid, codes)
    }

    /// Answers an UNSUBSCRIBE. Deliveries in flight stay in flight.
    pub fn unsubscribe(&mut self, unsubscribe: &Unsubscribe) -> UnsubAck {
        let own = c2d_filter(&self.device_id);
        for t in &unsubscribe.topics {
            if *t == own {
                self.c2d = None;
            } else {
                self.sdk_filters.remove(t);
            }
        }
        UnsubAck::new(unsubscribe.pkid)
    }

    /// True when the session holds the SDK filter `filter` (granted, or restored).
    pub fn has_sdk_filter(&self, filter: &str) -> bool {
        self.sdk_filters.contains_key(filter)
    }

    /// True when the session is subscribed to C2D and the window has room.
    pub fn wants_c2d(&self) -> bool {
        self.c2d.is_some() && self.inflight.len() < self.max_inflight
    }

    /// Number of deliveries waiting for PUBACK.
    #[cfg(test)]
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Turns a message the hub locked for this device into a PUBLISH (or notes a re-lock).
    pub fn deliver(&mut self, message: &Message) -> Result<Delivery, DeliverError> {
        let (Some(token), Some(seq)) = (
            message.system.lock_token.clone(),
            message.system.sequence_number,
        ) else {
            return Err(DeliverError::Unlocked);
        };
        if let Some(f) = self
            .inflight
            .values_mut()
            .find(|f| f.sequence_number == seq)
        {
            f.lock_token = token;
            return Ok(Delivery::Relocked);
        }
        let qos = self.c2d.unwrap_or(QoS::AtLeastOnce);
        let mut publish = Publish::new(
            encode_c2d_topic(&self.device_id, message),
            qos,
            message.body.clone(),
        );
        publish.dup = self.sent_before.contains(&seq);
        if qos == QoS::AtMostOnce {
            self.sent_before.remove(&seq);
            return Ok(Delivery::Send {
                publish,
                complete_on_send: Some(token),
            });
        }
        let pkid = self.allocate_pkid().ok_or(DeliverError::NoPacketId)?;
        publish.pkid = pkid;
        self.inflight.insert(
            pkid,
            InFlight {
                pkid,
                sequence_number: seq,
                lock_token: token,
            },
        );
        self.remember_sent(seq);
        Ok(Delivery::Send {
            publish,
            complete_on_send: None,
        })
    }

    /// Handles a PUBACK: the delivery it acknowledges, if the packet id is in flight.
    pub fn puback(&mut self, pkid: u16) -> Option<InFlight> {
        let f = self.inflight.remove(&pkid)?;
        self.sent_before.remove(&f.sequence_number);
        Some(f)
    }

    /// Takes every delivery still in flight, oldest message first (to release their locks).
    pub fn take_inflight(&mut self) -> Vec<InFlight> {
        let mut all: Vec<InFlight> = std::mem::take(&mut self.inflight).into_values().collect();
        all.sort_by_key(|f| f.sequence_number);
        all
    }

    /// What a clean-session-0 connection leaves behind. Call after [`Session::take_inflight`].
    pub fn into_persisted(self, generation: Option<String>) -> PersistedSession {
        PersistedSession {
            generation,
            c2d: self.c2d,
            sdk_filters: self.sdk_filters,
            sent_before: self.sent_before,
        }
    }

    fn remember_sent(&mut self, seq: u64) {
        self.sent_before.insert(seq);
        while self.sent_before.len() > MAX_SENT_BEFORE {
            self.sent_before.pop_first();
        }
    }

    fn allocate_pkid(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if id != 0 && !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::SubscribeFilter;

    fn locked(seq: u64, token: &str) -> Message {
        let mut m = Message::new(format!("m{seq}"));
        m.system.sequence_number = Some(seq);
        m.system.lock_token = Some(token.to_owned());
        m
    }

    fn sub(filters: &[(&str, QoS)]) -> Subscribe {
        Subscribe {
            pkid: 7,
            filters: filters
                .iter()
                .map(|(p, q)| SubscribeFilter::new(p.to_string(), *q))
                .collect(),
        }
    }

    fn sent(d: Delivery) -> Publish {
        match d {
            Delivery::Send { publish, .. } => publish,
            Delivery::Relocked => panic!("expected a publish"),
        }
    }

    #[test]
    fn subscribe_grants_own_and_sdk_filters_only() {
        let mut s = Session::new("d1", 4, None);
        assert!(!s.wants_c2d());
        let ack = s.subscribe(&sub(&[
            ("devices/d1/messages/devicebound/#", QoS::ExactlyOnce),
            ("devices/d2/messages/devicebound/#", QoS::AtLeastOnce),
            ("$iothub/twin/res/#", QoS::AtMostOnce),
            ("$iothub/methods/POST/#", QoS::ExactlyOnce),
            ("#", QoS::AtMostOnce),
        ]));
        assert_eq!(ack.pkid, 7);
        assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
            ]
        );
        assert!(s.wants_c2d());
        s.unsubscribe(&Unsubscribe {
            pkid: 8,
            topics: vec!["devices/d1/messages/devicebound/#".into()],
        });
        assert!(!s.wants_c2d());
    }

    #[test]
    fn window_packet_ids_and_puback() {
        let mut s = Session::new("d1", 2, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )]));
        let p1 = sent(s.deliver(&locked(1, "t1")).unwrap());
        let p2 = sent(s.deliver(&locked(2, "t2")).unwrap());
        assert_eq!((p1.pkid, p2.pkid), (1, 2));
        assert_eq!(p1.qos, QoS::AtLeastOnce);
        assert!(!p1.dup);
        assert_eq!(
            p1.topic,
            "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound"
        );
        assert_eq!(&p1.payload[..], b"m1");
        assert!(!s.wants_c2d());
        let done = s.puback(1).unwrap();
        assert_eq!(done.lock_token, "t1");
        assert_eq!(done.sequence_number, 1);
        assert!(s.puback(1).is_none());
        assert!(s.wants_c2d());
        let p3 = sent(s.deliver(&locked(3, "t3")).unwrap());
        assert_eq!(p3.pkid, 3);
    }

    #[test]
    fn packet_ids_wrap_and_skip_those_in_use() {
        let mut s = Session::new("d1", 3, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )]));
        s.next_pkid = u16::MAX;
        let a = sent(s.deliver(&locked(1, "a")).unwrap());
        let b = sent(s.deliver(&locked(2, "b")).unwrap());
        assert_eq!((a.pkid, b.pkid), (u16::MAX, 1));
        s.next_pkid = 1;
        let c = sent(s.deliver(&locked(3, "c")).unwrap());
        assert_eq!(c.pkid, 2);
    }

    #[test]
    fn relock_of_an_inflight_message_sends_nothing() {
        let mut s = Session::new("d1", 2, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )]));
        let p = sent(s.deliver(&locked(1, "old")).unwrap());
        assert_eq!(s.deliver(&locked(1, "new")).unwrap(), Delivery::Relocked);
        assert_eq!(s.inflight_len(), 1);
        assert_eq!(s.puback(p.pkid).unwrap().lock_token, "new");
    }

    #[test]
    fn qos0_completes_on_send() {
        let mut s = Session::new("d1", 1, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtMostOnce,
        )]));
        match s.deliver(&locked(1, "t")).unwrap() {
            Delivery::Send {
                publish,
                complete_on_send,
            } => {
                assert_eq!(publish.qos, QoS::AtMostOnce);
                assert_eq!(publish.pkid, 0);
                assert_eq!(complete_on_send.as_deref(), Some("t"));
            }
            Delivery::Relocked => panic!(),
        }
        assert!(s.wants_c2d());
    }

    #[test]
    fn persisted_session_resends_with_dup() {
        let mut s = Session::new("d1", 4, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )]));
        sent(s.deliver(&locked(1, "a")).unwrap());
        let p2 = sent(s.deliver(&locked(2, "b")).unwrap());
        s.puback(p2.pkid);
        let released = s.take_inflight();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].lock_token, "a");
        let persisted = s.into_persisted(Some("g".into()));
        assert!(persisted.has_c2d_subscription());

        let mut again = Session::new("d1", 4, Some(persisted));
        assert!(again.wants_c2d());
        let p1 = sent(again.deliver(&locked(1, "a2")).unwrap());
        assert!(p1.dup);
        let p3 = sent(again.deliver(&locked(3, "c")).unwrap());
        assert!(!p3.dup);
    }

    #[test]
    fn messages_without_a_lock_are_refused() {
        let mut s = Session::new("d1", 4, None);
        s.subscribe(&sub(&[(
            "devices/d1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )]));
        assert_eq!(s.deliver(&Message::new("x")), Err(DeliverError::Unlocked));
    }
}
