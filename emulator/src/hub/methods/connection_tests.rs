//! Unit tests for how connections, takeovers, modules and registry changes affect direct
//! methods, on a virtual clock.

use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::{ErrorCode, HubError};

use super::tests::*;
use super::*;

#[test]
fn unsubscribing_or_closing_fails_requests_in_flight_but_not_waiting_ones() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let flying = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    one_request(&mut hub);
    hub.method_unsubscribe(A, at(1));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, flying);
    let e = outcome.unwrap_err();
    assert_eq!(
        e,
        HubError::DeviceConnectionClosedRemotely {
            identity: "d1".into(),
            method: "m".into()
        }
    );
    assert_eq!(e.code().code(), 404104);
    assert_eq!(e.wrapped_detail().unwrap().message, "Device unavailable");

    // Offline now: a call with a connect timeout waits, and a reconnect picks it up.
    let waiting = hub
        .invoke_method(&d1(), call("m", "2", 30, 30), at(2))
        .unwrap();
    hub.method_unsubscribe(A, at(3));
    hub.method_unsubscribe(ConnectionId(99), at(3));
    assert!(
        events(&mut hub).is_empty(),
        "closing again, or a stranger, does nothing"
    );
    hub.method_subscribe(B, &d1(), at(4)).unwrap();
    let r = one_request(&mut hub);
    assert_eq!((r.invocation, r.connection), (waiting, B));
    respond(&mut hub, B, &r, 200, "2", at(5));
    assert_eq!(one_completion(&mut hub), (waiting, ok(200, "2")));
    assert_clean(&hub);
}

#[test]
fn during_a_takeover_the_newest_subscriber_gets_new_requests() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let on_a = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let ra = one_request(&mut hub);
    hub.method_subscribe(B, &d1(), at(1)).unwrap();
    assert!(events(&mut hub).is_empty(), "nothing is re-sent");
    assert_eq!(hub.method_target(&d1()), Some(B));
    let on_b = hub
        .invoke_method(&d1(), call("m", "2", 0, 30), at(2))
        .unwrap();
    let rb = one_request(&mut hub);
    assert_eq!(rb.connection, B);

    // The old connection goes: only its own request fails.
    hub.method_unsubscribe(A, at(3));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, on_a);
    assert_eq!(
        outcome.unwrap_err().code(),
        ErrorCode::DeviceConnectionClosedRemotely
    );
    assert_eq!(
        respond(&mut hub, A, &ra, 200, "1", at(4)),
        ResponseDisposition::Late
    );
    assert_eq!(
        respond(&mut hub, B, &rb, 200, "2", at(4)),
        ResponseDisposition::Answered(on_b)
    );
    assert_eq!(one_completion(&mut hub).0, on_b);

    // If the newest goes first, the older subscriber takes over again.
    hub.method_subscribe(A, &d1(), at(5)).unwrap();
    hub.method_subscribe(B, &d1(), at(6)).unwrap();
    hub.method_unsubscribe(B, at(7));
    assert_eq!(hub.method_target(&d1()), Some(A));
    // Re-subscribing moves a connection to the front of the line.
    hub.method_subscribe(B, &d1(), at(8)).unwrap();
    hub.method_subscribe(A, &d1(), at(9)).unwrap();
    assert_eq!(hub.method_target(&d1()), Some(A));
    assert_clean(&hub);
}

#[test]
fn modules_are_separate_identities() {
    let mut hub = hub();
    let m1 = Identity::module("d1", "m1");
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let e = hub
        .invoke_method(&m1, call("m", "1", 0, 30), T0)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotOnline);
    assert!(e.to_string().contains("'d1/m1'"));
    hub.method_subscribe(B, &m1, T0).unwrap();
    let id = hub.invoke_method(&m1, call("m", "1", 0, 30), T0).unwrap();
    let r = one_request(&mut hub);
    assert_eq!((r.connection, &r.identity), (B, &m1));
    assert_eq!(
        respond(&mut hub, A, &r, 200, "1", T0),
        ResponseDisposition::WrongConnection
    );
    assert_eq!(
        respond(&mut hub, B, &r, 200, "1", T0),
        ResponseDisposition::Answered(id)
    );
    let e = hub
        .invoke_method(&Identity::module("ghost", "m1"), call("m", "1", 0, 30), T0)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeviceNotFound);
}

#[test]
fn deleting_the_device_ends_its_calls_with_device_not_found() {
    let mut hub = hub();
    let m1 = Identity::module("d1", "m1");
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let flying = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    let waiting = hub.invoke_method(&m1, call("m", "1", 30, 30), T0).unwrap();
    hub.method_subscribe(B, &Identity::device("d2"), T0)
        .unwrap();
    let other = hub
        .invoke_method(&Identity::device("d2"), call("m", "1", 0, 30), T0)
        .unwrap();
    events(&mut hub);
    hub.delete_device("d1", None, at(1)).unwrap();
    let ended: Vec<_> = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::MethodCompleted {
                invocation,
                outcome,
            } => Some((invocation, outcome.unwrap_err().code())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![
            (flying, ErrorCode::DeviceNotFound),
            (waiting, ErrorCode::DeviceNotFound)
        ]
    );
    assert_eq!(hub.method_target(&d1()), None);
    assert_eq!(hub.pending_methods(), 1, "d2's call is untouched");
    hub.methods.assert_consistent();
    hub.reset();
    let ended: Vec<_> = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::MethodCompleted { invocation, .. } => Some(invocation),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![other]);
    assert_clean(&hub);
    assert_eq!(hub.method_target(&Identity::device("d2")), None);
}

#[test]
fn disabling_the_device_fails_requests_in_flight_and_blocks_subscriptions() {
    let mut hub = hub();
    hub.method_subscribe(A, &d1(), T0).unwrap();
    let flying = hub.invoke_method(&d1(), call("m", "1", 0, 30), T0).unwrap();
    one_request(&mut hub);
    let mut dev = hub.get_device("d1").unwrap();
    dev.status = DeviceStatus::Disabled;
    hub.update_device(dev.clone(), "*", at(1)).unwrap();
    let evs = events(&mut hub);
    assert!(evs.contains(&HubEvent::DeviceGone {
        device_id: "d1".into()
    }));
    assert!(evs.iter().any(|e| matches!(
        e,
        HubEvent::MethodCompleted { invocation, outcome: Err(HubError::DeviceConnectionClosedRemotely { .. }) }
            if *invocation == flying
    )));
    assert_eq!(hub.method_target(&d1()), None);
    let e = hub.method_subscribe(B, &d1(), at(2)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::IotHubUnauthorizedAccess);

    // A disabled device cannot connect, so a call waits out its connect timeout.
    let waiting = hub
        .invoke_method(&d1(), call("m", "1", 10, 30), at(3))
        .unwrap();
    hub.handle_timeout(at(10_003));
    let (ended, outcome) = one_completion(&mut hub);
    assert_eq!(ended, waiting);
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::DeviceNotOnline);
    assert_clean(&hub);
}
