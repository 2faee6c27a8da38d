//! Who reads each partition of each consumer group, and the owner-level (epoch) rules.
//!
//! Event Hubs lets a receiver claim a partition of a consumer group with an owner level (the
//! `com.microsoft:epoch` link property). A receiver with a level displaces every receiver of
//! that partition and group with a lower or equal level and every one without a level; while
//! one with a level is attached, a receiver with a lower level or none is refused. Receivers
//! without a level share a partition, at most five at a time (the Event Hubs quota). Displaced
//! and refused receivers see `amqp:link:stolen`; the sixth sees `amqp:resource-limit-exceeded`.

use std::collections::BTreeMap;

use super::EventLogError;

/// Most receivers without an owner level on one partition of one consumer group.
pub const MAX_SHARED_READERS: usize = 5;

/// A receiver known to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReaderId(u64);

impl ReaderId {
    /// The number behind the id (for logs and maps in the shell).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A lower-cased consumer group name and a partition.
type Target = (String, u32);

/// The receivers of every (consumer group, partition).
#[derive(Debug, Default)]
pub(super) struct Readers {
    /// Each target's receivers with their owner levels.
    by_target: BTreeMap<Target, Vec<(ReaderId, Option<i64>)>>,
    targets: BTreeMap<ReaderId, Target>,
    next: u64,
}

impl Readers {
    /// Admits a receiver on `group` (canonical name) / `partition` with `owner_level`; returns
    /// its id and the receivers it displaces (already removed).
    pub(super) fn attach(
        &mut self,
        group: &str,
        partition: u32,
        owner_level: Option<i64>,
    ) -> Result<(ReaderId, Vec<ReaderId>), EventLogError> {
        let key = (group.to_ascii_lowercase(), partition);
        let current = self.by_target.entry(key.clone()).or_default();
        let held = current.iter().filter_map(|(_, level)| *level).max();
        let refused = |requested| EventLogError::OwnerLevelConflict {
            consumer_group: group.to_owned(),
            partition,
            held: held.unwrap_or_default(),
            requested,
        };
        let displaced: Vec<ReaderId> = match (owner_level, held) {
            (Some(new), Some(old)) if new < old => return Err(refused(Some(new))),
            (None, Some(_)) => return Err(refused(None)),
            (Some(_), _) => current.drain(..).map(|(id, _)| id).collect(),
            (None, None) if current.len() >= MAX_SHARED_READERS => {
                return Err(EventLogError::TooManyReaders {
                    consumer_group: group.to_owned(),
                    partition,
                    max: MAX_SHARED_READERS,
                });
            }
            (None, None) => Vec::new(),
        };
        self.next += 1;
        let id = ReaderId(self.next);
        current.push((id, owner_level));
        for d in &displaced {
            self.targets.remove(d);
        }
        self.targets.insert(id, key);
        Ok((id, displaced))
    }

    /// Forgets a receiver (its link closed); false if it was unknown or already displaced.
    pub(super) fn detach(&mut self, id: ReaderId) -> bool {
        let Some(key) = self.targets.remove(&id) else {
            return false;
        };
        if let Some(list) = self.by_target.get_mut(&key) {
            list.retain(|(r, _)| *r != id);
            if list.is_empty() {
                self.by_target.remove(&key);
            }
        }
        true
    }

    /// Number of attached receivers.
    pub(super) fn len(&self) -> usize {
        self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(r: Result<(ReaderId, Vec<ReaderId>), EventLogError>) -> bool {
        matches!(r, Err(EventLogError::OwnerLevelConflict { .. }))
    }

    #[test]
    fn shared_readers_up_to_five() {
        let mut r = Readers::default();
        for _ in 0..MAX_SHARED_READERS {
            assert!(r.attach("$Default", 0, None).unwrap().1.is_empty());
        }
        assert!(matches!(
            r.attach("$default", 0, None),
            Err(EventLogError::TooManyReaders { max: 5, .. })
        ));
        // Another partition or group is another quota.
        assert!(r.attach("$Default", 1, None).is_ok());
        assert!(r.attach("other", 0, None).is_ok());
    }

    #[test]
    fn an_owner_level_displaces_lower_equal_and_unleveled_readers() {
        let mut r = Readers::default();
        let (a, _) = r.attach("$Default", 0, None).unwrap();
        let (b, _) = r.attach("$Default", 0, None).unwrap();
        let (c, displaced) = r.attach("$DEFAULT", 0, Some(1)).unwrap();
        assert_eq!(displaced, vec![a, b]);
        assert!(conflict(r.attach("$Default", 0, None)), "unleveled refused");
        assert!(conflict(r.attach("$Default", 0, Some(0))), "lower refused");
        let (d, displaced) = r.attach("$Default", 0, Some(1)).unwrap();
        assert_eq!(displaced, vec![c], "equal level takes over");
        let (_, displaced) = r.attach("$Default", 0, Some(5)).unwrap();
        assert_eq!(displaced, vec![d]);
        assert_eq!(r.len(), 1);
        assert!(!r.detach(a), "a displaced reader is already gone");
    }

    #[test]
    fn detaching_the_owner_frees_the_partition() {
        let mut r = Readers::default();
        let (owner, _) = r.attach("g", 3, Some(7)).unwrap();
        assert!(conflict(r.attach("g", 3, None)));
        assert!(r.detach(owner));
        assert!(!r.detach(owner));
        assert!(r.attach("g", 3, None).is_ok());
        assert_eq!(r.len(), 1);
    }
}
