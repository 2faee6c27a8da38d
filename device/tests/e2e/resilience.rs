//! Token renewal, reconnection, refusals and shutdown.

use std::collections::BTreeSet;
use std::time::Duration;

use iothub_device::{
    AckMode, CompletionMode, ConnectionState, DisconnectReason, Error, ErrorCode, Message,
    Transport,
};
use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::sas;
use tokio::time::Instant;

use crate::common::*;

fn key_of(cs: &str) -> &str {
    cs.split("SharedAccessKey=").nth(1).expect("a key")
}

fn is_renewal(s: &ConnectionState) -> bool {
    matches!(
        s,
        ConnectionState::Disconnected {
            reason: DisconnectReason::TokenRenewal,
            retrying: true
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_renewal_keeps_the_device_connected_and_receiving() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    // Tokens live 2-3 s and are replaced 1 s before they expire.
    let client = builder(&emu, &cs, Transport::Mqtt)
        .token_lifetime(Duration::from_secs(3))
        .token_renewal_margin(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let mut events = client.connection_events();

    let sender = {
        let hub = emu.hub().clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let mut m = Message::new(format!("n{i}"));
                m.system.message_id = Some(format!("m{i}").into());
                hub.run(|h, now| h.enqueue_c2d("d1", m, now)).unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < 10 {
        let m = tokio::time::timeout_at(deadline, client.recv())
            .await
            .unwrap_or_else(|_| panic!("only got {got:?}"))
            .unwrap();
        got.insert(mid(&m));
    }
    sender.await.unwrap();
    let want: BTreeSet<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);

    let seen: Vec<ConnectionState> = std::iter::from_fn(|| events.try_recv()).collect();
    let renewals = seen.iter().filter(|s| is_renewal(s)).count();
    assert!(renewals >= 2, "expected two renewals in ~5 s, saw {seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(
            s,
            ConnectionState::Disconnected {
                reason: DisconnectReason::ConnectionLost { .. },
                ..
            }
        )),
        "the hub never dropped the device: {seen:?}"
    );
    // Telemetry still flows on the renewed connection.
    client.send_event(Message::new("after")).await.unwrap();
    let state = client.connection_state();
    assert!(state.borrow().is_connected());

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_forced_disconnect_without_losing_messages() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Mqtt).await;
    let mut events = client.connection_events();
    for i in 0..3 {
        enqueue(&emu, "d1", c2d(&format!("a{i}"), AckMode::Positive));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(mid(&recv(&client).await));
    }
    until("the first three are completed", || {
        queue(&emu, "d1").is_empty()
    })
    .await;

    assert_eq!(emu.hub().disconnect_device("d1"), 1);
    // Sent while the device is away: queued by the hub, delivered after the reconnect.
    for i in 0..3 {
        enqueue(&emu, "d1", c2d(&format!("b{i}"), AckMode::Positive));
    }
    // Telemetry sent while reconnecting waits for the connection.
    let send = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(Message::new("during")).await })
    };
    let seen = events_until(&mut events, |s| s.is_connected()).await;
    assert!(
        seen.iter().any(|s| matches!(
            s,
            ConnectionState::Disconnected {
                reason: DisconnectReason::ConnectionLost { .. },
                retrying: true
            }
        )),
        "{seen:?}"
    );
    for i in 3..6 {
        enqueue(&emu, "d1", c2d(&format!("c{i}"), AckMode::Positive));
    }
    for _ in 0..6 {
        got.push(mid(&recv(&client).await));
    }
    assert_eq!(
        got,
        ["a0", "a1", "a2", "b0", "b1", "b2", "c3", "c4", "c5"],
        "every message once, in order"
    );
    send.await
        .unwrap()
        .expect("telemetry sent after the reconnect");
    let fb = feedback(&emu, 9).await;
    assert!(
        fb.iter()
            .all(|r| r.status_code == iothub_protocol::FeedbackStatus::Success)
    );
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;
    assert!(
        emu.hub()
            .read(|h| h.d2c_messages("d1"))
            .unwrap()
            .iter()
            .any(|r| r.message().body == b"during")
    );

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncompleted_message_is_delivered_again_after_a_reconnect() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Mqtt)
        .completion_mode(CompletionMode::Manual)
        .connect()
        .await
        .unwrap();
    let mut events = client.connection_events();
    enqueue(&emu, "d1", c2d("m1", AckMode::Full));
    let first = recv(&client).await;
    assert_eq!(mid(&first), "m1");

    emu.hub().disconnect_device("d1");
    events_until(&mut events, |s| s.is_connected()).await;
    // The old delivery can no longer be completed; the hub sends the message again.
    let err = first.complete().await.unwrap_err();
    assert!(matches!(err, Error::DeviceMessageLockLost { .. }), "{err}");
    let again = recv(&client).await;
    assert_eq!(mid(&again), "m1");
    again.complete().await.unwrap();
    let fb = feedback(&emu, 1).await;
    assert_eq!(fb[0].original_message_id, "m1");
    until("the queue is empty", || queue(&emu, "d1").is_empty()).await;

    client.close().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_unknown_device_are_unauthorized() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let wrong = cs.replace(key_of(&cs), "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=");
    let unknown = cs.replace("DeviceId=d1", "DeviceId=nobody");

    for transport in [Transport::Mqtt, Transport::MqttWebSocket] {
        for cs in [&wrong, &unknown] {
            let err = builder(&emu, cs, transport).connect().await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Unauthorized {
                        code: ErrorCode::IotHubUnauthorizedAccess,
                        ..
                    }
                ),
                "{transport}: {err}"
            );
            assert!(err.is_fatal());
            assert!(err.to_string().contains("DeviceId"), "{err}");
        }
    }

    // HTTPS checks credentials with the first request; the client then stops.
    for cs in [&wrong, &unknown] {
        let client = builder(&emu, cs, Transport::Https).connect().await.unwrap();
        let err = client.send_event(Message::new("x")).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
        assert_eq!(err.code(), Some(ErrorCode::IotHubUnauthorizedAccess));
        assert!(matches!(
            client.recv().await,
            Err(Error::Unauthorized { .. })
        ));
        assert!(client.connection_state().borrow().is_closed());
        client.close().await;
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_device_is_refused_as_disabled() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    emu.hub()
        .run(|h, now| {
            let mut d = h.get_device("d1")?;
            d.status = DeviceStatus::Disabled;
            h.update_device(d, "*", now)
        })
        .unwrap();
    let err = builder(&emu, &cs, Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DeviceDisabled {
            device_id: "d1".into()
        }
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_made_token_is_used_until_it_expires() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let key = key_of(&cs).to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with_token = |expiry: u64| {
        let token = sas::build_token("localhost/devices/d1", &key, None, expiry).unwrap();
        format!("HostName=localhost;DeviceId=d1;SharedAccessSignature={token}")
    };

    let err = builder(&emu, &with_token(now - 10), Transport::Mqtt)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::TokenExpired {
            expired_at: now - 10
        }
    );
    assert!(err.to_string().contains("SharedAccessKey"), "{err}");

    // A token valid for 3 more seconds: usable, then reported expired.
    let client = builder(&emu, &with_token(now + 3), Transport::Mqtt)
        .connect()
        .await
        .unwrap();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    assert_eq!(mid(&recv(&client).await), "m1");
    let mut state = client.connection_state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.is_closed()))
        .await
        .expect("stops when the token expires")
        .unwrap();
    assert_eq!(
        client.recv().await.unwrap_err(),
        Error::TokenExpired {
            expired_at: now + 3
        }
    );
    assert_eq!(
        client.send_event(Message::new("x")).await.unwrap_err(),
        Error::TokenExpired {
            expired_at: now + 3
        }
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_disconnects_and_ends_every_operation() {
    let emu = start().await;
    let client = device(&emu, "d1", Transport::Mqtt).await;
    let mut messages = client.messages();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    assert_eq!(mid(&messages.next().await.unwrap()), "m1");
    until("the device is connected", || {
        emu.hub().connection_count() == 1
    })
    .await;

    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.recv().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.close().await;
    assert_eq!(waiting.await.unwrap().unwrap_err(), Error::Closed);
    assert!(messages.next().await.is_none());
    assert_eq!(
        client.send_event(Message::new("x")).await.unwrap_err(),
        Error::Closed
    );
    assert!(matches!(
        *client.connection_state().borrow(),
        ConnectionState::Disconnected {
            reason: DisconnectReason::Closed,
            retrying: false
        }
    ));
    until("the hub saw the device leave", || {
        emu.hub().connection_count() == 0
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_again_when_the_hub_lost_the_session() {
    let emu = start().await;
    let cs = emu.create_device("d1").unwrap();
    let client = builder(&emu, &cs, Transport::Mqtt)
        .reconnect_backoff(Duration::from_millis(400), Duration::from_millis(800))
        .connect()
        .await
        .unwrap();
    let mut events = client.connection_events();
    enqueue(&emu, "d1", c2d("m1", AckMode::None));
    assert_eq!(mid(&recv(&client).await), "m1");
    until("m1 is completed", || queue(&emu, "d1").is_empty()).await;

    // Drop the connection, then make the hub forget the session (and so the subscription)
    // before the device is back: its next CONNACK says session_present = 0.
    emu.hub().disconnect_device("d1");
    {
        let mut slot = emu.mqtt_sessions().acquire("d1").await;
        assert!(slot.is_some(), "the session was persisted");
        *slot = None;
    }
    events_until(&mut events, |s| s.is_connected()).await;
    enqueue(&emu, "d1", c2d("m2", AckMode::None));
    assert_eq!(mid(&recv(&client).await), "m2");

    client.close().await;
    emu.shutdown().await;
}
