//! The bookkeeping behind direct methods: who is subscribed, which invocations are waiting or
//! in flight, and the indexes that find them again.
//!
//! Every map is ordered, so whatever the hub does for several invocations at once (send the
//! waiting ones when a device subscribes, fail the in-flight ones when it goes) happens in
//! arrival order and replays identically. An invocation that ends is removed from every index
//! in [`MethodTable::remove`]; nothing else deletes one, which is what keeps the table from
//! leaking.

use std::collections::{BTreeMap, BTreeSet};

use iothub_protocol::method::JsonPayload;
use time::OffsetDateTime;

use super::{ConnectionId, InvocationId, RequestId};
use crate::hub::Identity;
use crate::hub::timers::TimerId;

/// One invocation that has not ended.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// Who it is for.
    pub identity: Identity,
    /// The method name.
    pub name: String,
    /// The request payload, until it is sent (then the table no longer needs it).
    pub payload: Option<JsonPayload>,
    /// `connectTimeoutInSeconds`.
    pub connect_timeout_secs: u32,
    /// `responseTimeoutInSeconds`.
    pub response_timeout_secs: u32,
    /// When the service's request arrived.
    pub received: OffsetDateTime,
    /// Its one live deadline: the connect timeout while waiting, the response timeout once sent.
    pub timer: TimerId,
    /// Where and under which request id it was sent.
    pub sent: Option<(ConnectionId, RequestId)>,
}

/// Subscriptions and invocations.
#[derive(Debug, Default)]
pub(crate) struct MethodTable {
    /// Connections subscribed to methods, per identity, in subscription order: the last one
    /// receives new requests.
    subscribers: BTreeMap<Identity, Vec<ConnectionId>>,
    /// The identity each subscribed connection serves.
    connections: BTreeMap<ConnectionId, Identity>,
    /// Every invocation that has not ended.
    invocations: BTreeMap<InvocationId, Invocation>,
    /// Invocations waiting for a subscriber, per identity.
    waiting: BTreeMap<Identity, BTreeSet<InvocationId>>,
    /// Sent invocations by request id.
    by_rid: BTreeMap<RequestId, InvocationId>,
    /// Sent invocations per connection.
    in_flight: BTreeMap<ConnectionId, BTreeSet<InvocationId>>,
    next_invocation: u64,
    next_rid: u64,
}

impl MethodTable {
    /// A fresh invocation id.
    pub fn next_invocation_id(&mut self) -> InvocationId {
        self.next_invocation += 1;
        InvocationId(self.next_invocation)
    }

    /// A fresh request id, never reused, so a late answer can be told from a made-up one.
    fn next_rid(&mut self) -> RequestId {
        self.next_rid += 1;
        RequestId(self.next_rid)
    }

    /// True when this hub handed out `rid` at some point.
    pub fn was_issued(&self, rid: RequestId) -> bool {
        rid.0 >= 1 && rid.0 <= self.next_rid
    }

    /// The connection that receives new requests for `identity`: the newest subscriber.
    pub fn target(&self, identity: &Identity) -> Option<ConnectionId> {
        self.subscribers
            .get(identity)
            .and_then(|c| c.last())
            .copied()
    }

    /// Makes `connection` the newest subscriber of `identity` (moving it from another identity
    /// if the adapter reuses an id).
    pub fn subscribe(&mut self, connection: ConnectionId, identity: &Identity) {
        self.unsubscribe(connection);
        self.subscribers
            .entry(identity.clone())
            .or_default()
            .push(connection);
        self.connections.insert(connection, identity.clone());
    }

    /// Forgets the subscription of `connection`; returns whether it had one.
    pub fn unsubscribe(&mut self, connection: ConnectionId) -> bool {
        let Some(identity) = self.connections.remove(&connection) else {
            return false;
        };
        if let Some(list) = self.subscribers.get_mut(&identity) {
            list.retain(|c| *c != connection);
            if list.is_empty() {
                self.subscribers.remove(&identity);
            }
        }
        true
    }

    /// Forgets every subscription of identities on `device_id`.
    pub fn unsubscribe_device(&mut self, device_id: &str) {
        let gone: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, i)| i.device_id == device_id)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.unsubscribe(c);
        }
    }

    /// Forgets every subscription of `identity`.
    pub fn unsubscribe_identity(&mut self, identity: &Identity) {
        for c in self.subscribers.remove(identity).unwrap_or_default() {
            self.connections.remove(&c);
        }
    }

    /// Forgets every subscription.
    pub fn unsubscribe_all(&mut self) {
        self.subscribers.clear();
        self.connections.clear();
    }

    /// Records a new invocation; it waits until [`MethodTable::mark_sent`].
    pub fn insert(&mut self, id: InvocationId, invocation: Invocation) {
        self.waiting
            .entry(invocation.identity.clone())
            .or_default()
            .insert(id);
        self.invocations.insert(id, invocation);
    }

    /// The invocation with this id.
    pub fn get(&self, id: InvocationId) -> Option<&Invocation> {
        self.invocations.get(&id)
    }

    /// The invocation with this id, to change it.
    pub fn get_mut(&mut self, id: InvocationId) -> Option<&mut Invocation> {
        self.invocations.get_mut(&id)
    }

    /// Invocations waiting for a subscriber of `identity`, oldest first.
    pub fn waiting_for(&self, identity: &Identity) -> Vec<InvocationId> {
        self.waiting
            .get(identity)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Invocations sent over `connection`, oldest first.
    pub fn in_flight_on(&self, connection: ConnectionId) -> Vec<InvocationId> {
        self.in_flight
            .get(&connection)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Invocations for identities on `device_id`, oldest first.
    pub fn for_device(&self, device_id: &str) -> Vec<InvocationId> {
        self.invocations
            .iter()
            .filter(|(_, inv)| inv.identity.device_id == device_id)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every invocation, oldest first.
    pub fn all(&self) -> Vec<InvocationId> {
        self.invocations.keys().copied().collect()
    }

    /// Moves a waiting invocation to in flight on `connection` under a fresh request id, and
    /// hands back its payload for the request.
    pub fn mark_sent(
        &mut self,
        id: InvocationId,
        connection: ConnectionId,
    ) -> Option<(RequestId, JsonPayload)> {
        if self.invocations.get(&id)?.sent.is_some() {
            return None;
        }
        let rid = self.next_rid();
        let inv = self.invocations.get_mut(&id)?;
        inv.sent = Some((connection, rid));
        let payload = inv.payload.take().unwrap_or_default();
        let identity = inv.identity.clone();
        remove_from(&mut self.waiting, &identity, id);
        self.by_rid.insert(rid, id);
        self.in_flight.entry(connection).or_default().insert(id);
        Some((rid, payload))
    }

    /// The in-flight invocation answered by `rid`.
    pub fn by_rid(&self, rid: RequestId) -> Option<InvocationId> {
        self.by_rid.get(&rid).copied()
    }

    /// Removes an invocation from every index and returns it.
    pub fn remove(&mut self, id: InvocationId) -> Option<Invocation> {
        let inv = self.invocations.remove(&id)?;
        match inv.sent {
            Some((connection, rid)) => {
                self.by_rid.remove(&rid);
                remove_from(&mut self.in_flight, &connection, id);
            }
            None => remove_from(&mut self.waiting, &inv.identity, id),
        }
        Some(inv)
    }

    /// Number of invocations that have not ended.
    pub fn len(&self) -> usize {
        self.invocations.len()
    }

    /// Checks that the indexes agree with the invocations (tests only).
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let waiting: usize = self.waiting.values().map(BTreeSet::len).sum();
        let flying: usize = self.in_flight.values().map(BTreeSet::len).sum();
        assert_eq!(
            waiting + flying,
            self.invocations.len(),
            "indexes cover all"
        );
        assert_eq!(self.by_rid.len(), flying, "one rid per sent invocation");
        assert!(
            self.waiting.values().all(|s| !s.is_empty()),
            "no empty sets"
        );
        assert!(
            self.in_flight.values().all(|s| !s.is_empty()),
            "no empty sets"
        );
        assert!(
            self.subscribers.values().all(|s| !s.is_empty()),
            "no empty lists"
        );
        for (id, inv) in &self.invocations {
            match inv.sent {
                Some((c, rid)) => {
                    assert_eq!(self.by_rid.get(&rid), Some(id));
                    assert!(self.in_flight[&c].contains(id));
                    assert!(inv.payload.is_none());
                }
                None => assert!(self.waiting[&inv.identity].contains(id)),
            }
        }
        let subs: usize = self.subscribers.values().map(Vec::len).sum();
        assert_eq!(subs, self.connections.len());
    }
}

/// Removes `id` from the set under `key`, dropping the set when it empties.
fn remove_from<K: Ord + Clone>(
    map: &mut BTreeMap<K, BTreeSet<InvocationId>>,
    key: &K,
    id: InvocationId,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
