//! Unit tests for the direct-method rules on a virtual clock: the call, its answer and its
//! deadlines. Connections, takeovers and registry changes are in `connection_tests.rs`.

use std::time::Duration;

use iothub_protocol::method::{CloudToDeviceMethod, CloudToDeviceMethodResult, JsonPayload};
use iothub_protocol::registry::Device;
use iothub_protocol::{ErrorCode, HubError};
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::hub::HubSettings;

pub(super) const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
pub(super) const A: ConnectionId = ConnectionId(1);
pub(super) const B: ConnectionId = ConnectionId(2);

pub(super) fn at(ms: u64) -> OffsetDateTime {
    T0 + Duration::from_millis(ms)
}

pub(super) fn hub() -> Hub {
    let mut hub = Hub::new(HubSettings::default(), 1);
    for d in ["d1", "d2"] {
        hub.create_device(Device::new(d), T0).unwrap();
    }
    hub.create_module(iothub_protocol::module::Module::new("d1", "m1"), T0)
        .unwrap();
    hub
}

pub(super) fn d1() -> Identity {
    Identity::device("d1")
}

pub(super) fn call(name: &str, payload: &str, connect: u32, response: u32) -> MethodCall {
    MethodCall {
        name: name.into(),
        payload: JsonPayload::from_json(payload).unwrap(),
        connect_timeout_secs: connect,
        response_timeout_secs: response,
    }
}

pub(super) fn events(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

pub(super) fn requests(hub: &mut Hub) -> Vec<MethodRequest> {
    events(hub)
        .into_iter()
        .map(|e| match e {
            HubEvent::MethodRequest(r) => r,
            other => panic!("expected a request, got {other:?}"),
        })
        .collect()
}

pub(super) fn one_request(hub: &mut Hub) -> MethodRequest {
    let mut r = requests(hub);
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

pub(super) fn completions(hub: &mut Hub) -> Vec<(InvocationId, MethodOutcome)> {
    events(hub)
        .into_iter()
        .map(|e| match e {
            HubEvent::MethodCompleted {
                invocation,
                outcome,
            } => (invocation, outcome),
            other => panic!("expected a completion, got {other:?}"),
        })
        .collect()
}

pub(super) fn one_completion(hub: &mut Hub) -> (InvocationId, MethodOutcome) {
    let mut c = completions(hub);
    assert_eq!(c.len(), 1, "{c:?}");
    c.remove(0)
}

pub(super) fn ok(status: i32, payload: &str) -> MethodOutcome {
    Ok(CloudToDeviceMethodResult {
        status,
        payload: JsonPayload::from_json(payload).unwrap(),
    })
}

pub(super) fn assert_clean(hub: &Hub) {
    hub.methods.assert_consistent();
    assert_eq!(hub.pending_methods(), 0);
    assert_eq!(hub.pending_timers(), 0, "no deadline left behind");
}

pub(super) fn respond(
    hub: &mut Hub,
    c: ConnectionId,
    r: &MethodRequest,
    status: i32,
    body: &str,
    now: OffsetDateTime,
) -> ResponseDisposition {
    hub.method_response(c, &r.rid.to_string(), status, body.as_bytes(), now)
}

#[test]
fn subscribed_device_gets_the_request_and_its_answer_completes_the_call() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let id = hub
        .invoke_method(&d1(), call("reboot", r#"{"delay":5}"#, 0, 30), T0)
        .unwrap();
    let r = one_request(&mut hub);
    assert_eq!(
        (r.invocation, r.connection, &r.identity, r.name.as_str()),
        (id, A, &d1(), "reboot")
    );
    assert_eq!(r.payload.as_str(), r#"{"delay":5}"#);
    assert_eq!(
        r.mqtt_topic(),
        format!("$iothub/methods/POST/reboot/?$rid={}", r.rid)
    );
    assert_eq!(hub.pending_methods(), 1);

    let d = respond(&mut hub, A, &r, 500, r#"{"result":"rebooting"}"#, at(10));
    assert_eq!(d, ResponseDisposition::Answered(id));
    // Any status is the device's to choose; the call itself still succeeds.
    assert_eq!(
        one_completion(&mut hub),
        (id, ok(500, r#"{"result":"rebooting"}"#))
    );
    assert_clean(&hub);
}

#[test]
fn payloads_round_trip_both_ways_and_an_empty_answer_is_null() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    for p in [
        "null",
        r#""""#,
        r#""foo""#,
        "{}",
        r#"{"k1":"v1"}"#,
        "[1,2.50]",
    ] {
        let body = format!(r#"{{"methodName":"echo","payload":{p}}}"#);
        let c = CloudToDeviceMethod::from_json(body.as_bytes())
            .and_then(CloudToDeviceMethod::into_call)
            .unwrap();
        let id = hub.invoke_method(&d1(), c, T0).unwrap();
        let r = one_request(&mut hub);
        assert_eq!(r.payload.as_str(), p);
        respond(&mut hub, A, &r, 200, p, T0);
        assert_eq!(one_completion(&mut hub), (id, ok(200, p)));
    }
    let id = hub
        .invoke_method(&d1(), call("m", "null", 0, 30), T0)
        .unwrap();
    let r = one_request(&mut hub);
    respond(&mut hub, A, &r, 204, "", T0);
    assert_eq!(one_completion(&mut hub), (id, ok(204, "null")));
    assert_clean(&hub);
}

#[test]
fn unknown_device_is_device_not_found_and_leaves_nothing() {
    let mut hub = hub();
    let e = hub
        .invoke_method(&Identity::device("ghost"), call("m", "null", 30, 30), T0)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotFound);
    assert!(events(&mut hub).is_empty());
    assert_clean(&hub);
    let e = hub
        .method_subscribe(A, &Identity::device("ghost"), T0)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotFound);
}

#[test]
fn offline_with_no_connect_timeout_is_device_not_online_at_once() {
    let mut hub = hub();
    // Connected but not subscribed is the same as offline (D-404103).
    hub.set_connection_state("d1", true, T0);
    let e = hub
        .invoke_method(&d1(), call("m", "null", 0, 30), T0)
        .unwrap_err();
    assert_eq!(
        e,
        HubError::DeviceNotOnline {
            identity: "d1".into(),
            connect_timeout_secs: 0
        }
    );
    assert_eq!(e.code().http_status(), 404);
    assert_eq!(
        e.wrapped_detail().unwrap().info,
        r#"{"timeout":"00:00:00"}"#
    );
    assert!(events(&mut hub).is_empty());
    assert_clean(&hub);
}

#[test]
fn invocation_waits_for_a_subscription_within_the_connect_timeout() {
    let mut hub = hub();
    let id = hub
        .invoke_method(&d1(), call("m", "1", 60, 30), T0)
        .unwrap();
    assert!(events(&mut hub).is_empty(), "nothing to send to yet");
    hub.handle_timeout(at(59_999));
    assert!(events(&mut hub).is_empty());

    hub.method_subscribe(A, &d1(), at(59_999)).unwrap();
    let r = one_request(&mut hub);
    assert_eq!((r.invocation, r.connection), (id, A));
    // Sent late in the connect window: the answer is due by the client's budget minus the
    // margin (T0 + 60 s + 30 s - 0.5 s), not a full 30 s after sending.
    hub.handle_timeout(at(89_499));
    assert!(events(&mut hub).is_empty());
    hub.handle_timeout(at(89_500));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, id);
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::GatewayTimeout);
    assert_clean(&hub);
}

#[test]
fn no_subscription_within_the_connect_timeout_is_404103_with_the_timeout() {
    let mut hub = hub();
    let id = hub
        .invoke_method(&d1(), call("m", "1", 60, 30), T0)
        .unwrap();
    // The next operation fires what is due, whoever calls it.
    let other = hub.invoke_method(&Identity::device("d2"), call("m", "1", 0, 30), at(60_000));
    assert!(other.is_err());
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, id);
    let e = outcome.unwrap_err();
    assert_eq!(
        e,
        HubError::DeviceNotOnline {
            identity: "d1".into(),
            connect_timeout_secs: 60
        }
    );
    assert_eq!(
        e.wrapped_detail().unwrap().info,
        r#"{"timeout":"00:01:00"}"#
    );
    // A subscription after the fact sends nothing.
    hub.method_subscribe(A, &d1(), at(60_001)).unwrap();
    assert!(events(&mut hub).is_empty());
    assert_clean(&hub);
}

#[test]
fn unanswered_request_is_504101_just_before_the_clients_own_timeout() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    // connect 0: Node's socket timeout is exactly 30 s, so the hub answers 0.5 s earlier.
    let id = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);
    assert_eq!(hub.poll_timeout(), Some(at(29_500)));
    hub.handle_timeout(at(29_499));
    assert!(events(&mut hub).is_empty());
    hub.handle_timeout(at(29_500));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, id);
    let e = outcome.unwrap_err();
    assert_eq!(
        e,
        HubError::GatewayTimeout {
            identity: "d1".into(),
            method: "m".into(),
            response_timeout_secs: 30
        }
    );
    assert_eq!(e.code().http_status(), 504);
    assert_clean(&hub);
    // The device answers after all: dropped as late.
    assert_eq!(
        respond(&mut hub, A, &r, 200, "1", at(40_000)),
        ResponseDisposition::Late
    );
    assert!(events(&mut hub).is_empty());

    // With a connect timeout the client has slack, and the full response timeout counts.
    hub.invoke_method(&d1(), call("m", "1", 5, 30), T0).unwrap();
    one_request(&mut hub);
    assert_eq!(hub.poll_timeout(), Some(at(30_000)));
}

#[test]
fn late_repeated_foreign_and_made_up_answers_are_dropped() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    hub.method_subscribe(B, &Identity::device("d2"), T0)
        .unwrap();
    let id = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);

    // Another connection (even another device) cannot answer it.
    assert_eq!(
        respond(&mut hub, B, &r, 200, "1", T0),
        ResponseDisposition::WrongConnection
    );
    for junk in [
        "999999",
        "abc",
        "",
        "-1",
        "00000000-0000-0001-0000-000000000001",
    ] {
        assert_eq!(
            hub.method_response(A, junk, 200, b"1", T0),
            ResponseDisposition::Unknown,
            "{junk}"
        );
    }
    assert!(events(&mut hub).is_empty());
    assert_eq!(hub.pending_methods(), 1);

    assert_eq!(
        respond(&mut hub, A, &r, 201, "2", T0),
        ResponseDisposition::Answered(id)
    );
    assert_eq!(one_completion(&mut hub), (id, ok(201, "2")));
    assert_eq!(
        respond(&mut hub, A, &r, 202, "3", T0),
        ResponseDisposition::Late
    );
    assert!(events(&mut hub).is_empty());
    assert_clean(&hub);
}

#[test]
fn an_amqp_style_uuid_correlation_id_answers_the_request() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let id = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);
    let uuid = r.rid.to_uuid();
    assert_eq!(RequestId::parse(&uuid.to_string()), Some(r.rid));
    assert_eq!(
        RequestId::parse(&uuid.simple().to_string().to_uppercase()),
        Some(r.rid)
    );
    let d = hub.method_response(A, &uuid.hyphenated().to_string(), 200, b"", T0);
    assert_eq!(d, ResponseDisposition::Answered(id));
}

#[test]
fn concurrent_invocations_are_independent_and_get_their_own_answers() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let ids: Vec<InvocationId> = (0..3)
        .map(|i| {
            hub.invoke_method(&d1(), call(&format!("m{i}"), &i.to_string(), 0, 5 + i), T0)
                .unwrap()
        })
        .collect();
    let rs = requests(&mut hub);
    assert_eq!(rs.len(), 3);
    let mut rids: Vec<_> = rs.iter().map(|r| r.rid).collect();
    rids.dedup();
    assert_eq!(rids.len(), 3, "request ids are unique");

    // Answered out of order, the last one never.
    respond(&mut hub, A, &rs[1], 200, r#""one""#, at(100));
    respond(&mut hub, A, &rs[0], 200, r#""zero""#, at(200));
    assert_eq!(
        completions(&mut hub),
        vec![
            (ids[1], ok(200, r#""one""#)),
            (ids[0], ok(200, r#""zero""#))
        ]
    );
    hub.handle_timeout(at(60_000));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, ids[2]);
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::GatewayTimeout);
    assert_clean(&hub);
}

#[test]
fn a_call_built_by_hand_cannot_bypass_the_rules() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    for (c, text) in [
        (
            call("m", "1", 0, 4),
            "responseTimeoutInSeconds must be within [5; 300].",
        ),
        (
            call("m", "1", 301, 30),
            "connectTimeoutInSeconds must be within [0; 300].",
        ),
    ] {
        let e = hub.invoke_method(&d1(), c, T0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
        assert_eq!(e.to_string(), text);
    }
    let e = hub
        .invoke_method(&d1(), call("a/b", "1", 0, 30), T0)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    assert!(events(&mut hub).is_empty());
    assert_clean(&hub);
}

#[test]
fn a_device_answer_that_is_not_json_or_too_large_ends_the_call_with_an_error() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let id = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);
    assert_eq!(
        respond(&mut hub, A, &r, 200, "'Completed.'", T0),
        ResponseDisposition::Answered(id)
    );
    let (_, outcome) = one_completion(&mut hub);
    let e = outcome.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    assert!(e.to_string().contains("not JSON"), "{e}");

    let id = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);
    let big = format!("\"{}\"", "x".repeat(128 * 1024));
    assert_eq!(
        respond(&mut hub, A, &r, 200, &big, T0),
        ResponseDisposition::Answered(id)
    );
    let (_, outcome) = one_completion(&mut hub);
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::MessageTooLarge);
    assert_clean(&hub);
}

#[test]
fn request_ids_parse_in_both_spellings_and_nothing_else() {
    let rid = RequestId(42);
    assert_eq!(rid.to_string(), "42");
    assert_eq!(
        rid.to_uuid().to_string(),
        "00000000-0000-0000-0000-00000000002a"
    );
    assert_eq!(RequestId::parse("42"), Some(rid));
    assert_eq!(RequestId::parse(" 42 "), Some(rid));
    assert_eq!(
        RequestId::parse("{00000000-0000-0000-0000-00000000002A}"),
        Some(rid)
    );
    assert_eq!(
        RequestId::parse("urn:uuid:00000000-0000-0000-0000-00000000002a"),
        Some(rid)
    );
    for bad in [
        "",
        "+42",
        "-42",
        "4 2",
        "18446744073709551616",
        "x",
        "00000000-0000-0001-0000-00000000002a",
    ] {
        assert_eq!(RequestId::parse(bad), None, "{bad}");
    }
}
