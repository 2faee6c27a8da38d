//! Twin rules on the hub: unit tests per rule, and a model test of random write sequences.

use std::collections::HashSet;

use super::obj;
use iothub_protocol::twin::{JsonObject, SectionWrite, TwinWrite};
use iothub_protocol::{ErrorCode, HubError};
use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::super::{EventRoutes, Hub, HubEvent, HubSettings, Identity};
use super::{EventSource, NonTelemetryEvent};
use iothub_protocol::registry::Device;

const T0: OffsetDateTime = datetime!(2026-02-01 8:00 UTC);
const T1: OffsetDateTime = datetime!(2026-02-01 8:01 UTC);
const T2: OffsetDateTime = datetime!(2026-02-01 8:02 UTC);

fn hub_with(routes: EventRoutes) -> (Hub, Identity) {
    let mut hub = Hub::new(
        HubSettings {
            hub_name: "twinhub".into(),
            routes,
            ..HubSettings::default()
        },
        7,
    );
    hub.create_device(Device::new("d1"), T0).unwrap();
    (hub, Identity::device("d1"))
}

fn hub() -> (Hub, Identity) {
    let (mut h, id) = hub_with(EventRoutes::default());
    drain(&mut h);
    (h, id)
}

fn drain(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

fn desired_events(events: &[HubEvent]) -> Vec<(i64, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            HubEvent::TwinDesiredChanged { version, patch, .. } => Some((*version, patch.clone())),
            _ => None,
        })
        .collect()
}

fn notifications(events: Vec<HubEvent>) -> Vec<NonTelemetryEvent> {
    events
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::NonTelemetry(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn write(v: Value) -> TwinWrite {
    TwinWrite::from_json(&v).unwrap()
}

// ---- the document ----

#[test]
fn a_new_twin_looks_like_the_docs_sample() {
    let (hub, id) = hub();
    let t = serde_json::to_value(hub.get_twin(&id).unwrap()).unwrap();
    assert_eq!(t["deviceId"], "d1");
    assert_eq!(t["etag"], "AAAAAAAAAAE=");
    assert_eq!(t["version"], 2);
    assert_eq!(t["status"], "enabled");
    assert_eq!(t["connectionState"], "Disconnected");
    assert_eq!(t["lastActivityTime"], "0001-01-01T00:00:00Z");
    assert_eq!(t["cloudToDeviceMessageCount"], 0);
    assert_eq!(t["authenticationType"], "sas");
    assert_eq!(
        t["x509Thumbprint"],
        json!({"primaryThumbprint": null, "secondaryThumbprint": null})
    );
    assert_eq!(t["capabilities"], json!({"iotEdge": false}));
    assert_eq!(t["tags"], json!({}));
    assert_eq!(t["deviceEtag"], json!(hub.get_device("d1").unwrap().etag));
    assert!(t.get("moduleId").is_none());
    let d = &t["properties"]["desired"];
    assert_eq!(d["$version"], 1);
    assert_eq!(
        d["$metadata"]["$lastUpdated"],
        "2026-02-01T08:00:00.0000000Z"
    );
    assert_eq!(d["$metadata"]["$lastUpdatedVersion"], 1);
    let r = &t["properties"]["reported"];
    assert_eq!(r["$version"], 1);
    assert!(r["$metadata"].get("$lastUpdatedVersion").is_none());

    let dv = serde_json::to_value(hub.get_twin_properties(&id).unwrap()).unwrap();
    assert_eq!(
        dv,
        json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
    );
}

#[test]
fn unknown_identities_are_not_found() {
    let (mut hub, _) = hub();
    let ghost = Identity::device("ghost");
    assert!(matches!(
        hub.get_twin(&ghost),
        Err(HubError::DeviceNotFound { .. })
    ));
    let e = hub
        .update_twin(&ghost, &write(json!({"tags": {"a": 1}})), None, T1)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotFound);
    let e = hub
        .update_reported_properties(&ghost, &JsonObject::new(), T1)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotFound);
    let m = Identity::module("d1", "m1");
    assert_eq!(
        hub.get_twin(&m).unwrap_err().code(),
        ErrorCode::ModuleNotFound
    );
    assert_eq!(
        hub.get_twin_properties(&m).unwrap_err().code(),
        ErrorCode::ModuleNotFound
    );
}

// ---- service writes ----

#[test]
fn patch_merges_desired_and_notifies_with_the_patch() {
    let (mut hub, id) = hub();
    let t = hub
        .update_twin(
            &id,
            &write(json!({"properties": {"desired": {"a": 1, "o": {"x": "y", "z": true}}}})),
            None,
            T1,
        )
        .unwrap();
    assert_eq!(t.version, Some(3));
    assert_eq!(t.etag.as_deref(), Some("AAAAAAAAAAI="));
    assert_eq!(t.properties.desired_version(), Some(2));
    assert_eq!(t.properties.reported_version(), Some(1));
    let ev = desired_events(&drain(&mut hub));
    assert_eq!(
        ev,
        [(
            2,
            json!({"a": 1, "o": {"x": "y", "z": true}, "$version": 2})
        )]
    );

    let t = hub
        .update_twin(
            &id,
            &write(json!({"properties": {"desired": {"a": null, "o": {"z": null}}}})),
            None,
            T2,
        )
        .unwrap();
    let d = &t.properties.desired;
    assert_eq!(d.get("a"), None);
    assert_eq!(d["o"], json!({"x": "y"}));
    assert_eq!(d["$version"], 3);
    assert_eq!(
        d["$metadata"]["o"]["$lastUpdated"],
        "2026-02-01T08:02:00.0000000Z"
    );
    assert_eq!(
        d["$metadata"]["o"]["x"]["$lastUpdated"],
        "2026-02-01T08:01:00.0000000Z"
    );
    assert_eq!(
        desired_events(&drain(&mut hub)),
        [(3, json!({"a": null, "o": {"z": null}, "$version": 3}))]
    );
}

#[test]
fn tag_writes_move_the_twin_but_notify_no_device() {
    let (mut hub, id) = hub();
    let t = hub
        .update_twin(
            &id,
            &write(json!({"tags": {"floor": 3, "loc": {"city": "Oslo"}}})),
            None,
            T1,
        )
        .unwrap();
    assert_eq!(t.tags["loc"]["city"], "Oslo");
    assert_eq!(t.version, Some(3));
    assert_eq!(t.properties.desired_version(), Some(1));
    assert!(desired_events(&drain(&mut hub)).is_empty());
    let t = hub
        .update_twin(
            &id,
            &write(json!({"tags": {"loc": {"city": null}}})),
            None,
            T1,
        )
        .unwrap();
    assert_eq!(Value::Object(t.tags), json!({"floor": 3, "loc": {}}));
}

#[test]
fn null_sections_clear_and_tell_the_device_what_went() {
    let (mut hub, id) = hub();
    hub.update_twin(
        &id,
        &write(json!({"tags": {"a": 1}, "properties": {"desired": {"x": 1, "y": {"z": 2}}}})),
        None,
        T1,
    )
    .unwrap();
    drain(&mut hub);
    let t = hub
        .update_twin(
            &id,
            &write(json!({"tags": null, "properties": {"desired": null}})),
            None,
            T2,
        )
        .unwrap();
    assert!(t.tags.is_empty());
    assert_eq!(Value::Object(t.properties.desired.clone())["$version"], 3);
    assert_eq!(
        t.properties.desired.len(),
        2,
        "only $metadata and $version are left"
    );
    assert_eq!(
        desired_events(&drain(&mut hub)),
        [(3, json!({"x": null, "y": null, "$version": 3}))]
    );
}

#[test]
fn put_replaces_tags_and_desired_and_sends_the_whole_section() {
    let (mut hub, id) = hub();
    hub.update_twin(
        &id,
        &write(json!({"tags": {"keep": false}, "properties": {"desired": {"old": 1, "both": 1}}})),
        None,
        T1,
    )
    .unwrap();
    drain(&mut hub);
    let t = hub
        .replace_twin(
            &id,
            &write(json!({"properties": {"desired": {"both": 2, "new": {"n": null, "m": 1}}}})),
            None,
            T2,
        )
        .unwrap();
    assert!(
        t.tags.is_empty(),
        "an absent section is replaced by an empty one"
    );
    assert_eq!(t.properties.desired["both"], 2);
    assert_eq!(t.properties.desired["new"], json!({"m": 1}));
    assert!(t.properties.desired.get("old").is_none());
    assert_eq!(t.version, Some(4));
    assert_eq!(
        desired_events(&drain(&mut hub)),
        [(
            3,
            json!({"both": 2, "new": {"m": 1}, "old": null, "$version": 3})
        )],
        "the new section, and null for what it removed"
    );
}

#[test]
fn empty_patch_changes_nothing() {
    let (mut hub, id) = hub();
    let before = hub.get_twin(&id).unwrap();
    let after = hub
        .update_twin(&id, &write(json!({"deviceId": "d1"})), None, T1)
        .unwrap();
    assert_eq!(before, after);
    assert!(drain(&mut hub).is_empty());
}

#[test]
fn if_match_takes_the_twin_etag_quoted_or_not_and_star() {
    let (mut hub, id) = hub();
    let etag = hub.get_twin(&id).unwrap().etag.unwrap();
    let w = write(json!({"tags": {"a": 1}}));
    let t = hub
        .update_twin(&id, &w, Some(&format!("\"{etag}\"")), T1)
        .unwrap();
    let e = hub.update_twin(&id, &w, Some(&etag), T1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PreconditionFailed);
    assert_eq!(e.code().http_status(), 412);
    let e = hub.replace_twin(&id, &w, Some("\"abc\""), T1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PreconditionFailed);
    assert_eq!(
        hub.get_twin(&id).unwrap(),
        t,
        "a refused write changes nothing"
    );
    // The device etag is not the twin etag.
    let device_etag = hub.get_device("d1").unwrap().etag.unwrap();
    assert!(hub.update_twin(&id, &w, Some(&device_etag), T1).is_err());
    hub.update_twin(&id, &w, Some("\"*\""), T1).unwrap();
    hub.update_twin(&id, &w, Some("*"), T1).unwrap();
}

#[test]
fn service_writes_cannot_touch_reported() {
    let e = TwinWrite::from_json(&json!({"properties": {"reported": {"a": 1}}})).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
}

// ---- device writes ----

#[test]
fn reported_patches_move_versions_and_etag() {
    let (mut hub, id) = hub();
    let v = hub
        .update_reported_properties(&id, &obj(json!({"battery": 55, "fw": {"v": "1"}})), T1)
        .unwrap();
    assert_eq!(v, 2);
    let v = hub
        .update_reported_properties(&id, &obj(json!({"fw": null})), T2)
        .unwrap();
    assert_eq!(v, 3);
    let t = hub.get_twin(&id).unwrap();
    assert_eq!(t.version, Some(4));
    assert_eq!(t.etag.as_deref(), Some("AAAAAAAAAAM="));
    assert_eq!(t.properties.reported["battery"], 55);
    assert!(t.properties.reported.get("fw").is_none());
    assert_eq!(
        t.properties.reported["$metadata"]["battery"]["$lastUpdated"],
        "2026-02-01T08:01:00.0000000Z"
    );
    assert!(desired_events(&drain(&mut hub)).is_empty());
    let dv = hub.get_twin_properties(&id).unwrap();
    assert_eq!(
        Value::Object(dv.reported),
        json!({"battery": 55, "$version": 3})
    );
}

#[test]
fn limits_refuse_and_leave_the_twin_alone() {
    let (mut hub, id) = hub();
    let before = hub.get_twin(&id).unwrap();
    let big = "x".repeat(4000);
    let mut patch = JsonObject::new();
    for i in 0..9 {
        patch.insert(format!("k{i}"), json!(big));
    }
    let e = hub.update_reported_properties(&id, &patch, T1).unwrap_err();
    assert!(
        matches!(&e, HubError::TwinTooLarge { section, .. } if section == "Properties.Reported")
    );
    assert!(
        e.to_string()
            .starts_with("'Properties.Reported' size should be less than 32768 bytes.")
    );
    // Growing a section step by step hits the limit on the final size, not the patch's.
    let mut ok = JsonObject::new();
    for i in 0..4 {
        ok.insert(format!("k{i}"), json!(big));
    }
    hub.update_reported_properties(&id, &ok, T1).unwrap();
    let mut more = JsonObject::new();
    for i in 4..9 {
        more.insert(format!("k{i}"), json!(big));
    }
    assert!(hub.update_reported_properties(&id, &more, T1).is_err());
    let e = hub
        .update_twin(
            &id,
            &TwinWrite::tags(obj(json!({"a": {"b.c": 1}}))),
            None,
            T1,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    let e = hub
        .update_twin(
            &id,
            &TwinWrite::desired(obj(json!({"s": "x".repeat(4097)}))),
            None,
            T1,
        )
        .unwrap_err();
    assert!(e.to_string().contains("maximum 4096 bytes"));
    let mut tags = JsonObject::new();
    for i in 0..3 {
        tags.insert(format!("t{i}"), json!(big));
    }
    let e = hub
        .update_twin(&id, &TwinWrite::tags(tags), None, T1)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("'Tags' size should be less than 8192 bytes.")
    );
    let after = hub.get_twin(&id).unwrap();
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.properties.desired, before.properties.desired);
}

#[test]
fn recreating_a_device_gives_a_fresh_twin() {
    let (mut hub, id) = hub();
    hub.update_twin(&id, &write(json!({"tags": {"a": 1}})), None, T1)
        .unwrap();
    hub.delete_device("d1", None, T1).unwrap();
    assert!(hub.get_twin(&id).is_err());
    hub.create_device(Device::new("d1"), T2).unwrap();
    let t = hub.get_twin(&id).unwrap();
    assert!(t.tags.is_empty());
    assert_eq!(t.version, Some(2));
}

// ---- change events ----

#[test]
fn no_routes_no_notifications() {
    let (mut hub, id) = hub();
    hub.update_twin(&id, &write(json!({"tags": {"a": 1}})), None, T1)
        .unwrap();
    hub.update_reported_properties(&id, &obj(json!({"r": 1})), T1)
        .unwrap();
    hub.set_connection_state("d1", true, T1);
    hub.delete_device("d1", None, T1).unwrap();
    assert!(notifications(drain(&mut hub)).is_empty());
}

#[test]
fn twin_change_events_carry_what_changed() {
    let (mut hub, id) = hub_with(EventRoutes {
        twin_change_events: true,
        ..EventRoutes::default()
    });
    drain(&mut hub);
    hub.update_twin(
        &id,
        &write(json!({"tags": {"t": 1}, "properties": {"desired": {"d": 2, "gone": null}}})),
        None,
        T1,
    )
    .unwrap();
    let n = notifications(drain(&mut hub));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].source, EventSource::TwinChangeEvents);
    assert_eq!(n[0].op_type, "updateTwin");
    assert_eq!(n[0].hub_name, "twinhub");
    let b = &n[0].body;
    assert_eq!(b["version"], 3);
    assert_eq!(b["tags"], json!({"t": 1}));
    let d = &b["properties"]["desired"];
    assert_eq!(d["d"], 2);
    assert_eq!(d["gone"], Value::Null);
    assert_eq!(d["$version"], 2);
    assert_eq!(d["$metadata"]["$lastUpdatedVersion"], 2);
    assert_eq!(d["$metadata"]["d"]["$lastUpdatedVersion"], 2);
    assert!(b["properties"].get("reported").is_none());

    hub.update_reported_properties(&id, &obj(json!({"testContent": null, "x": 1})), T2)
        .unwrap();
    let n = notifications(drain(&mut hub));
    let r = &n[0].body["properties"]["reported"];
    // The Python e2e suite reads the cleared key back as None.
    assert_eq!(r["testContent"], Value::Null);
    assert_eq!(r["x"], 1);
    assert_eq!(r["$version"], 2);
    assert_eq!(n[0].body["version"], 4);

    hub.replace_twin(&id, &write(json!({"tags": {"only": true}})), None, T2)
        .unwrap();
    let n = notifications(drain(&mut hub));
    assert_eq!(n[0].op_type, "replaceTwin");
    assert_eq!(n[0].body["deviceId"], "d1");
    assert_eq!(n[0].body["tags"], json!({"only": true}));
    assert_eq!(n[0].body["properties"]["desired"]["$version"], 3);
}

#[test]
fn lifecycle_and_connection_events() {
    let (mut hub, _) = hub_with(EventRoutes {
        device_lifecycle_events: true,
        device_connection_state_events: true,
        twin_change_events: false,
    });
    let n = notifications(drain(&mut hub));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].source, EventSource::DeviceLifecycleEvents);
    assert_eq!(n[0].op_type, "createDeviceIdentity");
    assert_eq!(n[0].body["deviceId"], "d1");
    assert_eq!(n[0].body["version"], 2);
    assert_eq!(n[0].operation_time, T0);

    hub.set_connection_state("d1", true, T1);
    hub.set_connection_state("d1", true, T1);
    hub.set_connection_state("d1", false, T2);
    let n = notifications(drain(&mut hub));
    let ops: Vec<&str> = n.iter().map(|e| e.op_type).collect();
    assert_eq!(
        ops,
        ["deviceConnected", "deviceDisconnected"],
        "only changes count"
    );
    let seqs: Vec<String> = n
        .iter()
        .map(|e| e.body["sequenceNumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seqs[0].len(), 64);
    assert!(seqs[0] < seqs[1]);

    hub.update_twin(
        &Identity::device("d1"),
        &write(json!({"tags": {"a": 1}})),
        None,
        T2,
    )
    .unwrap();
    hub.delete_device("d1", None, T2).unwrap();
    let n = notifications(drain(&mut hub));
    assert_eq!(n.len(), 1, "twin changes are not routed here");
    assert_eq!(n[0].op_type, "deleteDeviceIdentity");
    assert_eq!(n[0].body["tags"], json!({"a": 1}), "the twin as it was");
}

// ---- model test ----

/// The reference model: plain JSON merged by a merge patch written here, plus counters.
#[derive(Debug, Clone, Default)]
struct Model {
    tags: JsonObject,
    desired: JsonObject,
    reported: JsonObject,
    desired_version: i64,
    reported_version: i64,
    version: i64,
}

fn model_merge(target: &mut JsonObject, patch: &JsonObject) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else if let Value::Object(p) = v {
            let mut child = match target.remove(k) {
                Some(Value::Object(c)) => c,
                _ => JsonObject::new(),
            };
            model_merge(&mut child, p);
            target.insert(k.clone(), Value::Object(child));
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

fn model_replace(patch: &JsonObject) -> JsonObject {
    let mut out = JsonObject::new();
    model_merge(&mut out, patch);
    out
}

#[derive(Debug, Clone)]
enum Op {
    Patch(TwinWrite),
    Replace(TwinWrite),
    Reported(JsonObject),
    Connect,
    Disconnect,
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(|n| json!(n)),
        "[a-z]{0,3}".prop_map(Value::String),
        Just(json!([1, "x", null])),
    ]
}

fn patch_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["a", "b", "c"]);
    leaf().prop_recursive(2, 12, 3, move |inner| {
        prop::collection::btree_map(
            key.clone(),
            prop_oneof![3 => inner, 1 => Just(Value::Null)],
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

fn patch() -> impl Strategy<Value = JsonObject> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c", "d"]),
        prop_oneof![4 => patch_value(), 1 => Just(Value::Null)],
        0..4,
    )
    .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn section_write() -> impl Strategy<Value = SectionWrite> {
    prop_oneof![
        2 => Just(SectionWrite::Absent),
        1 => Just(SectionWrite::Null),
        4 => patch().prop_map(SectionWrite::Set),
        // A key the hub refuses: the whole write must be refused.
        1 => Just(SectionWrite::Set(obj(json!({"bad.key": 1})))),
    ]
}

fn twin_write() -> impl Strategy<Value = TwinWrite> {
    (section_write(), section_write()).prop_map(|(tags, desired)| TwinWrite { tags, desired })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => twin_write().prop_map(Op::Patch),
        2 => twin_write().prop_map(Op::Replace),
        4 => patch().prop_map(Op::Reported),
        1 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
    ]
}

fn is_bad(w: &TwinWrite) -> bool {
    [&w.tags, &w.desired]
        .iter()
        .any(|s| matches!(s, SectionWrite::Set(m) if m.contains_key("bad.key")))
}

/// A device's copy of desired properties, kept from GET and notifications.
struct DeviceCopy {
    connected: bool,
    desired: JsonObject,
    version: i64,
}

impl DeviceCopy {
    /// What a device does after (re)connecting: GET the twin and start from it.
    fn resync(&mut self, hub: &Hub, id: &Identity) {
        let dv = hub.get_twin_properties(id).unwrap();
        self.version = dv.desired_version().unwrap();
        let mut d = dv.desired;
        d.remove("$version");
        self.desired = d;
    }

    fn notified(&mut self, version: i64, patch: &Value) {
        // Devices drop notifications no newer than what they have (reference 1.2).
        if !self.connected || version <= self.version {
            return;
        }
        assert_eq!(
            version,
            self.version + 1,
            "notifications come in version order, none lost"
        );
        let mut p = patch.as_object().cloned().unwrap_or_default();
        assert_eq!(p.remove("$version"), Some(json!(version)));
        model_merge(&mut self.desired, &p);
        self.version = version;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn twin_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let (mut hub, id) = hub();
        let mut m = Model { desired_version: 1, reported_version: 1, version: 2, ..Model::default() };
        let mut etags: HashSet<String> = HashSet::new();
        etags.insert(hub.get_twin(&id).unwrap().etag.unwrap());
        let mut device = DeviceCopy { connected: false, desired: JsonObject::new(), version: 0 };
        let mut now = T0;
        for op in ops {
            now += time::Duration::milliseconds(10);
            let before = hub.get_twin(&id).unwrap();
            let wrote = match &op {
                Op::Connect => {
                    if !device.connected {
                        device.connected = true;
                        device.resync(&hub, &id);
                    }
                    false
                }
                Op::Disconnect => {
                    device.connected = false;
                    false
                }
                Op::Patch(w) | Op::Replace(w) => {
                    let replace = matches!(op, Op::Replace(_));
                    let r = if replace {
                        hub.replace_twin(&id, w, None, now)
                    } else {
                        hub.update_twin(&id, w, None, now)
                    };
                    if is_bad(w) {
                        prop_assert!(r.is_err());
                        false
                    } else {
                        r.unwrap();
                        let mut wrote = false;
                        for (section, model) in [(&w.tags, &mut m.tags), (&w.desired, &mut m.desired)] {
                            match (section, replace) {
                                (SectionWrite::Absent, false) => continue,
                                (SectionWrite::Absent, true) | (SectionWrite::Null, _) => *model = JsonObject::new(),
                                (SectionWrite::Set(p), false) => model_merge(model, p),
                                (SectionWrite::Set(p), true) => *model = model_replace(p),
                            }
                            wrote = true;
                        }
                        let desired_written = replace || w.desired != SectionWrite::Absent;
                        if desired_written {
                            m.desired_version += 1;
                        }
                        wrote
                    }
                }
                Op::Reported(p) => {
                    let v = hub.update_reported_properties(&id, p, now).unwrap();
                    model_merge(&mut m.reported, p);
                    m.reported_version += 1;
                    prop_assert_eq!(v, m.reported_version);
                    true
                }
            };
            for e in drain(&mut hub) {
                if let HubEvent::TwinDesiredChanged { version, patch, .. } = e {
                    device.notified(version, &patch);
                }
            }
            let t = hub.get_twin(&id).unwrap();
            if wrote {
                m.version += 1;
                prop_assert!(t.version > before.version, "version strictly increases");
                let etag = t.etag.clone().unwrap();
                prop_assert!(etags.insert(etag), "every write gives a new etag");
            } else {
                prop_assert_eq!(&t, &before, "nothing written, nothing changed");
            }
            let mut desired = t.properties.desired.clone();
            let mut reported = t.properties.reported.clone();
            prop_assert_eq!(desired.remove("$version"), Some(json!(m.desired_version)));
            prop_assert_eq!(reported.remove("$version"), Some(json!(m.reported_version)));
            desired.remove("$metadata");
            reported.remove("$metadata");
            prop_assert_eq!(&t.tags, &m.tags);
            prop_assert_eq!(&desired, &m.desired);
            prop_assert_eq!(&reported, &m.reported);
            prop_assert_eq!(t.version, Some(m.version));
            if device.connected {
                prop_assert_eq!(&device.desired, &m.desired, "a connected device stays in step");
                prop_assert_eq!(device.version, m.desired_version);
            }
        }
        // A device that reconnects converges on the latest desired version.
        device.connected = true;
        device.resync(&hub, &id);
        prop_assert_eq!(&device.desired, &m.desired);
        prop_assert_eq!(device.version, m.desired_version);
    }
}
