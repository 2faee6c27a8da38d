//! Module registry rules: unit tests per rule and a model test of random operation sequences.

use std::collections::{BTreeMap, BTreeSet};

use iothub_protocol::module::Module;
use iothub_protocol::registry::{ConnectionState, Device};
use iothub_protocol::twin::TwinWrite;
use iothub_protocol::{ErrorCode, HubError, Message};
use proptest::prelude::*;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use super::super::event_log::{AuthMethod, Origin};
use super::super::methods::ConnectionId;
use super::super::{Hub, HubEvent, HubSettings, Identity};

const T0: OffsetDateTime = datetime!(2026-02-01 8:00 UTC);
const T1: OffsetDateTime = datetime!(2026-02-01 8:01 UTC);
const T0_1: OffsetDateTime = datetime!(2026-02-01 8:00:01 UTC);

fn hub() -> Hub {
    let mut hub = Hub::new(HubSettings::default(), 11);
    hub.create_device(Device::new("d1"), T0).unwrap();
    while hub.poll_event().is_some() {}
    hub
}

fn code<T: std::fmt::Debug>(r: Result<T, HubError>) -> ErrorCode {
    r.unwrap_err().code()
}

#[test]
fn create_generates_keys_and_ids_and_get_returns_the_same() {
    let mut hub = hub();
    let m = hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    assert!(m.primary_key().is_some() && m.secondary_key().is_some());
    assert_ne!(m.primary_key(), m.secondary_key());
    assert!(m.etag.is_some() && m.generation_id.is_some());
    assert_eq!(m.connection_state, ConnectionState::Disconnected);
    assert_eq!(m.authentication.kind, "sas");
    assert_eq!(hub.get_module("d1", "m1").unwrap(), m);
    let device = hub.get_device("d1").unwrap();
    assert_ne!(
        m.primary_key(),
        device.primary_key(),
        "a module has its own keys"
    );
}

#[test]
fn create_keeps_given_keys_and_managed_by() {
    let mut hub = hub();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let mut m = Module::new("d1", "m1");
    m.authentication.symmetric_key.primary_key = Some(key.into());
    m.managed_by = Some("someone".into());
    let m = hub.create_module(m, T0).unwrap();
    assert_eq!(m.primary_key(), Some(key));
    assert_eq!(m.managed_by.as_deref(), Some("someone"));
    let mut bad = Module::new("d1", "m2");
    bad.authentication.symmetric_key.primary_key = Some("not base64!".into());
    assert_eq!(code(hub.create_module(bad, T0)), ErrorCode::ArgumentInvalid);
}

#[test]
fn the_hubs_errors() {
    let mut hub = hub();
    assert_eq!(
        code(hub.create_module(Module::new("ghost", "m1"), T0)),
        ErrorCode::DeviceNotFound
    );
    hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    assert_eq!(
        code(hub.create_module(Module::new("d1", "m1"), T0)),
        ErrorCode::ModuleAlreadyExistsOnDevice
    );
    assert_eq!(
        code(hub.create_module(Module::new("d1", "a/b"), T0)),
        ErrorCode::ArgumentInvalid
    );
    assert_eq!(
        code(hub.create_module(Module::new("d1", ""), T0)),
        ErrorCode::ArgumentInvalid
    );
    assert_eq!(code(hub.get_module("d1", "m9")), ErrorCode::ModuleNotFound);
    assert_eq!(
        code(hub.get_module("ghost", "m1")),
        ErrorCode::DeviceNotFound
    );
    assert_eq!(code(hub.list_modules("ghost")), ErrorCode::DeviceNotFound);
    assert_eq!(
        code(hub.delete_module("d1", "m9", None, T0)),
        ErrorCode::ModuleNotFound
    );
    assert_eq!(
        code(hub.update_module(Module::new("d1", "m9"), "*", T0)),
        ErrorCode::ModuleNotFound
    );
}

#[test]
fn update_checks_the_etag_and_keeps_keys_left_empty() {
    let mut hub = hub();
    let m = hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    let etag = m.etag.clone().unwrap();
    let mut change = Module::new("d1", "m1");
    change.managed_by = Some("edge".into());
    assert_eq!(
        code(hub.update_module(change.clone(), "\"stale\"", T1)),
        ErrorCode::PreconditionFailed
    );
    let u = hub
        .put_module(change.clone(), Some(&format!("\"{etag}\"")), T1)
        .unwrap();
    assert_eq!(u.managed_by.as_deref(), Some("edge"));
    assert_eq!(u.primary_key(), m.primary_key());
    assert_eq!(u.generation_id, m.generation_id);
    assert_ne!(u.etag, m.etag);
    assert_eq!(
        code(hub.update_module(change.clone(), &etag, T1)),
        ErrorCode::PreconditionFailed,
        "the old etag is stale now"
    );
    assert!(hub.update_module(change, "*", T1).is_ok());
}

#[test]
fn delete_checks_if_match_and_a_recreated_module_is_a_new_generation() {
    let mut hub = hub();
    let m = hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    assert_eq!(
        code(hub.delete_module("d1", "m1", Some("\"nope\""), T1)),
        ErrorCode::PreconditionFailed
    );
    hub.delete_module("d1", "m1", m.etag.as_deref(), T1)
        .unwrap();
    assert_eq!(
        hub.poll_event(),
        Some(HubEvent::ModuleGone {
            identity: Identity::module("d1", "m1")
        })
    );
    assert_eq!(code(hub.get_module("d1", "m1")), ErrorCode::ModuleNotFound);
    let again = hub.create_module(Module::new("d1", "m1"), T1).unwrap();
    assert_ne!(again.generation_id, m.generation_id);
    assert!(hub.get_device("d1").is_ok(), "the device stays");
}

#[test]
fn deleting_the_device_deletes_its_modules() {
    let mut hub = hub();
    hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    hub.delete_device("d1", None, T1).unwrap();
    hub.create_device(Device::new("d1"), T1).unwrap();
    assert_eq!(hub.list_modules("d1").unwrap(), []);
    assert_eq!(code(hub.get_module("d1", "m1")), ErrorCode::ModuleNotFound);
}

#[test]
fn module_twins_are_separate_from_the_device_twin() {
    let mut hub = hub();
    hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    let m1 = Identity::module("d1", "m1");
    let twin = hub.get_twin(&m1).unwrap();
    assert_eq!(twin.module_id.as_deref(), Some("m1"));
    assert_eq!(twin.device_id, "d1");
    let write = TwinWrite::from_json(&json!({"properties": {"desired": {"x": 1}}})).unwrap();
    hub.update_twin(&m1, &write, Some("*"), T1).unwrap();
    let ev = std::iter::from_fn(|| hub.poll_event())
        .find(|e| matches!(e, HubEvent::TwinDesiredChanged { .. }));
    assert!(
        matches!(ev, Some(HubEvent::TwinDesiredChanged { identity, .. }) if identity == m1),
        "the notification is for the module"
    );
    let props = hub.get_twin_properties(&m1).unwrap();
    assert_eq!(props.desired_version(), Some(2));
    let device = hub.get_twin_properties(&Identity::device("d1")).unwrap();
    assert_eq!(
        device.desired_version(),
        Some(1),
        "the device twin is untouched"
    );
    let patch = json!({"r": true}).as_object().cloned().unwrap();
    assert_eq!(hub.update_reported_properties(&m1, &patch, T1), Ok(2));
    assert_eq!(
        code(hub.get_twin(&Identity::module("d1", "m9"))),
        ErrorCode::ModuleNotFound
    );
}

#[test]
fn query_lists_module_twins_and_pages_across_devices() {
    let mut hub = hub();
    hub.create_device(Device::new("d2"), T0).unwrap();
    for (d, m) in [("d1", "a"), ("d1", "b"), ("d2", "a"), ("d2", "c")] {
        hub.create_module(Module::new(d, m), T0).unwrap();
    }
    let all = hub
        .query_twins("SELECT * FROM devices.modules", 100, None)
        .unwrap();
    let ids: Vec<_> = all
        .items
        .iter()
        .map(|t| format!("{}/{}", t["deviceId"], t["moduleId"]).replace('"', ""))
        .collect();
    assert_eq!(ids, ["d1/a", "d1/b", "d2/a", "d2/c"]);
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = hub
            .query_twins(
                "SELECT deviceId, moduleId FROM devices.modules",
                1,
                token.as_deref(),
            )
            .unwrap();
        seen.extend(page.items);
        token = page.continuation_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 4);
    let c = hub
        .query_twins(
            "SELECT COUNT() AS n FROM devices.modules WHERE moduleId = 'a'",
            100,
            None,
        )
        .unwrap();
    assert_eq!(c.items, [json!({"n": 2})]);
}

#[test]
fn methods_need_a_registered_subscribed_module() {
    let mut hub = hub();
    let m1 = Identity::module("d1", "m1");
    let call = |timeout| iothub_protocol::method::MethodCall {
        name: "reboot".into(),
        payload: iothub_protocol::method::JsonPayload::null(),
        connect_timeout_secs: timeout,
        response_timeout_secs: 30,
    };
    assert_eq!(
        code(hub.invoke_method(&m1, call(0), T0)),
        ErrorCode::ModuleNotFound
    );
    assert_eq!(
        code(hub.method_subscribe(ConnectionId(1), &m1, T0)),
        ErrorCode::ModuleNotFound
    );
    hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    assert_eq!(
        code(hub.invoke_method(&m1, call(0), T0)),
        ErrorCode::DeviceNotOnline
    );
    hub.method_subscribe(ConnectionId(1), &Identity::device("d1"), T0)
        .unwrap();
    assert_eq!(
        code(hub.invoke_method(&m1, call(0), T0)),
        ErrorCode::DeviceNotOnline,
        "the device's subscription does not serve its module"
    );
    hub.method_subscribe(ConnectionId(2), &m1, T0).unwrap();
    let waiting = hub.invoke_method(&m1, call(10), T0).unwrap();
    let sent = std::iter::from_fn(|| hub.poll_event()).find_map(|e| match e {
        HubEvent::MethodRequest(r) => Some(r),
        _ => None,
    });
    assert_eq!(sent.map(|r| r.connection), Some(ConnectionId(2)));
    hub.delete_module("d1", "m1", None, T0_1).unwrap();
    let ended = std::iter::from_fn(|| hub.poll_event()).find_map(|e| match e {
        HubEvent::MethodCompleted {
            invocation,
            outcome,
        } => Some((invocation, outcome)),
        _ => None,
    });
    assert!(
        matches!(ended, Some((id, Err(HubError::ModuleNotFound { .. }))) if id == waiting),
        "{ended:?}"
    );
    assert_eq!(hub.method_target(&m1), None);
}

#[test]
fn module_telemetry_and_connection_state_are_the_modules() {
    let mut hub = hub();
    let m = hub.create_module(Module::new("d1", "m1"), T0).unwrap();
    let m1 = Identity::module("d1", "m1");
    hub.set_identity_connection_state(&m1, true, T1);
    assert_eq!(
        hub.get_module("d1", "m1").unwrap().connection_state,
        ConnectionState::Connected
    );
    assert_eq!(
        hub.get_device("d1").unwrap().connection_state,
        ConnectionState::Disconnected
    );
    let origin = Origin {
        identity: m1.clone(),
        auth: AuthMethod::MODULE_SAS,
    };
    hub.send_telemetry(&origin, Message::new("t"), T1).unwrap();
    let ghost = Origin {
        identity: Identity::module("d1", "m9"),
        auth: AuthMethod::MODULE_SAS,
    };
    assert_eq!(
        code(hub.send_telemetry(&ghost, Message::new("t"), T1)),
        ErrorCode::ModuleNotFound
    );
    let _ = m;
}

#[derive(Debug, Clone)]
enum Op {
    CreateDevice(u8),
    DeleteDevice(u8),
    Create(u8, u8),
    Update(u8, u8, bool),
    Delete(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8).prop_map(Op::CreateDevice),
        (0..3u8).prop_map(Op::DeleteDevice),
        (0..3u8, 0..4u8).prop_map(|(d, m)| Op::Create(d, m)),
        (0..3u8, 0..4u8, any::<bool>()).prop_map(|(d, m, fresh)| Op::Update(d, m, fresh)),
        (0..3u8, 0..4u8).prop_map(|(d, m)| Op::Delete(d, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Against a model (a set of devices, each with a set of modules): every operation
    /// succeeds or fails exactly when the model says, listings match the model, and etags and
    /// generation ids are never reused.
    #[test]
    fn registry_matches_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut hub = Hub::new(HubSettings::default(), 5);
        let mut model: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut etags = BTreeSet::new();
        let mut generations = BTreeSet::new();
        for op in ops {
            match op {
                Op::CreateDevice(d) => {
                    let d = format!("d{d}");
                    let r = hub.create_device(Device::new(&d), T0);
                    prop_assert_eq!(r.is_ok(), !model.contains_key(&d));
                    model.entry(d).or_default();
                }
                Op::DeleteDevice(d) => {
                    let d = format!("d{d}");
                    let r = hub.delete_device(&d, None, T0);
                    prop_assert_eq!(r.is_ok(), model.remove(&d).is_some());
                }
                Op::Create(d, m) => {
                    let (d, m) = (format!("d{d}"), format!("m{m}"));
                    let r = hub.create_module(Module::new(&d, &m), T0);
                    match model.get_mut(&d) {
                        None => prop_assert_eq!(code(r), ErrorCode::DeviceNotFound),
                        Some(mods) if mods.contains(&m) => {
                            prop_assert_eq!(code(r), ErrorCode::ModuleAlreadyExistsOnDevice)
                        }
                        Some(mods) => {
                            let created = r.unwrap();
                            prop_assert!(etags.insert(created.etag.unwrap()));
                            prop_assert!(generations.insert(created.generation_id.unwrap()));
                            mods.insert(m);
                        }
                    }
                }
                Op::Update(d, m, fresh) => {
                    let (d, m) = (format!("d{d}"), format!("m{m}"));
                    let current = hub.get_module(&d, &m).ok().and_then(|x| x.etag);
                    let if_match = if fresh { current.clone().unwrap_or_default() } else { "\"old\"".into() };
                    let r = hub.update_module(Module::new(&d, &m), &if_match, T0);
                    let exists = model.get(&d).is_some_and(|s| s.contains(&m));
                    prop_assert_eq!(r.is_ok(), exists && fresh);
                    if let Ok(u) = r {
                        prop_assert!(etags.insert(u.etag.unwrap()));
                    }
                }
                Op::Delete(d, m) => {
                    let (d, m) = (format!("d{d}"), format!("m{m}"));
                    let r = hub.delete_module(&d, &m, Some("*"), T0);
                    let existed = model.get_mut(&d).is_some_and(|s| s.remove(&m));
                    prop_assert_eq!(r.is_ok(), existed);
                }
            }
            for (d, mods) in &model {
                let listed: BTreeSet<String> =
                    hub.list_modules(d).unwrap().into_iter().map(|m| m.module_id).collect();
                prop_assert_eq!(&listed, mods);
            }
            let total: usize = model.values().map(BTreeSet::len).sum();
            let rows = hub.query_twins("SELECT COUNT() AS n FROM devices.modules", 100, None).unwrap();
            prop_assert_eq!(rows.items, vec![json!({"n": total})]);
        }
    }
}
