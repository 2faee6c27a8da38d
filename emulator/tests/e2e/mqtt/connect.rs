//! MQTT over TLS, connection level: CONNACK codes, ACL, takeover, keep-alive.

use std::time::Duration;

use crate::support::mqtt::*;
use crate::support::*;
use rumqttc::{ConnectReturnCode, ConnectionError, Incoming, QoS, SubscribeReasonCode};

async fn refused_with(opts: rumqttc::MqttOptions) -> ConnectReturnCode {
    match try_connect(opts).await {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(e) => panic!("expected a CONNACK refusal, got {e}"),
        Ok(_) => panic!("expected a CONNACK refusal, got success"),
    }
}

#[tokio::test]
async fn connect_failures_get_their_codes() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let other_key = create_device(&emu, "dev2");
    let disabled_key = create_device(&emu, "off");
    disable_device(&emu, "off");
    let now = emu.context().now_unix();

    let ok = connect(device_options(&emu, "dev1", &key, true)).await;
    assert_eq!(ok.connack.code, ConnectReturnCode::Success);
    drop(ok);

    let cases = [
        (
            "wrong key",
            options(
                &emu,
                "dev1",
                &username("dev1"),
                &device_token(&emu, "dev1", &other_key),
                true,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "expired token",
            options(
                &emu,
                "dev1",
                &username("dev1"),
                &device_token_until("dev1", &key, now - 10),
                true,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "another device's token",
            options(
                &emu,
                "dev1",
                &username("dev1"),
                &device_token(&emu, "dev2", &other_key),
                true,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "unknown device",
            options(
                &emu,
                "ghost",
                &username("ghost"),
                &device_token(&emu, "ghost", &key),
                true,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "disabled device",
            device_options(&emu, "off", &disabled_key, true),
            ConnectReturnCode::ServiceUnavailable,
        ),
        (
            "user name for another device",
            options(
                &emu,
                "dev1",
                &username("dev2"),
                &device_token(&emu, "dev1", &key),
                true,
            ),
            ConnectReturnCode::BadClientId,
        ),
        (
            "malformed user name",
            options(
                &emu,
                "dev1",
                "no-slash",
                &device_token(&emu, "dev1", &key),
                true,
            ),
            ConnectReturnCode::BadClientId,
        ),
        (
            "module client id with the device's token",
            options(
                &emu,
                "dev1/mod1",
                "localhost/dev1/mod1/?api-version=2021-04-12",
                &device_token(&emu, "dev1", &key),
                true,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "client id that is neither device nor module",
            options(
                &emu,
                "dev1/mod1/x",
                "localhost/dev1/mod1/x/?api-version=2021-04-12",
                &device_token(&emu, "dev1", &key),
                true,
            ),
            ConnectReturnCode::BadClientId,
        ),
        (
            "missing password",
            options(&emu, "dev1", &username("dev1"), "", true),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "garbage password",
            options(&emu, "dev1", &username("dev1"), "not a token", true),
            ConnectReturnCode::NotAuthorized,
        ),
    ];
    for (what, opts, code) in cases {
        assert_eq!(refused_with(opts).await, code, "{what}");
    }
    assert_eq!(emu.hub().connection_count(), 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn policy_tokens_with_device_connect_are_accepted() {
    let emu = start().await;
    create_device(&emu, "dev1");
    let policy = emu
        .context()
        .auth
        .policy("device")
        .expect("device policy")
        .clone();
    let sas = iothub_protocol::sas::build_token(
        "localhost/devices/dev1",
        &policy.primary_key,
        Some(&policy.name),
        emu.context().now_unix() + 600,
    )
    .expect("token");
    let mut d = connect(options(&emu, "dev1", "localhost/dev1", &sas, true)).await;
    assert_eq!(d.connack.code, ConnectReturnCode::Success);
    d.client.disconnect().await.expect("disconnect");
    let _ = d.idle_for(Duration::from_millis(100)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn acl_denies_other_devices_topics() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    create_device(&emu, "dev2");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;

    let filters = [
        ("devices/dev1/messages/devicebound/#", QoS::ExactlyOnce),
        ("devices/dev2/messages/devicebound/#", QoS::AtLeastOnce),
        ("$iothub/twin/res/#", QoS::AtMostOnce),
        ("$iothub/twin/PATCH/properties/desired/#", QoS::AtLeastOnce),
        ("$iothub/methods/POST/#", QoS::AtLeastOnce),
        ("devices/+/messages/devicebound/#", QoS::AtLeastOnce),
        ("#", QoS::AtLeastOnce),
    ];
    d.client
        .subscribe_many(
            filters
                .iter()
                .map(|(f, q)| rumqttc::SubscribeFilter::new(f.to_string(), *q)),
        )
        .await
        .expect("subscribe queued");
    let codes = d
        .until(|p| match p {
            Incoming::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );

    // A twin request is accepted and dropped; the connection stays up.
    d.client
        .publish("$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, false, "")
        .await
        .expect("publish queued");
    assert!(d.idle_for(Duration::from_millis(200)).await.is_none());

    // Publishing on another device's topic closes the connection.
    d.client
        .publish(
            "devices/dev2/messages/events/",
            QoS::AtLeastOnce,
            false,
            "x",
        )
        .await
        .expect("publish queued");
    d.until_closed().await;
    wait_until("connection gone", || emu.hub().connection_count() == 0).await;
    assert!(
        emu.hub()
            .read(|h| h.d2c_messages("dev2").expect("dev2"))
            .is_empty()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_closes_the_first() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut first = connect(device_options(&emu, "dev1", &key, true)).await;
    let mut second = connect(device_options(&emu, "dev1", &key, true)).await;
    assert_eq!(second.connack.code, ConnectReturnCode::Success);
    first.until_closed().await;
    assert!(second.idle_for(Duration::from_millis(200)).await.is_none());
    assert_eq!(emu.hub().connection_count(), 1);
    let connected = emu
        .hub()
        .read(|h| h.get_device("dev1").expect("dev1").connection_state);
    assert_eq!(
        connected,
        iothub_protocol::registry::ConnectionState::Connected
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn force_disconnect_closes_the_connection() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut d = connect(device_options(&emu, "dev1", &key, true)).await;
    assert_eq!(emu.hub().disconnect_device("dev1"), 1);
    d.until_closed().await;
    wait_until("connection gone", || emu.hub().connection_count() == 0).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn keep_alive_timeout_closes_a_silent_client() {
    let emu = start().await;
    let key = create_device(&emu, "dev1");
    let mut opts = device_options(&emu, "dev1", &key, true);
    opts.set_keep_alive(Duration::from_secs(1));
    let d = connect(opts).await;
    assert_eq!(emu.hub().connection_count(), 1);
    // Stop polling: rumqttc sends no PINGREQ, so the server hears nothing for 1.5 s.
    let started = tokio::time::Instant::now();
    wait_until("keep-alive timeout", || emu.hub().connection_count() == 0).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1200), "{waited:?}");
    drop(d);
    emu.shutdown().await;
}
