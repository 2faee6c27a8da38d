//! What the clients were told: every operation is written down before it is sent ("in
//! doubt") and marked acknowledged when its answer arrives. After each restart [`Ledger`]
//! compares the hub with it and settles what was in doubt from what the hub shows, so the next
//! round starts from known state.
//!
//! The rules (issue 18): an acknowledged write is there after a crash; a write in doubt is
//! there or not, never half; an acknowledged C2D message is pending exactly once or has exactly
//! one outcome (complete or reject), and an outcome has exactly one feedback record.

use std::collections::{BTreeMap, BTreeSet};

/// How a device settled a C2D message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Reject,
}

impl Outcome {
    /// The feedback status this outcome produces.
    pub fn feedback_status(self) -> &'static str {
        match self {
            Outcome::Complete => "Success",
            Outcome::Reject => "Rejected",
        }
    }
}

/// A C2D send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub device: String,
    pub acked: bool,
}

/// A settle call on a received message.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    pub outcome: Outcome,
    pub acked: bool,
}

/// One value written by one writer (a registry key, a desired or reported property): the
/// last acknowledged value, and the one in flight when the emulator died.
#[derive(Debug, Clone, Default)]
pub struct Written<T> {
    pub acked: Option<T>,
    pub doubt: Option<T>,
}

impl<T: PartialEq + Clone + std::fmt::Debug> Written<T> {
    /// Checks an observed value and makes it the known one.
    fn check(&mut self, observed: Option<T>, what: &str, errors: &mut Vec<String>) {
        let ok = match &observed {
            Some(v) => self.acked.as_ref() == Some(v) || self.doubt.as_ref() == Some(v),
            // Absent is only right if nothing was ever acknowledged.
            None => self.acked.is_none(),
        };
        if !ok {
            errors.push(format!(
                "{what}: found {observed:?}, expected the acknowledged {:?} (or the in-flight {:?})",
                self.acked, self.doubt
            ));
        }
        self.acked = observed;
        self.doubt = None;
    }
}

/// A twin written by the service (desired `v`) and by its device (reported `r`).
#[derive(Debug, Clone, Default)]
pub struct TwinState {
    /// Highest version an acknowledged write answered with.
    pub min_version: i64,
    pub desired: Written<i64>,
    pub reported: Written<i64>,
}

/// Telemetry from one device: bounds on the hub's counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Telemetry {
    /// The count the hub showed at the last check.
    pub known: u64,
    /// Known count plus acknowledged sends since.
    pub low: u64,
    /// Known count plus every attempted send since.
    pub high: u64,
}

/// How the emulator stopped before a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `kill -9`: counters written late may lag.
    Kill,
    /// SIGTERM: everything is written.
    Clean,
}

/// Telemetry bodies: every one sent, and those acknowledged (PUBACK).
#[derive(Debug, Default)]
pub struct Events {
    pub attempted: BTreeSet<String>,
    pub acked: BTreeSet<String>,
}

impl Events {
    /// Checks what the Event Hubs-compatible endpoint holds: every acknowledged event (at
    /// least once: a device may have sent one again), nothing that was never sent.
    pub fn check(&self, read: &BTreeMap<String, usize>) -> Vec<String> {
        let mut errors: Vec<String> = self
            .acked
            .iter()
            .filter(|b| !read.contains_key(*b))
            .map(|b| format!("telemetry {b:?}: acknowledged, not in the event log"))
            .collect();
        errors.extend(
            read.keys()
                .filter(|b| !self.attempted.contains(*b))
                .map(|b| format!("telemetry {b:?}: in the event log, never sent")),
        );
        errors
    }
}

/// Counts of acknowledged operations over the whole test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acked {
    pub c2d_sends: u64,
    pub settles: u64,
    pub registry: u64,
    pub desired: u64,
    pub reported: u64,
    pub telemetry: u64,
    pub feedback_records: u64,
}

/// Everything the test knows.
#[derive(Debug, Default)]
pub struct Ledger {
    pub sends: BTreeMap<String, Sent>,
    /// Settle calls not yet confirmed by a check.
    pub settles: BTreeMap<String, Settle>,
    /// Messages whose outcome took effect (acknowledged, or seen gone after a restart).
    pub outcomes: BTreeMap<String, Outcome>,
    /// Registry devices written by the test: their primary key; the writer's number.
    pub registry: BTreeMap<String, (usize, Written<String>)>,
    pub twins: BTreeMap<String, TwinState>,
    pub telemetry: BTreeMap<String, Telemetry>,
    pub events: Events,
    /// Distinct feedback records per message: (status, enqueued time in ms).
    pub feedback: BTreeMap<String, BTreeSet<(String, i128)>>,
    pub acked: Acked,
    /// Messages whose send and settle were both in flight at a crash and that were gone
    /// after it: both took effect (one feedback record) or neither did (none).
    pub maybe_outcomes: BTreeMap<String, Outcome>,
    /// How each outcome became known, for failure reports.
    pub notes: BTreeMap<String, String>,
    /// Checks so far.
    pub restarts: usize,
    /// Why each worker stopped, and when (the crash, or something earlier).
    pub stops: Vec<(std::time::Instant, String)>,
}

/// What the hub showed after a restart.
#[derive(Debug, Default)]
pub struct Observed {
    /// Pending C2D message ids per device the test sends to.
    pub pending: BTreeMap<String, Vec<String>>,
    /// Primary key per registry device (None: 404).
    pub registry: BTreeMap<String, Option<String>>,
    /// Twin version, desired `v`, reported `r`.
    pub twins: BTreeMap<String, (i64, Option<i64>, Option<i64>)>,
    pub telemetry: BTreeMap<String, u64>,
}

impl Ledger {
    /// Compares the hub after a restart with what was acknowledged; returns every violation.
    /// Whatever was in doubt becomes what the hub shows.
    pub fn check(&mut self, o: &Observed, stop: Stop) -> Vec<String> {
        let mut errors = Vec::new();
        self.check_c2d(o, &mut errors);
        for (id, (_, w)) in self.registry.iter_mut() {
            let seen = o.registry.get(id).cloned().flatten();
            w.check(seen, &format!("device {id} primary key"), &mut errors);
        }
        self.registry.retain(|_, (_, w)| w.acked.is_some());
        for (id, t) in self.twins.iter_mut() {
            let Some(&(version, desired, reported)) = o.twins.get(id) else {
                errors.push(format!("twin {id}: not found"));
                continue;
            };
            if version < t.min_version {
                errors.push(format!(
                    "twin {id}: version {version} below the acknowledged {}",
                    t.min_version
                ));
            }
            t.min_version = version;
            t.desired
                .check(desired, &format!("twin {id} desired.v"), &mut errors);
            t.reported
                .check(reported, &format!("twin {id} reported.r"), &mut errors);
        }
        for (id, t) in self.telemetry.iter_mut() {
            let seen = o.telemetry.get(id).copied().unwrap_or(0);
            let (floor, what) = match stop {
                Stop::Clean => (t.low, "acknowledged"),
                Stop::Kill => (t.known, "last restart, as the counter is written late"),
            };
            if seen < floor || seen > t.high {
                errors.push(format!(
                    "device {id}: telemetry count {seen}, expected {floor}..={} ({what}..attempted)",
                    t.high
                ));
            }
            *t = Telemetry {
                known: seen,
                low: seen,
                high: seen,
            };
        }
        errors
    }

    fn check_c2d(&mut self, o: &Observed, errors: &mut Vec<String>) {
        self.restarts += 1;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (device, ids) in &o.pending {
            for id in ids {
                *counts.entry(id.as_str()).or_default() += 1;
                match self.sends.get(id) {
                    None => errors.push(format!(
                        "C2D {id} pending on {device}, but no such send is known (or it was gone after an earlier restart)"
                    )),
                    Some(s) if &s.device != device => errors.push(format!(
                        "C2D {id} pending on {device}, sent to {}",
                        s.device
                    )),
                    Some(_) => {}
                }
            }
        }
        let mut gone = Vec::new();
        for (id, s) in self.sends.iter_mut() {
            let n = counts.get(id.as_str()).copied().unwrap_or(0);
            if n > 1 {
                errors.push(format!("C2D {id} pending {n} times"));
            }
            let settle = self.settles.remove(id);
            if let Some(done) = self.outcomes.get(id) {
                if n > 0 {
                    errors.push(format!(
                        "C2D {id}: pending again after its outcome ({done:?}) took effect"
                    ));
                }
                continue;
            }
            match (n, settle) {
                // Gone after an acknowledged settle, or after a settle of an acknowledged
                // send: the outcome took effect.
                (0, Some(st)) if st.acked || s.acked => {
                    self.outcomes.insert(id.clone(), st.outcome);
                    let how = if st.acked {
                        "acknowledged"
                    } else {
                        "in doubt, took effect"
                    };
                    self.notes.insert(
                        id.clone(),
                        format!("{how}; checked after restart {}", self.restarts),
                    );
                    s.acked = true;
                }
                // Send and settle both in doubt: a device may receive a message before its
                // send is on disk, so either both took effect or neither did. The feedback
                // tells at the end (one record or none).
                (0, Some(st)) => {
                    self.maybe_outcomes.insert(id.clone(), st.outcome);
                    gone.push(id.clone());
                }
                (0, None) if s.acked => errors.push(format!(
                    "C2D {id} to {}: LOST (acknowledged, not pending, never settled)",
                    s.device
                )),
                (0, None) => gone.push(id.clone()),
                (_, Some(st)) if st.acked => errors.push(format!(
                    "C2D {id}: pending after an acknowledged {:?}",
                    st.outcome
                )),
                // Pending: the send is durable; a settle in doubt did not happen.
                (_, _) => s.acked = true,
            }
        }
        // In doubt and not there: the send never took effect.
        for id in gone {
            self.sends.remove(&id);
        }
        for id in std::mem::take(&mut self.settles).into_keys() {
            errors.push(format!("C2D {id}: received and settled, but never sent"));
        }
    }

    /// The end: every outcome has exactly one feedback record with its status, and nothing
    /// else has any.
    pub fn check_feedback(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (id, outcome) in &self.outcomes {
            let records = self.feedback.get(id);
            let n = records.map_or(0, BTreeSet::len);
            if n != 1 {
                errors.push(format!(
                    "C2D {id} ({outcome:?}, {}): {n} distinct feedback records {records:?}, expected 1",
                    self.notes.get(id).map_or("", String::as_str)
                ));
            } else if let Some((status, _)) = records.and_then(|r| r.first())
                && status != outcome.feedback_status()
            {
                errors.push(format!("C2D {id} ({outcome:?}): feedback says {status}"));
            }
        }
        for (id, outcome) in &self.maybe_outcomes {
            let records = self.feedback.get(id);
            let n = records.map_or(0, BTreeSet::len);
            let status_ok = records
                .and_then(|r| r.first())
                .is_none_or(|(status, _)| status == outcome.feedback_status());
            if n > 1 || !status_ok {
                errors.push(format!(
                    "C2D {id} ({outcome:?}, send and settle in doubt): feedback records {records:?}, expected none or one"
                ));
            }
        }
        for (id, records) in &self.feedback {
            if !self.outcomes.contains_key(id) && !self.maybe_outcomes.contains_key(id) {
                errors.push(format!(
                    "feedback {records:?} for C2D {id}, which has no outcome (pending or unknown)"
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(l: &mut Ledger, id: &str, acked: bool) {
        l.sends.insert(
            id.into(),
            Sent {
                device: "d".into(),
                acked,
            },
        );
    }

    fn pending(ids: &[&str]) -> Observed {
        let mut o = Observed::default();
        o.pending
            .insert("d".into(), ids.iter().map(|s| (*s).to_owned()).collect());
        o
    }

    #[test]
    fn a_lost_message_is_reported() {
        let mut l = Ledger::default();
        sent(&mut l, "m1", true);
        sent(&mut l, "m2", false);
        let errors = l.check(&pending(&[]), Stop::Kill);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("m1") && errors[0].contains("LOST"));
        // The one in doubt was not there: forgotten, so seeing it later is an error.
        assert!(!l.sends.contains_key("m2"));
        let again = l.check(&pending(&["m2"]), Stop::Kill);
        assert!(
            again
                .iter()
                .any(|e| e.contains("m2") && e.contains("no such send")),
            "{again:?}"
        );
    }

    #[test]
    fn an_acknowledged_settle_must_stick() {
        let mut l = Ledger::default();
        sent(&mut l, "m1", true);
        l.settles.insert(
            "m1".into(),
            Settle {
                outcome: Outcome::Complete,
                acked: true,
            },
        );
        assert_eq!(l.check(&pending(&["m1"]), Stop::Kill).len(), 1);
        // One in doubt may or may not have happened.
        let mut l = Ledger::default();
        sent(&mut l, "m1", true);
        l.settles.insert(
            "m1".into(),
            Settle {
                outcome: Outcome::Reject,
                acked: false,
            },
        );
        assert!(l.check(&pending(&[]), Stop::Kill).is_empty());
        assert_eq!(l.outcomes.get("m1"), Some(&Outcome::Reject));
        // ...and once it happened, the message must not come back.
        assert_eq!(l.check(&pending(&["m1"]), Stop::Kill).len(), 1);
    }

    #[test]
    fn a_settle_of_a_send_in_doubt_may_vanish_with_it() {
        let mut l = Ledger::default();
        sent(&mut l, "m1", false);
        l.settles.insert(
            "m1".into(),
            Settle {
                outcome: Outcome::Complete,
                acked: false,
            },
        );
        assert!(l.check(&pending(&[]), Stop::Kill).is_empty());
        assert!(l.check_feedback().is_empty());
        l.feedback
            .entry("m1".into())
            .or_default()
            .insert(("Success".into(), 1));
        assert!(l.check_feedback().is_empty());
        l.feedback
            .entry("m1".into())
            .or_default()
            .insert(("Rejected".into(), 2));
        assert_eq!(l.check_feedback().len(), 1);
    }

    #[test]
    fn feedback_must_be_one_record_with_the_outcomes_status() {
        let mut l = Ledger::default();
        l.outcomes.insert("m1".into(), Outcome::Complete);
        l.outcomes.insert("m2".into(), Outcome::Reject);
        assert_eq!(l.check_feedback().len(), 2);
        l.feedback
            .entry("m1".into())
            .or_default()
            .insert(("Success".into(), 1));
        l.feedback
            .entry("m2".into())
            .or_default()
            .insert(("Success".into(), 2));
        assert_eq!(l.check_feedback().len(), 1);
        l.feedback
            .entry("m1".into())
            .or_default()
            .insert(("Success".into(), 3));
        assert_eq!(l.check_feedback().len(), 2);
    }

    #[test]
    fn written_values_accept_the_acknowledged_or_the_in_flight_one() {
        let mut w = Written {
            acked: Some(1),
            doubt: Some(2),
        };
        let mut errors = Vec::new();
        w.check(Some(2), "x", &mut errors);
        assert!(errors.is_empty());
        w.doubt = Some(3);
        w.check(None, "x", &mut errors);
        w.check(Some(7), "x", &mut errors);
        assert_eq!(errors.len(), 2);
    }
}
