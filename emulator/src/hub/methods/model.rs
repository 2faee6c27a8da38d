//! Property test of the direct-method rules against a small reference model.
//!
//! Random interleavings of invocations, subscriptions, unsubscriptions (disconnects), answers
//! (right and wrong request ids, wrong connections, late ones, bodies that are not JSON),
//! registry changes and clock advances run against [`Hub`] and against the model below, which
//! knows the rules but not the implementation: who must receive each request, when each
//! deadline falls, and how each invocation must end. After every step the hub's requests,
//! completions and answers to `method_response` must be exactly the model's; at the end, after
//! the longest possible timeout, every invocation has ended exactly once and the hub holds no
//! invocation state and no deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use iothub_protocol::method::{JsonPayload, MethodCall};
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::{ErrorCode, HubError};
use proptest::prelude::*;
use proptest::sample::Index;
use time::OffsetDateTime;
use time::macros::datetime;

use super::{ConnectionId, HTTP_TIMEOUT_MARGIN, InvocationId, MethodOutcome, ResponseDisposition};
use crate::hub::{Hub, HubEvent, HubSettings, Identity};

const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
/// Devices that exist at the start and can be disabled, deleted and created again.
const DEVICES: [&str; 2] = ["d1", "d2"];
/// Who a call or subscription is for: `(device index or none, module)`.
const WHO: [(&str, Option<&str>); 4] = [
    ("d1", None),
    ("d1", Some("m1")),
    ("d2", None),
    ("ghost", None),
];
const CONNECTIONS: u64 = 4;
const LONGEST: Duration = Duration::from_secs(601);

fn identity(who: usize) -> Identity {
    let (d, m) = WHO[who % WHO.len()];
    match m {
        Some(m) => Identity::module(d, m),
        None => Identity::device(d),
    }
}

#[derive(Debug, Clone)]
enum Body {
    /// A JSON document unique to this answer.
    Json,
    /// Empty: `null`.
    Empty,
    /// Not JSON.
    Junk,
}

#[derive(Debug, Clone)]
enum Op {
    Invoke {
        who: usize,
        connect: u32,
        response: u32,
    },
    Subscribe {
        conn: u64,
        who: usize,
    },
    /// An unsubscribe, a detach or a disconnect: the hub is told the same thing.
    Unsubscribe {
        conn: u64,
    },
    /// Answers a request seen earlier, on its own connection or (`conn`) another one.
    Respond {
        pick: Index,
        conn: Option<u64>,
        status: i32,
        body: Body,
    },
    /// Answers with a request id the hub never issued.
    RespondMadeUp {
        conn: u64,
        rid: &'static str,
    },
    /// Time passes; `punctual` calls `handle_timeout` at the new time, else the next
    /// operation must fire what became due.
    Advance {
        ms: u64,
        punctual: bool,
    },
    Disable {
        dev: usize,
    },
    Enable {
        dev: usize,
    },
    Delete {
        dev: usize,
    },
    Create {
        dev: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let timeout = |v: &'static [u32]| proptest::sample::select(v);
    prop_oneof![
        4 => (0..WHO.len(), timeout(&[0, 0, 1, 5, 30, 300]), timeout(&[5, 6, 30, 300]))
            .prop_map(|(who, connect, response)| Op::Invoke { who, connect, response }),
        3 => (0..CONNECTIONS, 0..WHO.len()).prop_map(|(conn, who)| Op::Subscribe { conn, who }),
        2 => (0..CONNECTIONS).prop_map(|conn| Op::Unsubscribe { conn }),
        4 => (
            any::<Index>(),
            proptest::option::weighted(0.2, 0..CONNECTIONS),
            any::<i32>(),
            prop_oneof![6 => Just(Body::Json), 1 => Just(Body::Empty), 1 => Just(Body::Junk)],
        )
            .prop_map(|(pick, conn, status, body)| Op::Respond { pick, conn, status, body }),
        1 => (0..CONNECTIONS, proptest::sample::select(&["0", "99999999", "abc", "", "1x"][..]))
            .prop_map(|(conn, rid)| Op::RespondMadeUp { conn, rid }),
        4 => (prop_oneof![0..2_000u64, 0..400_000u64], any::<bool>())
            .prop_map(|(ms, punctual)| Op::Advance { ms, punctual }),
        1 => (0..DEVICES.len()).prop_map(|dev| Op::Disable { dev }),
        1 => (0..DEVICES.len()).prop_map(|dev| Op::Enable { dev }),
        1 => (0..DEVICES.len()).prop_map(|dev| Op::Delete { dev }),
        1 => (0..DEVICES.len()).prop_map(|dev| Op::Create { dev }),
    ]
}

/// How an invocation must end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Answer(i32, String),
    NotOnline(u32),
    Timeout,
    Closed,
    NotFound,
    BadAnswer,
}

fn end_of(outcome: &MethodOutcome) -> End {
    match outcome {
        Ok(r) => End::Answer(r.status, r.payload.as_str().to_owned()),
        Err(HubError::DeviceNotOnline {
            connect_timeout_secs,
            ..
        }) => End::NotOnline(*connect_timeout_secs),
        Err(e) => match e.code() {
            ErrorCode::GatewayTimeout => End::Timeout,
            ErrorCode::DeviceConnectionClosedRemotely => End::Closed,
            ErrorCode::DeviceNotFound => End::NotFound,
            ErrorCode::ArgumentInvalid => End::BadAnswer,
            _ => panic!("unexpected outcome {e:?}"),
        },
    }
}

#[derive(Debug, Clone)]
struct Pending {
    identity: Identity,
    payload: String,
    received: OffsetDateTime,
    connect: u32,
    response: u32,
    sent: Option<(ConnectionId, OffsetDateTime)>,
}

impl Pending {
    fn deadline(&self) -> OffsetDateTime {
        let secs = |n: u32| Duration::from_secs(n.into());
        match self.sent {
            None => self.received + secs(self.connect),
            Some((_, at)) => (at + secs(self.response))
                .min(self.received + secs(self.connect + self.response) - HTTP_TIMEOUT_MARGIN),
        }
    }
}

/// A request the device received: enough to answer it later.
#[derive(Debug, Clone)]
struct Seen {
    invocation: InvocationId,
    connection: ConnectionId,
    rid: String,
}

#[derive(Default)]
struct Model {
    /// Enabled (true) or disabled devices that exist.
    devices: BTreeMap<&'static str, bool>,
    /// Subscribers per identity, oldest first.
    subscribers: BTreeMap<Identity, Vec<ConnectionId>>,
    pending: BTreeMap<InvocationId, Pending>,
    ended: BTreeSet<InvocationId>,
    seen: Vec<Seen>,
    answers: u64,
}

impl Model {
    fn target(&self, identity: &Identity) -> Option<ConnectionId> {
        self.subscribers
            .get(identity)
            .and_then(|v| v.last())
            .copied()
    }

    fn unsubscribe(&mut self, conn: ConnectionId) {
        for list in self.subscribers.values_mut() {
            list.retain(|c| *c != conn);
        }
        self.subscribers.retain(|_, l| !l.is_empty());
    }

    fn unsubscribe_device(&mut self, device: &str) {
        self.subscribers.retain(|i, _| i.device_id != device);
    }

    /// What the hub must fire before the operation at `now` runs.
    fn due(&mut self, now: OffsetDateTime, ends: &mut BTreeMap<InvocationId, End>) {
        let due: Vec<InvocationId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let p = self.pending.remove(&id).unwrap_or_else(|| unreachable!());
            let end = match p.sent {
                None => End::NotOnline(p.connect),
                Some(_) => End::Timeout,
            };
            ends.insert(id, end);
        }
    }

    /// Sends the waiting invocations of `identity` to its target, oldest first.
    fn flush(
        &mut self,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Vec<(InvocationId, ConnectionId)> {
        let Some(target) = self.target(identity) else {
            return Vec::new();
        };
        let mut sent = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.sent.is_none() && p.identity == *identity {
                p.sent = Some((target, now));
                sent.push((*id, target));
            }
        }
        sent
    }

    fn end_where(
        &mut self,
        ends: &mut BTreeMap<InvocationId, End>,
        end: End,
        pick: impl Fn(&Pending) -> bool,
    ) {
        let ids: Vec<InvocationId> = self
            .pending
            .iter()
            .filter(|(_, p)| pick(p))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.pending.remove(&id);
            ends.insert(id, end.clone());
        }
    }
}

/// Registers the modules [`WHO`] names on `device`, so a module identity exists exactly when
/// its device does (the model tracks devices only).
fn with_modules(hub: &mut Hub, device: &str, now: OffsetDateTime) {
    for (d, m) in WHO {
        if let (true, Some(m)) = (d == device, m) {
            hub.create_module(iothub_protocol::module::Module::new(d, m), now)
                .unwrap_or_else(|e| panic!("module {d}/{m}: {e}"));
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut hub = Hub::new(HubSettings::default(), 9);
    let mut model = Model::default();
    for d in DEVICES {
        hub.create_device(Device::new(d), T0).unwrap();
        with_modules(&mut hub, d, T0);
        model.devices.insert(d, true);
    }
    let mut now = T0;
    let mut payloads = 0u64;

    for op in ops.into_iter().chain([Op::Advance {
        ms: LONGEST.as_millis() as u64,
        punctual: true,
    }]) {
        let mut want_ends = BTreeMap::new();
        let mut want_sent: Vec<(InvocationId, ConnectionId)> = Vec::new();
        let touches_hub = !matches!(
            op,
            Op::Advance {
                punctual: false,
                ..
            }
        );
        if let Op::Advance { ms, .. } = op {
            now += Duration::from_millis(ms);
        }
        if touches_hub {
            model.due(now, &mut want_ends);
        }
        match op.clone() {
            Op::Invoke {
                who,
                connect,
                response,
            } => {
                let identity = identity(who);
                payloads += 1;
                let payload = format!(r#"{{"call":{payloads}}}"#);
                let call = MethodCall {
                    name: format!("m{payloads}"),
                    payload: JsonPayload::from_json(&payload).unwrap(),
                    connect_timeout_secs: connect,
                    response_timeout_secs: response,
                };
                let got = hub.invoke_method(&identity, call, now);
                let exists = model.devices.contains_key(identity.device_id.as_str());
                let target = model.target(&identity);
                match got {
                    Err(e) if !exists => prop_assert_eq!(e.code(), ErrorCode::DeviceNotFound),
                    Err(e) if target.is_none() && connect == 0 => {
                        prop_assert_eq!(e.code(), ErrorCode::DeviceNotOnline)
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    Ok(id) => {
                        prop_assert!(exists && (target.is_some() || connect > 0));
                        prop_assert!(
                            !model.pending.contains_key(&id) && !model.ended.contains(&id)
                        );
                        model.pending.insert(
                            id,
                            Pending {
                                identity: identity.clone(),
                                payload,
                                received: now,
                                connect,
                                response,
                                sent: None,
                            },
                        );
                        want_sent = model.flush(&identity, now);
                    }
                }
            }
            Op::Subscribe { conn, who } => {
                let identity = identity(who);
                let conn = ConnectionId(conn);
                let got = hub.method_subscribe(conn, &identity, now);
                match model.devices.get(identity.device_id.as_str()) {
                    Some(true) => {
                        prop_assert!(got.is_ok());
                        model.unsubscribe(conn);
                        model
                            .subscribers
                            .entry(identity.clone())
                            .or_default()
                            .push(conn);
                        want_sent = model.flush(&identity, now);
                    }
                    Some(false) => prop_assert_eq!(
                        got.map_err(|e| e.code()),
                        Err(ErrorCode::IotHubUnauthorizedAccess)
                    ),
                    None => {
                        prop_assert_eq!(got.map_err(|e| e.code()), Err(ErrorCode::DeviceNotFound))
                    }
                }
            }
            Op::Unsubscribe { conn } => {
                let conn = ConnectionId(conn);
                hub.method_unsubscribe(conn, now);
                model.unsubscribe(conn);
                model.end_where(&mut want_ends, End::Closed, |p| {
                    p.sent.is_some_and(|(c, _)| c == conn)
                });
            }
            Op::Respond { status, .. } if model.seen.is_empty() => {
                // Nothing sent yet, so any id is one the hub never issued.
                let got = hub.method_response(ConnectionId(0), "1", status, b"1", now);
                prop_assert_eq!(got, ResponseDisposition::Unknown);
            }
            Op::Respond {
                pick,
                conn,
                status,
                body,
            } => {
                let seen = model.seen[pick.index(model.seen.len())].clone();
                let conn = conn.map(ConnectionId).unwrap_or(seen.connection);
                model.answers += 1;
                let text = match body {
                    Body::Json => format!(r#"{{"answer":{}}}"#, model.answers),
                    Body::Empty => String::new(),
                    Body::Junk => "{'answer':1}".to_owned(),
                };
                let got = hub.method_response(conn, &seen.rid, status, text.as_bytes(), now);
                let want = if !model.pending.contains_key(&seen.invocation) {
                    ResponseDisposition::Late
                } else if conn != seen.connection {
                    ResponseDisposition::WrongConnection
                } else {
                    model.pending.remove(&seen.invocation);
                    let end = match body {
                        Body::Json => End::Answer(status, text.clone()),
                        Body::Empty => End::Answer(status, "null".into()),
                        Body::Junk => End::BadAnswer,
                    };
                    want_ends.insert(seen.invocation, end);
                    ResponseDisposition::Answered(seen.invocation)
                };
                prop_assert_eq!(got, want);
            }
            Op::RespondMadeUp { conn, rid } => {
                let got = hub.method_response(ConnectionId(conn), rid, 200, b"1", now);
                prop_assert_eq!(got, ResponseDisposition::Unknown);
            }
            Op::Advance { punctual, .. } => {
                if punctual {
                    hub.handle_timeout(now);
                }
            }
            Op::Disable { dev } | Op::Enable { dev } => {
                let enable = matches!(op, Op::Enable { .. });
                let name = DEVICES[dev];
                if let Ok(mut d) = hub.get_device(name) {
                    d.status = if enable {
                        DeviceStatus::Enabled
                    } else {
                        DeviceStatus::Disabled
                    };
                    hub.update_device(d, "*", now).unwrap();
                    let was_enabled = model.devices.insert(name, enable).unwrap_or(false);
                    if was_enabled && !enable {
                        model.unsubscribe_device(name);
                        model.end_where(&mut want_ends, End::Closed, |p| {
                            p.identity.device_id == name && p.sent.is_some()
                        });
                    }
                } else {
                    let got = hub.update_device(Device::new(name), "*", now);
                    prop_assert_eq!(got.map_err(|e| e.code()), Err(ErrorCode::DeviceNotFound));
                }
            }
            Op::Delete { dev } => {
                let name = DEVICES[dev];
                let got = hub.delete_device(name, None, now);
                prop_assert_eq!(got.is_ok(), model.devices.remove(name).is_some());
                model.unsubscribe_device(name);
                model.end_where(&mut want_ends, End::NotFound, |p| {
                    p.identity.device_id == name
                });
            }
            Op::Create { dev } => {
                let name = DEVICES[dev];
                let got = hub.create_device(Device::new(name), now);
                prop_assert_eq!(got.is_ok(), !model.devices.contains_key(name));
                if got.is_ok() {
                    with_modules(&mut hub, name, now);
                }
                model.devices.entry(name).or_insert(true);
            }
        }

        // What the hub did must be exactly what the model expects.
        let mut sent = Vec::new();
        let mut ends = BTreeMap::new();
        while let Some(e) = hub.poll_event() {
            match e {
                HubEvent::MethodRequest(r) => {
                    let p = model.pending.get(&r.invocation);
                    prop_assert!(p.is_some(), "request for an ended invocation {:?}", r);
                    let p = p.unwrap_or_else(|| unreachable!());
                    prop_assert_eq!(&r.identity, &p.identity);
                    prop_assert_eq!(r.payload.as_str(), p.payload.as_str());
                    model.seen.push(Seen {
                        invocation: r.invocation,
                        connection: r.connection,
                        rid: r.rid.to_string(),
                    });
                    sent.push((r.invocation, r.connection));
                }
                HubEvent::MethodCompleted {
                    invocation,
                    outcome,
                } => {
                    prop_assert!(
                        model.ended.insert(invocation),
                        "invocation {} ended twice",
                        invocation
                    );
                    prop_assert!(ends.insert(invocation, end_of(&outcome)).is_none());
                }
                HubEvent::DeviceGone { .. } => {}
                other => prop_assert!(false, "unexpected event {:?}", other),
            }
        }
        prop_assert_eq!(&sent, &want_sent, "requests after {:?}", op);
        prop_assert_eq!(&ends, &want_ends, "completions after {:?}", op);
        if touches_hub {
            // Nothing that is due is still pending: every deadline took effect in time, and
            // the 504 always precedes the client's own timeout.
            for (id, p) in &model.pending {
                prop_assert!(p.deadline() > now, "{} overdue", id);
                let client = p.received + Duration::from_secs((p.connect + p.response).into());
                prop_assert!(p.deadline() <= client - HTTP_TIMEOUT_MARGIN || p.sent.is_none());
            }
            // One live deadline per pending invocation, at the model's time: none leaked,
            // none missing, none off by the margin.
            let earliest = model.pending.values().map(Pending::deadline).min();
            prop_assert_eq!(hub.poll_timeout(), earliest);
            prop_assert_eq!(hub.pending_timers(), model.pending.len());
            prop_assert_eq!(hub.pending_methods(), model.pending.len());
            hub.methods.assert_consistent();
            for (who, _) in WHO.iter().enumerate() {
                let i = identity(who);
                prop_assert_eq!(hub.method_target(&i), model.target(&i));
            }
        }
    }

    // After the longest timeout everything has ended, and nothing is left behind.
    prop_assert!(model.pending.is_empty());
    prop_assert_eq!(hub.pending_methods(), 0);
    prop_assert_eq!(hub.pending_timers(), 0);
    hub.methods.assert_consistent();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_invocation_ends_exactly_once_and_answers_reach_only_their_invocation(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops)?;
    }
}
