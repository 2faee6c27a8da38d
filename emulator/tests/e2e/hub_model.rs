//! Model test of the hub's C2D lifecycle and feedback rules (iothub-protocol.md 1 and 2).
//!
//! Random sequences of operations run against [`Hub`] and against a small reference model
//! written here, and the two are compared after every step (style.md 4, "Model test"). The
//! model knows the rules, not the implementation: which message a receive must lock, which
//! lock tokens are still good, what each message's outcome is and when it happened, and which
//! feedback records the ack modes ask for. It does not predict how the hub groups records into
//! batches; it checks every batch against the records it expects and that nothing is late.
//!
//! Time is virtual. `Advance` moves the clock and either tells the hub nothing (the next
//! operation fires what is due), calls `handle_timeout` once at the new time, or calls it at
//! every deadline on the way, like a punctual shell. The hub's answers must not depend on which:
//! a deadline's effects carry the deadline's own time (a feedback record's `enqueuedTimeUtc`,
//! the start of its batch window), however late the shell noticed it.
//!
//! Every case is then replayed on a second hub with the same seed and must give the same
//! replies and events. The plain tests at the end pin sequences the property test found or
//! that matter on their own (both delivery-count rules, simultaneous deadlines, deadline
//! stamps).
//!
//! It sits in the end-to-end binary only so the emulator is linked once; it opens no socket.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use iothub_emulator::hub::{
    DeliveryCountRule, Enqueued, FeedbackDelivery, Hub, HubEvent, HubSettings, MessageState,
    Outcome, devicebound_address,
};
use iothub_protocol::registry::Device;
use iothub_protocol::{AckMode, FeedbackStatus, HubError, Message, MessageId};
use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

/// Device ids: the first three exist at the start and can be deleted and created again;
/// `ghost` never exists.
const DEVICES: [&str; 4] = ["d0", "d1", "d2", "ghost"];
/// Devices that exist when a case starts.
const INITIAL_DEVICES: [usize; 3] = [0, 1, 2];
const T0: OffsetDateTime = datetime!(2024-03-01 12:00 UTC);
const HUB_NAME: &str = "model-hub";

/// Check that a deadline takes effect at its own instant, however late the shell calls
/// `handle_timeout`: a feedback record's `enqueuedTimeUtc` is the expiry (or lock end) time, and
/// the feedback window of such a record opens then. The hub does this (`Hub::handle_timeout`
/// stamps effects with the deadline; see also `expired_feedback_is_stamped_with_the_expiry_time`
/// and `feedback_window_runs_from_the_outcome_not_from_when_it_was_noticed`). With `false` the
/// model only checks the weaker bound: between the deadline and the call that fired it.
const CHECK_DEADLINE_TIMES: bool = true;

const BOGUS_TOKEN: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------------------------
// Operations

/// One step of a case, as generated. Lock tokens are picked from the model's state when the
/// step runs, so a shrunk sequence still makes sense.
#[derive(Debug, Clone)]
enum Op {
    /// The service sends a message; `expiry_ms` is an absolute expiry relative to now.
    Enqueue {
        dev: usize,
        ack: AckMode,
        expiry_ms: Option<i64>,
    },
    /// The device receives (locks) its next message.
    Receive { dev: usize },
    /// The device settles a delivery; `wrong_device` presents the token for the next device.
    Settle {
        how: Settle,
        pick: Pick,
        wrong_device: bool,
    },
    /// `DELETE /devices/{id}/commands`.
    Purge { dev: usize },
    /// Registry delete.
    Delete { dev: usize },
    /// Registry create.
    Create { dev: usize },
    /// Time passes.
    Advance { ms: u64, clock: Clock },
    /// Control API: release the feedback waiting for its window.
    Flush,
    /// The service receives (locks) a feedback batch.
    ReceiveFeedback,
    /// The service completes or abandons a feedback batch.
    SettleFeedback { complete: bool, pick: Pick },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Complete,
    Reject,
    Abandon,
    /// The connection dropped with the message in flight.
    Release,
}

/// Which lock token an operation presents.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// One the model holds right now (index modulo their number); may expire at this step.
    Live(usize),
    /// Any token ever issued (index modulo their number): usually stale.
    Stale(usize),
    /// One the hub never issued.
    Bogus,
}

/// How the shell drives time during an `Advance`.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// No call: the next operation fires what is due.
    Silent,
    /// `handle_timeout(now)` once, at the new time.
    Tick,
    /// `handle_timeout(deadline)` at every deadline up to the new time, as a punctual shell does.
    Punctual,
}

// ---------------------------------------------------------------------------------------------
// The system under test, with a log of every call for the determinism replay

#[derive(Debug, Clone)]
enum Call {
    Create(String),
    Delete(String),
    Enqueue(String, Box<Message>),
    Receive(String),
    Complete(String, String),
    Reject(String, String),
    Abandon(String, String),
    Release(String, String),
    Purge(String),
    Timeout,
    Flush,
    ReceiveFeedback,
    CompleteFeedback(String),
    AbandonFeedback(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Device(Result<Device, HubError>),
    Unit(Result<(), HubError>),
    Enqueued(Result<Enqueued, HubError>),
    Received(Result<Option<Message>, HubError>),
    Purged(Result<usize, HubError>),
    Feedback(Option<FeedbackDelivery>),
    Nothing,
}

fn apply(hub: &mut Hub, call: &Call, now: OffsetDateTime) -> Reply {
    match call {
        Call::Create(d) => Reply::Device(hub.create_device(Device::new(d.as_str()), now)),
        Call::Delete(d) => Reply::Unit(hub.delete_device(d, None, now)),
        Call::Enqueue(d, m) => Reply::Enqueued(hub.enqueue_c2d(d, (**m).clone(), now)),
        Call::Receive(d) => Reply::Received(hub.receive_c2d(d, now)),
        Call::Complete(d, t) => Reply::Unit(hub.complete_c2d(d, t, now)),
        Call::Reject(d, t) => Reply::Unit(hub.reject_c2d(d, t, now)),
        Call::Abandon(d, t) => Reply::Unit(hub.abandon_c2d(d, t, now)),
        Call::Release(d, t) => Reply::Unit(hub.release_c2d_lock(d, t, now)),
        Call::Purge(d) => Reply::Purged(hub.purge_c2d(d, now)),
        Call::Timeout => {
            hub.handle_timeout(now);
            Reply::Nothing
        }
        Call::Flush => {
            hub.flush_feedback(now);
            Reply::Nothing
        }
        Call::ReceiveFeedback => Reply::Feedback(hub.receive_feedback(now)),
        Call::CompleteFeedback(t) => Reply::Unit(hub.complete_feedback(t, now)),
        Call::AbandonFeedback(t) => Reply::Unit(hub.abandon_feedback(t, now)),
    }
}

fn drain(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

/// A hub plus everything that was done to it and what it answered.
struct Sut {
    hub: Hub,
    /// The latest time the hub was given; times never go backwards.
    hub_now: OffsetDateTime,
    log: Vec<(OffsetDateTime, Call)>,
    trace: Vec<String>,
}

impl Sut {
    fn new(settings: HubSettings, seed: u64) -> Self {
        Sut {
            hub: Hub::new(settings, seed),
            hub_now: T0,
            log: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn call(&mut self, now: OffsetDateTime, call: Call) -> (Reply, Vec<HubEvent>) {
        assert!(now >= self.hub_now, "the test harness moved time backwards");
        self.hub_now = now;
        let reply = apply(&mut self.hub, &call, now);
        let events = drain(&mut self.hub);
        self.trace
            .push(format!("{now} {call:?} -> {reply:?} / {events:?}"));
        self.log.push((now, call));
        (reply, events)
    }
}

/// Runs the logged calls on a fresh hub with the same seed; its trace must be identical.
fn replay(settings: &HubSettings, seed: u64, log: &[(OffsetDateTime, Call)]) -> Vec<String> {
    let mut sut = Sut::new(settings.clone(), seed);
    for (now, call) in log {
        sut.call(*now, call.clone());
    }
    sut.trace
}

// ---------------------------------------------------------------------------------------------
// The reference model

/// The rules, written out independently of the hub: iothub-protocol.md 2.1 and 2.2.
fn feedback_status(outcome: Outcome) -> Option<FeedbackStatus> {
    match outcome {
        Outcome::Completed => Some(FeedbackStatus::Success),
        Outcome::Rejected => Some(FeedbackStatus::Rejected),
        Outcome::Expired => Some(FeedbackStatus::Expired),
        Outcome::DeliveryCountExceeded => Some(FeedbackStatus::DeliveryCountExceeded),
        Outcome::Purged => Some(FeedbackStatus::Purged),
        Outcome::DeviceDeleted => None,
    }
}

fn ack_wants(ack: AckMode, status: FeedbackStatus) -> bool {
    match ack {
        AckMode::None => false,
        AckMode::Positive => status == FeedbackStatus::Success,
        AckMode::Negative => status != FeedbackStatus::Success,
        AckMode::Full => true,
    }
}

#[derive(Debug, Clone)]
struct MMsg {
    id: String,
    ack: AckMode,
    seq: u64,
    enqueued: OffsetDateTime,
    expires_at: OffsetDateTime,
    delivery_count: u32,
    /// Lock token and the instant the lock ends.
    lock: Option<(String, OffsetDateTime)>,
}

#[derive(Debug, Default)]
struct MDevice {
    exists: bool,
    generation: String,
    /// Every generation id this device id ever had.
    generations: BTreeSet<String>,
    queue: BTreeMap<u64, MMsg>,
    /// Highest sequence number of this incarnation.
    last_seq: u64,
}

/// A feedback record the model expects the service to get.
#[derive(Debug, Clone)]
struct MRecord {
    id: String,
    device: String,
    generation: String,
    status: FeedbackStatus,
    /// When the outcome happened.
    at: OffsetDateTime,
    /// The time of the hub call that fired it (later than `at` if the shell was late).
    noticed: OffsetDateTime,
    /// Known to be in a released batch (it was delivered before, or flushed).
    released: bool,
}

struct Model {
    s: HubSettings,
    now: OffsetDateTime,
    devices: Vec<MDevice>,
    next_msg: u64,
    /// Every accepted message: its ack mode.
    accepted: BTreeMap<String, AckMode>,
    /// Every outcome so far.
    outcomes: BTreeMap<String, Outcome>,
    /// Every C2D lock token issued: (device, token).
    tokens: Vec<(usize, String)>,
    /// Every feedback lock token issued.
    fb_tokens: Vec<String>,
    /// Feedback the service has not received (pending in a window or in a released batch).
    unreceived: BTreeMap<String, MRecord>,
    /// Batches the service holds: token → (lock end, records).
    held: BTreeMap<String, (OffsetDateTime, Vec<MRecord>)>,
    /// Records the service completed: message id → status.
    delivered: BTreeMap<String, FeedbackStatus>,
    /// Records dropped because their device was deleted before the service received them.
    dropped: BTreeSet<String>,
    // What the current step did:
    step_settled: Vec<(String, u64, Outcome)>,
    step_available: BTreeSet<usize>,
}

impl Model {
    fn new(s: HubSettings) -> Self {
        Model {
            s,
            now: T0,
            devices: (0..DEVICES.len()).map(|_| MDevice::default()).collect(),
            next_msg: 0,
            accepted: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            tokens: Vec::new(),
            fb_tokens: Vec::new(),
            unreceived: BTreeMap::new(),
            held: BTreeMap::new(),
            delivered: BTreeMap::new(),
            dropped: BTreeSet::new(),
            step_settled: Vec::new(),
            step_available: BTreeSet::new(),
        }
    }

    fn lock_duration(&self) -> time::Duration {
        time::Duration::try_from(self.s.lock_duration).expect("small duration")
    }

    /// Fires every deadline at or before `now`, each at its own instant. A message's expiry and
    /// the end of its lock at the same instant: the expiry wins (it was set first).
    fn fire(&mut self, now: OffsetDateTime) {
        assert!(now >= self.now);
        self.now = now;
        let counts = self.s.delivery_count_rule == DeliveryCountRule::EveryRelease;
        for d in 0..self.devices.len() {
            let seqs: Vec<u64> = self.devices[d].queue.keys().copied().collect();
            for seq in seqs {
                let m = &self.devices[d].queue[&seq];
                if let Some((_, until)) = m.lock
                    && until <= now
                    && until < m.expires_at
                {
                    self.release(d, seq, counts, until);
                }
                if let Some(m) = self.devices[d].queue.get(&seq)
                    && m.expires_at <= now
                {
                    let at = m.expires_at.max(m.enqueued);
                    self.settle(d, seq, Outcome::Expired, at);
                }
            }
        }
        let ended: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for t in ended {
            let (_, records) = self.held.remove(&t).expect("held");
            self.unhold(records);
        }
    }

    fn unhold(&mut self, records: Vec<MRecord>) {
        for mut r in records {
            r.released = true;
            let id = r.id.clone();
            assert!(self.unreceived.insert(id, r).is_none());
        }
    }

    /// Ends a lock without settlement at `at`; `counts` says whether it is a delivery.
    fn release(&mut self, d: usize, seq: u64, counts: bool, at: OffsetDateTime) {
        let max = self.s.max_delivery_count;
        let m = self.devices[d].queue.get_mut(&seq).expect("queued");
        m.lock = None;
        if counts {
            m.delivery_count += 1;
            if m.delivery_count >= max {
                self.settle(d, seq, Outcome::DeliveryCountExceeded, at);
                return;
            }
        }
        self.step_available.insert(d);
    }

    /// Takes a message out with its outcome, at `at`, and adds the feedback its ack asks for.
    fn settle(&mut self, d: usize, seq: u64, outcome: Outcome, at: OffsetDateTime) {
        let m = self.devices[d].queue.remove(&seq).expect("queued");
        let previous = self.outcomes.insert(m.id.clone(), outcome);
        assert!(previous.is_none(), "model settled {} twice", m.id);
        self.step_settled
            .push((DEVICES[d].to_owned(), seq, outcome));
        if let Some(status) = feedback_status(outcome)
            && ack_wants(m.ack, status)
        {
            let record = MRecord {
                id: m.id.clone(),
                device: DEVICES[d].to_owned(),
                generation: self.devices[d].generation.clone(),
                status,
                at,
                noticed: self.now,
                released: self.s.feedback_window.is_zero(),
            };
            assert!(self.unreceived.insert(m.id, record).is_none());
        }
    }

    fn live_tokens(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (d, dev) in self.devices.iter().enumerate() {
            for m in dev.queue.values() {
                if let Some((t, _)) = &m.lock {
                    out.push((d, t.clone()));
                }
            }
        }
        out
    }

    /// The message locked with `token` in device `d`'s queue, if the lock is still good.
    fn locked(&self, d: usize, token: &str) -> Option<u64> {
        self.devices[d]
            .queue
            .values()
            .find(|m| m.lock.as_ref().is_some_and(|(t, _)| t == token))
            .map(|m| m.seq)
    }

    fn not_found(d: usize) -> HubError {
        HubError::DeviceNotFound {
            device_id: DEVICES[d].to_owned(),
        }
    }

    fn lock_lost(token: &str) -> HubError {
        HubError::DeviceMessageLockLost {
            lock_token: token.to_owned(),
        }
    }

    /// Every record the ack modes asked for, minus those dropped with their device.
    fn expected_feedback(&self) -> BTreeMap<String, FeedbackStatus> {
        self.outcomes
            .iter()
            .filter_map(|(id, &outcome)| {
                let status = feedback_status(outcome)?;
                (ack_wants(self.accepted[id], status) && !self.dropped.contains(id))
                    .then(|| (id.clone(), status))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case

/// Hub and model side by side.
struct Case {
    sut: Sut,
    model: Model,
    /// Operations run so far.
    steps: usize,
    /// Where the case is, for assertion messages.
    ctx: String,
    /// The hub had a feedback batch available after the previous step.
    fb_was_available: bool,
}

impl Case {
    fn new(settings: HubSettings, seed: u64) -> Self {
        let mut case = Case {
            sut: Sut::new(settings.clone(), seed),
            model: Model::new(settings),
            steps: 0,
            ctx: "setup".to_owned(),
            fb_was_available: false,
        };
        for d in INITIAL_DEVICES {
            case.step(&Op::Create { dev: d });
        }
        case
    }

    fn now(&self) -> OffsetDateTime {
        self.model.now
    }

    fn call(&mut self, call: Call, events: &mut Vec<HubEvent>) -> Reply {
        let now = self.model.now;
        let (reply, ev) = self.sut.call(now, call);
        events.extend(ev);
        reply
    }

    /// Runs one operation on both sides and checks everything the model knows.
    fn step(&mut self, op: &Op) {
        self.ctx = format!("step {} ({op:?}) at {}", self.steps, self.now());
        self.steps += 1;
        self.model.step_settled.clear();
        self.model.step_available.clear();
        let mut events = Vec::new();
        let mut gone = None;
        match *op {
            Op::Enqueue {
                dev,
                ack,
                expiry_ms,
            } => self.enqueue(dev, ack, expiry_ms, &mut events),
            Op::Receive { dev } => self.receive(dev, &mut events),
            Op::Settle {
                how,
                pick,
                wrong_device,
            } => self.settle(how, pick, wrong_device, &mut events),
            Op::Purge { dev } => self.purge(dev, &mut events),
            Op::Delete { dev } => {
                gone = self.delete(dev, &mut events);
            }
            Op::Create { dev } => self.create(dev, &mut events),
            Op::Advance { ms, clock } => self.advance(ms, clock, &mut events),
            Op::Flush => {
                let now = self.now();
                self.model.fire(now);
                self.call(Call::Flush, &mut events);
                for r in self.model.unreceived.values_mut() {
                    r.released = true;
                }
            }
            Op::ReceiveFeedback => {
                let now = self.now();
                self.model.fire(now);
                self.receive_feedback(&mut events);
            }
            Op::SettleFeedback { complete, pick } => {
                self.settle_feedback(complete, pick, &mut events)
            }
        }
        self.check_events(&events, gone);
        self.check_state();
    }

    fn enqueue(
        &mut self,
        dev: usize,
        ack: AckMode,
        expiry_ms: Option<i64>,
        events: &mut Vec<HubEvent>,
    ) {
        let now = self.now();
        self.model.fire(now);
        let id = format!("m{}", self.model.next_msg);
        self.model.next_msg += 1;
        let mut msg = Message::new(format!("body of {id}"));
        msg.system.message_id = Some(MessageId::from(id.as_str()));
        msg.system.ack = ack;
        msg.system.absolute_expiry = expiry_ms.map(|ms| now + time::Duration::milliseconds(ms));
        let expires_at = msg
            .system
            .absolute_expiry
            .unwrap_or(now + self.model.s.default_ttl);
        let reply = self.call(
            Call::Enqueue(DEVICES[dev].to_owned(), Box::new(msg)),
            events,
        );
        let Reply::Enqueued(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        if !m.devices[dev].exists {
            assert_eq!(
                got,
                Err(Model::not_found(dev)),
                "{ctx}: enqueue to a missing device"
            );
            return;
        }
        let depth = m.s.queue_depth;
        if m.devices[dev].queue.len() >= depth {
            assert_eq!(
                got,
                Err(HubError::DeviceMaximumQueueDepthExceeded {
                    device_id: DEVICES[dev].to_owned(),
                    depth
                }),
                "{ctx}: enqueue to a full queue"
            );
            return;
        }
        let got = got.unwrap_or_else(|e| panic!("{ctx}: enqueue refused: {e:?}"));
        assert_eq!(
            got.expires_at, expires_at,
            "{ctx}: expiry of the accepted message"
        );
        let device = &mut m.devices[dev];
        assert!(
            got.sequence_number > device.last_seq,
            "{ctx}: sequence number {} after {}",
            got.sequence_number,
            device.last_seq
        );
        device.last_seq = got.sequence_number;
        device.queue.insert(
            got.sequence_number,
            MMsg {
                id: id.clone(),
                ack,
                seq: got.sequence_number,
                enqueued: now,
                expires_at,
                delivery_count: 0,
                lock: None,
            },
        );
        m.accepted.insert(id, ack);
        if expires_at <= now {
            m.settle(dev, got.sequence_number, Outcome::Expired, now);
        } else {
            m.step_available.insert(dev);
        }
    }

    fn receive(&mut self, dev: usize, events: &mut Vec<HubEvent>) {
        let now = self.now();
        self.model.fire(now);
        let reply = self.call(Call::Receive(DEVICES[dev].to_owned()), events);
        let Reply::Received(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        if !m.devices[dev].exists {
            assert_eq!(
                got,
                Err(Model::not_found(dev)),
                "{ctx}: receive on a missing device"
            );
            return;
        }
        let got = got.unwrap_or_else(|e| panic!("{ctx}: receive failed: {e:?}"));
        // The oldest message that is not locked.
        let expected = m.devices[dev]
            .queue
            .values()
            .find(|x| x.lock.is_none())
            .cloned();
        let (got, expected) = match (got, expected) {
            (None, None) => return,
            (Some(g), Some(e)) => (g, e),
            (g, e) => panic!("{ctx}: receive gave {g:?}, the model expected {e:?}"),
        };
        let seq = got.system.sequence_number;
        assert_eq!(
            seq,
            Some(expected.seq),
            "{ctx}: receive must take the oldest available message"
        );
        assert_eq!(
            got.system.message_id,
            Some(MessageId::from(expected.id.as_str())),
            "{ctx}: received message id"
        );
        assert!(
            !m.outcomes.contains_key(&expected.id),
            "{ctx}: {} delivered after its outcome",
            expected.id
        );
        assert_eq!(
            got.system.delivery_count,
            Some(expected.delivery_count),
            "{ctx}: delivery count of {}",
            expected.id
        );
        assert_eq!(got.system.ack, expected.ack, "{ctx}: ack mode survives");
        assert_eq!(
            got.system.to.as_deref(),
            Some(devicebound_address(DEVICES[dev]).as_str())
        );
        assert_eq!(
            got.system.absolute_expiry,
            Some(expected.expires_at),
            "{ctx}: $.exp"
        );
        assert_eq!(
            got.system.enqueued_time,
            Some(expected.enqueued),
            "{ctx}: enqueued time"
        );
        let token = got
            .system
            .lock_token
            .unwrap_or_else(|| panic!("{ctx}: a received message has no lock token"));
        assert!(
            m.tokens.iter().all(|(_, t)| *t != token) && token != BOGUS_TOKEN,
            "{ctx}: lock token {token} was issued before"
        );
        m.tokens.push((dev, token.clone()));
        let until = now + m.lock_duration();
        m.devices[dev]
            .queue
            .get_mut(&expected.seq)
            .expect("queued")
            .lock = Some((token, until));
    }

    fn settle(&mut self, how: Settle, pick: Pick, wrong_device: bool, events: &mut Vec<HubEvent>) {
        // Pick before firing: a live token may run out at this very step.
        let live = self.model.live_tokens();
        let (dev, token) = match pick {
            Pick::Live(i) if !live.is_empty() => live[i % live.len()].clone(),
            Pick::Stale(i) if !self.model.tokens.is_empty() => {
                self.model.tokens[i % self.model.tokens.len()].clone()
            }
            _ => (0, BOGUS_TOKEN.to_owned()),
        };
        let dev = if wrong_device {
            (dev + 1) % DEVICES.len()
        } else {
            dev
        };
        let now = self.now();
        self.model.fire(now);
        let (d, t) = (DEVICES[dev].to_owned(), token.clone());
        let call = match how {
            Settle::Complete => Call::Complete(d, t),
            Settle::Reject => Call::Reject(d, t),
            Settle::Abandon => Call::Abandon(d, t),
            Settle::Release => Call::Release(d, t),
        };
        let reply = self.call(call, events);
        let Reply::Unit(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        if !m.devices[dev].exists {
            assert_eq!(
                got,
                Err(Model::not_found(dev)),
                "{ctx}: settle on a missing device"
            );
            return;
        }
        let Some(seq) = m.locked(dev, &token) else {
            assert_eq!(
                got,
                Err(Model::lock_lost(&token)),
                "{ctx}: settle with a bad or stale token"
            );
            return;
        };
        assert_eq!(got, Ok(()), "{ctx}: settle with a good token");
        let every = m.s.delivery_count_rule == DeliveryCountRule::EveryRelease;
        match how {
            Settle::Complete => m.settle(dev, seq, Outcome::Completed, now),
            Settle::Reject => m.settle(dev, seq, Outcome::Rejected, now),
            Settle::Abandon => m.release(dev, seq, true, now),
            Settle::Release => m.release(dev, seq, every, now),
        }
    }

    fn purge(&mut self, dev: usize, events: &mut Vec<HubEvent>) {
        let now = self.now();
        self.model.fire(now);
        let reply = self.call(Call::Purge(DEVICES[dev].to_owned()), events);
        let Reply::Purged(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        if !m.devices[dev].exists {
            assert_eq!(
                got,
                Err(Model::not_found(dev)),
                "{ctx}: purge of a missing device"
            );
            return;
        }
        let seqs: Vec<u64> = m.devices[dev].queue.keys().copied().collect();
        assert_eq!(got, Ok(seqs.len()), "{ctx}: purge count");
        for seq in seqs {
            m.settle(dev, seq, Outcome::Purged, now);
        }
    }

    /// Returns the device id if it was deleted.
    fn delete(&mut self, dev: usize, events: &mut Vec<HubEvent>) -> Option<String> {
        let now = self.now();
        self.model.fire(now);
        let reply = self.call(Call::Delete(DEVICES[dev].to_owned()), events);
        let Reply::Unit(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        if !m.devices[dev].exists {
            assert_eq!(
                got,
                Err(Model::not_found(dev)),
                "{ctx}: delete of a missing device"
            );
            return None;
        }
        assert_eq!(got, Ok(()), "{ctx}: delete");
        let queue = std::mem::take(&mut m.devices[dev].queue);
        for (seq, msg) in queue {
            assert!(
                m.outcomes
                    .insert(msg.id.clone(), Outcome::DeviceDeleted)
                    .is_none()
            );
            m.step_settled
                .push((DEVICES[dev].to_owned(), seq, Outcome::DeviceDeleted));
        }
        // Feedback the service has not received yet goes with the device (iothub-protocol.md
        // 1.2, 1.8); a batch the service holds right now is already out of the hub.
        let lost: Vec<String> = m
            .unreceived
            .values()
            .filter(|r| r.device == DEVICES[dev])
            .map(|r| r.id.clone())
            .collect();
        for id in lost {
            m.unreceived.remove(&id);
            m.dropped.insert(id);
        }
        m.devices[dev].exists = false;
        Some(DEVICES[dev].to_owned())
    }

    fn create(&mut self, dev: usize, events: &mut Vec<HubEvent>) {
        let now = self.now();
        self.model.fire(now);
        let reply = self.call(Call::Create(DEVICES[dev].to_owned()), events);
        let Reply::Device(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let device = &mut self.model.devices[dev];
        if device.exists {
            assert_eq!(
                got,
                Err(HubError::DeviceAlreadyExists {
                    device_id: DEVICES[dev].to_owned()
                }),
                "{ctx}: create of an existing device"
            );
            return;
        }
        let got = got.unwrap_or_else(|e| panic!("{ctx}: create failed: {e:?}"));
        assert_eq!(got.device_id, DEVICES[dev]);
        assert_eq!(
            got.cloud_to_device_message_count, 0,
            "{ctx}: a new device has an empty queue"
        );
        let generation = got
            .generation_id
            .unwrap_or_else(|| panic!("{ctx}: a created device has no generation id"));
        assert!(
            device.generations.insert(generation.clone()),
            "{ctx}: a re-created device must get a new generation id"
        );
        device.generation = generation;
        device.exists = true;
        device.last_seq = 0;
    }

    fn advance(&mut self, ms: u64, clock: Clock, events: &mut Vec<HubEvent>) {
        let start = self.now();
        let target = start + Duration::from_millis(ms);
        match clock {
            Clock::Silent => {
                // The hub hears nothing; the model fires nothing either until the next call.
                self.model.now = target;
            }
            Clock::Tick => {
                self.model.fire(target);
                self.call(Call::Timeout, events);
            }
            Clock::Punctual => {
                while let Some(at) = self.sut.hub.poll_timeout()
                    && at <= target
                {
                    // A deadline already in the past (after a silent advance) fires late.
                    let at = at.max(start);
                    self.model.fire(at);
                    self.call(Call::Timeout, events);
                    let next = self.sut.hub.poll_timeout();
                    assert!(
                        next.is_none_or(|n| n > at),
                        "{}: handle_timeout({at}) left a deadline at {next:?}",
                        self.ctx
                    );
                }
                self.model.fire(target);
            }
        }
    }

    fn receive_feedback(&mut self, events: &mut Vec<HubEvent>) -> Option<String> {
        let now = self.now();
        let reply = self.call(Call::ReceiveFeedback, events);
        let Reply::Feedback(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        let window = m.s.feedback_window;
        let Some(delivery) = got else {
            // Nothing to receive: every record the service has not received must still be
            // waiting for its window, which opened no later than the record, and fewer than a
            // batch must be waiting (iothub-protocol.md 2.4).
            for r in m.unreceived.values() {
                assert!(
                    !r.released,
                    "{ctx}: receive_feedback gave nothing, but the record for {} ({:?}) was released",
                    r.id, r.status
                );
                assert!(
                    r.noticed + window > now,
                    "{ctx}: receive_feedback gave nothing, but the record for {} ({:?}, fired at {}) \
                     is past the feedback window of {window:?}",
                    r.id,
                    r.status,
                    r.noticed
                );
                // CHECK_DEADLINE_TIMES: the window of a record made by a deadline (expiry, lock
                // end) opens at the deadline, not when the hub handled it.
                if CHECK_DEADLINE_TIMES {
                    assert!(
                        r.at + window > now,
                        "{ctx}: receive_feedback gave nothing, but the record for {} ({:?}, outcome at {}) \
                         is past the feedback window of {window:?}",
                        r.id,
                        r.status,
                        r.at
                    );
                }
            }
            assert!(
                m.unreceived.len() < m.s.feedback_batch_size,
                "{ctx}: receive_feedback gave nothing with {} records waiting (batch size {})",
                m.unreceived.len(),
                m.s.feedback_batch_size
            );
            return None;
        };
        let batch = &delivery.batch;
        assert!(!batch.records.is_empty(), "{ctx}: an empty feedback batch");
        assert!(
            batch.records.len() <= m.s.feedback_batch_size,
            "{ctx}: a feedback batch of {} records, batch size {}",
            batch.records.len(),
            m.s.feedback_batch_size
        );
        assert_eq!(
            batch.user_id, HUB_NAME,
            "{ctx}: feedback user-id is the hub name"
        );
        let token = delivery.lock_token.clone();
        assert!(
            !m.fb_tokens.contains(&token) && !m.tokens.iter().any(|(_, t)| *t == token),
            "{ctx}: feedback lock token {token} was issued before"
        );
        m.fb_tokens.push(token.clone());
        let mut held = Vec::new();
        for (i, rec) in batch.records.iter().enumerate() {
            assert_eq!(
                rec.description,
                rec.status_code.as_str(),
                "{ctx}: description equals statusCode"
            );
            if i > 0 {
                assert!(
                    batch.records[i - 1].enqueued_time_utc <= rec.enqueued_time_utc,
                    "{ctx}: records in a batch are oldest outcome first"
                );
            }
            let id = &rec.original_message_id;
            let Some(want) = m.unreceived.remove(id) else {
                let why = if m.delivered.contains_key(id) {
                    "it was delivered and completed already"
                } else if m.dropped.contains(id) {
                    "its device was deleted before the service received it"
                } else if held.iter().any(|r: &MRecord| r.id == *id)
                    || m.held
                        .values()
                        .any(|(_, rs)| rs.iter().any(|r| r.id == *id))
                {
                    "it is in a batch the service holds"
                } else {
                    "its message's ack mode and outcome do not ask for it"
                };
                panic!("{ctx}: unexpected feedback record {rec:?}: {why}");
            };
            assert_eq!(
                (
                    rec.status_code,
                    rec.device_id.as_str(),
                    rec.device_generation_id.as_str()
                ),
                (want.status, want.device.as_str(), want.generation.as_str()),
                "{ctx}: feedback record for {id}"
            );
            // iothub-protocol.md 2.3: "when the outcome happened (completion time, or expiry
            // time)", not when the hub got round to noticing.
            assert!(
                want.at <= rec.enqueued_time_utc && rec.enqueued_time_utc <= want.noticed,
                "{ctx}: enqueuedTimeUtc {} of the {:?} record for {id}: the outcome happened at {} \
                 and was fired at {}",
                rec.enqueued_time_utc,
                want.status,
                want.at,
                want.noticed
            );
            // CHECK_DEADLINE_TIMES: the record carries the deadline, not the time the hub
            // handled it.
            if CHECK_DEADLINE_TIMES {
                assert_eq!(
                    rec.enqueued_time_utc, want.at,
                    "{ctx}: enqueuedTimeUtc of the {:?} record for {id}",
                    want.status
                );
            }
            held.push(want);
        }
        let until =
            now + time::Duration::try_from(m.s.feedback_lock_duration).expect("small duration");
        m.held.insert(token.clone(), (until, held));
        Some(token)
    }

    fn settle_feedback(&mut self, complete: bool, pick: Pick, events: &mut Vec<HubEvent>) {
        let held: Vec<String> = self.model.held.keys().cloned().collect();
        let token = match pick {
            Pick::Live(i) if !held.is_empty() => held[i % held.len()].clone(),
            Pick::Stale(i) if !self.model.fb_tokens.is_empty() => {
                self.model.fb_tokens[i % self.model.fb_tokens.len()].clone()
            }
            _ => BOGUS_TOKEN.to_owned(),
        };
        let now = self.now();
        self.model.fire(now);
        let call = if complete {
            Call::CompleteFeedback(token.clone())
        } else {
            Call::AbandonFeedback(token.clone())
        };
        let reply = self.call(call, events);
        let Reply::Unit(got) = reply else {
            unreachable!()
        };
        let ctx = &self.ctx;
        let m = &mut self.model;
        let Some((_, records)) = m.held.remove(&token) else {
            assert_eq!(
                got,
                Err(Model::lock_lost(&token)),
                "{ctx}: settle feedback with a bad token"
            );
            return;
        };
        assert_eq!(got, Ok(()), "{ctx}: settle feedback with a good token");
        if complete {
            for r in records {
                assert!(m.delivered.insert(r.id.clone(), r.status).is_none());
            }
        } else {
            m.unhold(records);
        }
    }

    /// The events of one step against what the model did in it.
    fn check_events(&mut self, events: &[HubEvent], gone: Option<String>) {
        let ctx = &self.ctx;
        let mut settled: Vec<(String, u64, Outcome)> = events
            .iter()
            .filter_map(|e| match e {
                HubEvent::C2dSettled {
                    device_id,
                    sequence_number,
                    outcome,
                } => Some((device_id.clone(), *sequence_number, *outcome)),
                _ => None,
            })
            .collect();
        let mut expected = self.model.step_settled.clone();
        settled.sort_by_key(|(d, s, o)| (d.clone(), *s, format!("{o:?}")));
        expected.sort_by_key(|(d, s, o)| (d.clone(), *s, format!("{o:?}")));
        assert_eq!(
            settled, expected,
            "{ctx}: C2dSettled events (device, sequence, outcome)"
        );
        for &d in &self.model.step_available {
            assert!(
                events.contains(&HubEvent::C2dAvailable {
                    device_id: DEVICES[d].to_owned()
                }),
                "{ctx}: a message became available for {} without C2dAvailable",
                DEVICES[d]
            );
        }
        if let Some(device_id) = gone {
            assert!(
                events.contains(&HubEvent::DeviceGone { device_id }),
                "{ctx}: delete without DeviceGone"
            );
        }
        let available = self.sut.hub.has_feedback_available();
        if available && !self.fb_was_available {
            assert!(
                events.contains(&HubEvent::FeedbackAvailable),
                "{ctx}: a feedback batch became available without FeedbackAvailable"
            );
        }
        self.fb_was_available = available;
    }

    /// Every queue against the model.
    fn check_state(&self) {
        let ctx = &self.ctx;
        let s = &self.model.s;
        for (d, dev) in self.model.devices.iter().enumerate() {
            let peek = self.sut.hub.peek_c2d(DEVICES[d]);
            if !dev.exists {
                assert_eq!(
                    peek,
                    Err(Model::not_found(d)),
                    "{ctx}: peek of a missing device"
                );
                continue;
            }
            let peek = peek.unwrap_or_else(|e| panic!("{ctx}: peek failed: {e:?}"));
            assert!(
                peek.len() <= s.queue_depth,
                "{ctx}: {} holds {} messages",
                DEVICES[d],
                peek.len()
            );
            let got: Vec<_> = peek
                .iter()
                .map(|q| {
                    assert!(
                        q.delivery_count < s.max_delivery_count,
                        "{ctx}: a pending message has delivery count {} (max {})",
                        q.delivery_count,
                        s.max_delivery_count
                    );
                    let lock = match &q.state {
                        MessageState::Enqueued => None,
                        MessageState::Locked { token, until, .. } => Some((token.clone(), *until)),
                    };
                    let id = q
                        .message
                        .system
                        .message_id
                        .as_ref()
                        .map(MessageId::canonical);
                    (
                        q.sequence_number(),
                        id,
                        q.delivery_count,
                        q.expires_at,
                        lock,
                    )
                })
                .collect();
            let want: Vec<_> = dev
                .queue
                .values()
                .map(|m| {
                    (
                        m.seq,
                        Some(m.id.clone()),
                        m.delivery_count,
                        m.expires_at,
                        m.lock.clone(),
                    )
                })
                .collect();
            assert_eq!(
                got, want,
                "{ctx}: queue of {} (seq, id, delivery count, expiry, lock)",
                DEVICES[d]
            );
            let model_available = dev.queue.values().any(|m| m.lock.is_none());
            assert_eq!(
                self.sut.hub.has_c2d_available(DEVICES[d]),
                model_available,
                "{ctx}: has_c2d_available"
            );
            let count = self
                .sut
                .hub
                .get_device(DEVICES[d])
                .expect("exists")
                .cloud_to_device_message_count;
            assert_eq!(
                count,
                dev.queue.len() as u64,
                "{ctx}: cloudToDeviceMessageCount"
            );
        }
    }

    /// Lets everything run out, drains all feedback and checks the totals.
    fn finish(&mut self, clock: Clock) {
        let m = &self.model;
        let mut end = m.now;
        for dev in &m.devices {
            for msg in dev.queue.values() {
                end = end.max(msg.expires_at);
            }
        }
        for (until, _) in m.held.values() {
            end = end.max(*until);
        }
        let ms = (end - m.now).whole_milliseconds() as u64 + 1000;
        self.step(&Op::Advance { ms, clock });
        self.step(&Op::Flush);
        let ctx = format!("end of case at {}", self.now());
        for (d, dev) in self.model.devices.iter().enumerate() {
            assert!(
                dev.queue.is_empty(),
                "{ctx}: {} still has messages",
                DEVICES[d]
            );
        }
        for id in self.model.accepted.keys() {
            assert!(
                self.model.outcomes.contains_key(id),
                "{ctx}: {id} has no outcome"
            );
        }
        assert!(
            self.model.held.is_empty(),
            "{ctx}: held feedback locks outlived the case"
        );
        // Receive and complete every batch.
        for _ in 0..10_000 {
            self.ctx = format!("{ctx}: draining feedback");
            self.model.step_settled.clear();
            self.model.step_available.clear();
            let mut events = Vec::new();
            let now = self.now();
            self.model.fire(now);
            let Some(token) = self.receive_feedback(&mut events) else {
                break;
            };
            self.check_events(&events, None);
            self.step(&Op::SettleFeedback {
                complete: true,
                pick: Pick::Live(
                    self.model
                        .held
                        .keys()
                        .position(|t| *t == token)
                        .expect("just received"),
                ),
            });
        }
        assert!(
            self.model.unreceived.is_empty(),
            "{ctx}: feedback never delivered: {:?}",
            self.model.unreceived
        );
        let expected = self.model.expected_feedback();
        assert_eq!(
            self.model.delivered, expected,
            "{ctx}: feedback delivered (message id → status) against what the ack modes ask for"
        );
        assert!(
            !self.sut.hub.has_feedback_available(),
            "{ctx}: feedback left over"
        );
    }
}

/// Runs `ops` against a hub and the model, then replays the hub's calls on a second hub with
/// the same seed.
fn run_case(settings: HubSettings, seed: u64, ops: &[Op], end: Clock) {
    let mut case = Case::new(settings.clone(), seed);
    for op in ops {
        case.step(op);
    }
    case.finish(end);
    let again = replay(&settings, seed, &case.sut.log);
    assert_eq!(again.len(), case.sut.trace.len());
    for (i, (a, b)) in case.sut.trace.iter().zip(&again).enumerate() {
        assert_eq!(a, b, "call {i}: same calls, same seed, different result");
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

fn settings() -> impl Strategy<Value = HubSettings> {
    (
        1usize..=5,
        1u32..=4,
        1u64..=5,
        prop_oneof![1 => 5u64..=20, 2 => 60u64..=75],
        prop_oneof![Just(0u64), 1u64..=5],
        1usize..=4,
        prop_oneof![
            Just(DeliveryCountRule::AbandonOnly),
            Just(DeliveryCountRule::EveryRelease)
        ],
        2u64..=10,
    )
        .prop_map(
            |(depth, max, lock, ttl, window, batch, rule, fb_lock)| HubSettings {
                hub_name: HUB_NAME.to_owned(),
                queue_depth: depth,
                max_delivery_count: max,
                lock_duration: Duration::from_secs(lock),
                default_ttl: Duration::from_secs(ttl),
                feedback_window: Duration::from_secs(window),
                feedback_batch_size: batch,
                delivery_count_rule: rule,
                feedback_lock_duration: Duration::from_secs(fb_lock),
                // Long enough that no batch expires or is dropped within a case: the model does
                // not follow the feedback queue's own TTL and delivery count.
                feedback_ttl: Duration::from_secs(2 * 86_400),
                feedback_max_delivery_count: 1_000,
                ..HubSettings::default()
            },
        )
}

fn device() -> impl Strategy<Value = usize> {
    prop_oneof![5 => Just(0usize), 3 => Just(1usize), 2 => Just(2usize), 1 => Just(3usize)]
}

fn ack() -> impl Strategy<Value = AckMode> {
    prop_oneof![
        Just(AckMode::None),
        Just(AckMode::Positive),
        Just(AckMode::Negative),
        Just(AckMode::Full)
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => (0usize..8).prop_map(Pick::Live),
        1 => (0usize..64).prop_map(Pick::Stale),
        1 => Just(Pick::Bogus),
    ]
}

fn clock() -> impl Strategy<Value = Clock> {
    prop_oneof![
        Just(Clock::Silent),
        Just(Clock::Tick),
        Just(Clock::Punctual)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let expiry = prop_oneof![
        3 => Just(None),
        1 => (-3i64..=30).prop_map(|s| Some(s * 1000)),
        1 => (-3000i64..=30_000).prop_map(Some),
    ];
    // Whole seconds make deadlines meet; odd milliseconds fall in between.
    let ms = prop_oneof![
        3 => (0u64..=5).prop_map(|s| s * 1000),
        3 => 0u64..=3000,
        1 => (6u64..=30).prop_map(|s| s * 1000),
        1 => 0u64..=90_000,
    ];
    let how = prop_oneof![
        Just(Settle::Complete),
        Just(Settle::Reject),
        Just(Settle::Abandon),
        Just(Settle::Release)
    ];
    prop_oneof![
        8 => (device(), ack(), expiry).prop_map(|(dev, ack, expiry_ms)| Op::Enqueue { dev, ack, expiry_ms }),
        8 => device().prop_map(|dev| Op::Receive { dev }),
        8 => (how, pick(), prop::bool::weighted(0.1))
            .prop_map(|(how, pick, wrong_device)| Op::Settle { how, pick, wrong_device }),
        1 => device().prop_map(|dev| Op::Purge { dev }),
        1 => device().prop_map(|dev| Op::Delete { dev }),
        1 => (0usize..3).prop_map(|dev| Op::Create { dev }),
        4 => (ms, clock()).prop_map(|(ms, clock)| Op::Advance { ms, clock }),
        1 => Just(Op::Flush),
        3 => Just(Op::ReceiveFeedback),
        3 => (any::<bool>(), pick()).prop_map(|(complete, pick)| Op::SettleFeedback { complete, pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // This test owns no regressions file; interesting sequences become plain tests below.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hub_agrees_with_the_model(
        settings in settings(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
        end in clock(),
    ) {
        run_case(settings, seed, &ops, end);
    }
}

// ---------------------------------------------------------------------------------------------
// Regression cases

fn small_settings() -> HubSettings {
    HubSettings {
        hub_name: HUB_NAME.to_owned(),
        queue_depth: 3,
        max_delivery_count: 2,
        lock_duration: Duration::from_secs(5),
        default_ttl: Duration::from_secs(65),
        feedback_window: Duration::from_secs(3),
        feedback_batch_size: 2,
        feedback_lock_duration: Duration::from_secs(5),
        feedback_ttl: Duration::from_secs(2 * 86_400),
        feedback_max_delivery_count: 1_000,
        ..HubSettings::default()
    }
}

fn enqueue(dev: usize, ack: AckMode) -> Op {
    Op::Enqueue {
        dev,
        ack,
        expiry_ms: None,
    }
}

fn expiring(dev: usize, ack: AckMode, secs: i64) -> Op {
    Op::Enqueue {
        dev,
        ack,
        expiry_ms: Some(secs * 1000),
    }
}

fn settle(how: Settle) -> Op {
    Op::Settle {
        how,
        pick: Pick::Live(0),
        wrong_device: false,
    }
}

fn advance(secs: u64, clock: Clock) -> Op {
    Op::Advance {
        ms: secs * 1000,
        clock,
    }
}

/// A hub with device `d0`, for the tests that talk to the hub directly.
fn hub_with_d0(settings: HubSettings) -> Hub {
    let mut hub = Hub::new(settings, 7);
    hub.create_device(Device::new("d0"), T0).expect("create d0");
    hub
}

fn message(id: &str, ack: AckMode, expiry: Option<OffsetDateTime>) -> Message {
    let mut m = Message::new("x");
    m.system.message_id = Some(MessageId::from(id));
    m.system.ack = ack;
    m.system.absolute_expiry = expiry;
    m
}

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

#[test]
fn complete_reject_and_abandon_under_both_rules() {
    for rule in [
        DeliveryCountRule::AbandonOnly,
        DeliveryCountRule::EveryRelease,
    ] {
        let settings = HubSettings {
            delivery_count_rule: rule,
            ..small_settings()
        };
        run_case(
            settings,
            1,
            &[
                enqueue(0, AckMode::Full),
                enqueue(0, AckMode::Negative),
                enqueue(0, AckMode::Positive),
                Op::Receive { dev: 0 },
                Op::Receive { dev: 0 },
                settle(Settle::Complete),
                settle(Settle::Reject),
                Op::Receive { dev: 0 },
                settle(Settle::Abandon),
                Op::Receive { dev: 0 },
                // The second abandon reaches max_delivery_count = 2.
                settle(Settle::Abandon),
                Op::ReceiveFeedback,
                Op::SettleFeedback {
                    complete: false,
                    pick: Pick::Live(0),
                },
                Op::Flush,
                Op::ReceiveFeedback,
                Op::ReceiveFeedback,
            ],
            Clock::Punctual,
        );
    }
}

/// Lock ends and dropped connections count as deliveries only under `EveryRelease`
/// (iothub-protocol.md 1.3).
#[test]
fn lock_expiry_and_release_count_only_under_every_release() {
    for (rule, outcome) in [
        (DeliveryCountRule::AbandonOnly, None),
        (
            DeliveryCountRule::EveryRelease,
            Some(Outcome::DeliveryCountExceeded),
        ),
    ] {
        let mut hub = hub_with_d0(HubSettings {
            delivery_count_rule: rule,
            ..small_settings()
        });
        hub.enqueue_c2d("d0", message("m0", AckMode::Negative, None), T0)
            .expect("enqueue");
        let first = hub
            .receive_c2d("d0", T0)
            .expect("receive")
            .expect("a message");
        // The lock ends at exactly T0 + 5 s: the old token is stale from then on.
        let t1 = T0 + secs(5);
        let stale = first.system.lock_token.expect("token");
        assert_eq!(
            hub.complete_c2d("d0", &stale, t1),
            Err(HubError::DeviceMessageLockLost {
                lock_token: stale.clone()
            })
        );
        let second = hub
            .receive_c2d("d0", t1)
            .expect("receive")
            .expect("a message");
        let expected_count = u32::from(rule == DeliveryCountRule::EveryRelease);
        assert_eq!(
            second.system.delivery_count,
            Some(expected_count),
            "{rule:?}"
        );
        let token = second.system.lock_token.expect("token");
        hub.release_c2d_lock("d0", &token, t1).expect("release");
        let settled = drain(&mut hub).into_iter().find_map(|e| match e {
            HubEvent::C2dSettled { outcome, .. } => Some(outcome),
            _ => None,
        });
        assert_eq!(
            settled, outcome,
            "{rule:?}: lock expiry, then a dropped connection"
        );
    }
}

/// A message's expiry and the end of its lock at the same instant: it expired.
#[test]
fn expiry_and_lock_end_at_the_same_instant() {
    let settings = HubSettings {
        max_delivery_count: 1,
        delivery_count_rule: DeliveryCountRule::EveryRelease,
        ..small_settings()
    };
    for clock in [Clock::Silent, Clock::Tick, Clock::Punctual] {
        run_case(
            settings.clone(),
            3,
            &[
                expiring(0, AckMode::Full, 5),
                Op::Receive { dev: 0 },
                advance(5, clock),
                Op::Receive { dev: 0 },
            ],
            clock,
        );
    }
}

#[test]
fn bad_tokens_and_missing_devices() {
    let mut hub = hub_with_d0(small_settings());
    hub.enqueue_c2d("d0", message("m0", AckMode::None, None), T0)
        .expect("enqueue");
    let m = hub
        .receive_c2d("d0", T0)
        .expect("receive")
        .expect("a message");
    let token = m.system.lock_token.expect("token");
    let lost = |t: &str| {
        Err(HubError::DeviceMessageLockLost {
            lock_token: t.to_owned(),
        })
    };
    assert_eq!(hub.complete_c2d("d0", BOGUS_TOKEN, T0), lost(BOGUS_TOKEN));
    hub.create_device(Device::new("d1"), T0).expect("create d1");
    assert_eq!(
        hub.complete_c2d("d1", &token, T0),
        lost(&token),
        "another device's token"
    );
    assert_eq!(
        hub.complete_c2d("ghost", &token, T0),
        Err(HubError::DeviceNotFound {
            device_id: "ghost".into()
        })
    );
    assert_eq!(
        hub.receive_c2d("ghost", T0),
        Err(HubError::DeviceNotFound {
            device_id: "ghost".into()
        })
    );
    assert_eq!(
        hub.complete_feedback(&token, T0),
        lost(&token),
        "a C2D token on the feedback queue"
    );
    hub.complete_c2d("d0", &token, T0).expect("complete");
    assert_eq!(
        hub.complete_c2d("d0", &token, T0),
        lost(&token),
        "settled twice"
    );
}

#[test]
fn queue_depth_counts_locked_messages_and_frees_on_settle() {
    run_case(
        HubSettings {
            queue_depth: 2,
            ..small_settings()
        },
        5,
        &[
            enqueue(0, AckMode::None),
            enqueue(0, AckMode::None),
            Op::Receive { dev: 0 },
            enqueue(0, AckMode::Full),
            settle(Settle::Complete),
            enqueue(0, AckMode::Full),
            enqueue(3, AckMode::Full),
        ],
        Clock::Punctual,
    );
}

/// Feedback about a deleted device that the service has not received is dropped with it
/// (iothub-protocol.md 1.2, 1.8); a batch the service holds at that moment is not.
#[test]
fn deleting_a_device_drops_the_feedback_the_service_has_not_received() {
    let settings = HubSettings {
        feedback_window: Duration::ZERO,
        feedback_batch_size: 1,
        ..small_settings()
    };
    let mut hub = hub_with_d0(settings);
    for id in ["held", "queued"] {
        hub.enqueue_c2d("d0", message(id, AckMode::Positive, None), T0)
            .expect("enqueue");
        let m = hub
            .receive_c2d("d0", T0)
            .expect("receive")
            .expect("a message");
        hub.complete_c2d("d0", &m.system.lock_token.expect("token"), T0)
            .expect("complete");
    }
    let held = hub.receive_feedback(T0).expect("first batch");
    assert_eq!(held.batch.records[0].original_message_id, "held");
    hub.delete_device("d0", None, T0).expect("delete");
    hub.abandon_feedback(&held.lock_token, T0).expect("abandon");
    let again = hub.receive_feedback(T0).expect("the held batch comes back");
    assert_eq!(again.batch.records, held.batch.records);
    hub.complete_feedback(&again.lock_token, T0)
        .expect("complete");
    assert_eq!(
        hub.receive_feedback(T0),
        None,
        "the record the service never received was dropped with the device"
    );
}

#[test]
fn delete_and_recreate_starts_afresh() {
    run_case(
        small_settings(),
        11,
        &[
            enqueue(0, AckMode::Full),
            enqueue(0, AckMode::Negative),
            Op::Receive { dev: 0 },
            settle(Settle::Complete),
            Op::Receive { dev: 0 },
            Op::Delete { dev: 0 },
            Op::Create { dev: 0 },
            enqueue(0, AckMode::Full),
            // The token of the first incarnation must not settle the new message 1.
            Op::Settle {
                how: Settle::Complete,
                pick: Pick::Stale(1),
                wrong_device: false,
            },
            Op::Receive { dev: 0 },
            settle(Settle::Reject),
            Op::Purge { dev: 0 },
            enqueue(0, AckMode::Negative),
            Op::Purge { dev: 0 },
            Op::Delete { dev: 0 },
            Op::Delete { dev: 0 },
        ],
        Clock::Punctual,
    );
}

#[test]
fn feedback_locks_expire_and_stale_feedback_tokens_are_refused() {
    run_case(
        HubSettings {
            feedback_window: Duration::ZERO,
            ..small_settings()
        },
        13,
        &[
            enqueue(0, AckMode::Negative),
            Op::Purge { dev: 0 },
            Op::ReceiveFeedback,
            advance(5, Clock::Silent),
            Op::SettleFeedback {
                complete: true,
                pick: Pick::Stale(0),
            },
            Op::ReceiveFeedback,
            Op::SettleFeedback {
                complete: true,
                pick: Pick::Bogus,
            },
            Op::SettleFeedback {
                complete: true,
                pick: Pick::Live(0),
            },
            Op::SettleFeedback {
                complete: true,
                pick: Pick::Stale(1),
            },
        ],
        Clock::Tick,
    );
}

// A deadline's effects are stamped with the deadline, not with the time `handle_timeout` ran
// (once a hub bug). iothub-protocol.md 2.3 says `enqueuedTimeUtc` is "when the outcome happened
// (completion time, or expiry time)", and hub/mod.rs promises that the outcome "never depends
// on how punctually the shell called handle_timeout".
#[test]
fn expired_feedback_is_stamped_with_the_expiry_time() {
    let settings = HubSettings {
        feedback_window: Duration::ZERO,
        ..small_settings()
    };
    let expiry = T0 + secs(1);
    let mut stamps = Vec::new();
    for punctual in [true, false] {
        let mut hub = hub_with_d0(settings.clone());
        hub.enqueue_c2d("d0", message("m0", AckMode::Negative, Some(expiry)), T0)
            .expect("enqueue");
        if punctual {
            hub.handle_timeout(expiry);
        }
        let d = hub.receive_feedback(T0 + secs(10)).expect("feedback");
        stamps.push(d.batch.records[0].enqueued_time_utc);
    }
    assert_eq!(
        stamps,
        [expiry, expiry],
        "enqueuedTimeUtc of the Expired record, with a punctual shell and with a late one"
    );
}

// Same rule (once a hub bug): the feedback window of a record made by a deadline opens at the
// deadline, not when the hub handles it, so a late shell, or an operation that fires the
// deadline, does not delay the batch.
#[test]
fn feedback_window_runs_from_the_outcome_not_from_when_it_was_noticed() {
    let settings = HubSettings {
        feedback_window: Duration::from_secs(5),
        feedback_batch_size: 4,
        ..small_settings()
    };
    let expiry = T0 + secs(1);
    let mut got = Vec::new();
    for punctual in [true, false] {
        let mut hub = hub_with_d0(settings.clone());
        hub.enqueue_c2d("d0", message("m0", AckMode::Negative, Some(expiry)), T0)
            .expect("enqueue");
        if punctual {
            hub.handle_timeout(expiry);
        }
        // The window closed at T0 + 6 s.
        got.push(hub.receive_feedback(T0 + secs(10)).is_some());
    }
    assert_eq!(
        got,
        [true, true],
        "a batch 4 s after its window closed, with a punctual shell and with a late one"
    );
}
