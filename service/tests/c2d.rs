//! Sending C2D messages: every property arrives, every ack mode is carried, and each way a
//! send can fail comes back as its own error.

mod common;

use std::time::Duration;

use common::*;
use iothub_emulator::Emulator;
use iothub_emulator::hub::HubSettings;
use iothub_protocol::{AckMode, Message, MessageId};
use iothub_service::Error;
use time::OffsetDateTime;

#[tokio::test]
async fn every_property_and_each_ack_mode_reach_the_device() {
    let emulator = emulator().await;
    emulator.create_device("dev-props").unwrap();
    let client = client(&emulator);

    let expiry = OffsetDateTime::now_utc() + Duration::from_secs(600);
    let expiry = expiry
        .replace_nanosecond(expiry.millisecond() as u32 * 1_000_000)
        .unwrap();
    let correlation = uuid::Uuid::new_v4();
    for (i, ack) in [
        AckMode::None,
        AckMode::Positive,
        AckMode::Negative,
        AckMode::Full,
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = Message::new(format!("{{\"i\":{i}}}"));
        m.system.message_id = Some(format!("message_{i}").into());
        m.system.correlation_id = Some(if i % 2 == 0 {
            format!("correlation_{i}").into()
        } else {
            MessageId::Uuid(correlation)
        });
        m.system.user_id = Some("backend".into());
        m.system.absolute_expiry = Some(expiry);
        m.system.content_type = Some("application/json".into());
        m.system.content_encoding = Some("utf-8".into());
        m.system.ack = ack;
        m.properties.insert("Property", format!("PropMsg_{i}"));
        m.properties
            .insert("other-prop", "a value with spaces & symbols=/?");
        client.send_c2d("dev-props", &m).await.unwrap();

        let got = receive_wait(&emulator, "dev-props").await;
        assert_eq!(got.body, m.body, "ack {ack:?}");
        let s = &got.system;
        assert_eq!(s.message_id, m.system.message_id);
        assert_eq!(s.correlation_id, m.system.correlation_id);
        assert_eq!(s.user_id.as_deref(), Some("backend"));
        assert_eq!(s.absolute_expiry, Some(expiry));
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
        assert_eq!(s.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(s.ack, ack);
        assert_eq!(
            s.to.as_deref(),
            Some("/devices/dev-props/messages/devicebound")
        );
        assert_eq!(
            got.properties.get("Property"),
            Some(format!("PropMsg_{i}").as_str())
        );
        assert_eq!(
            got.properties.get("other-prop"),
            Some("a value with spaces & symbols=/?")
        );
        assert_eq!(got.properties.get("iothub-ack"), None);
        complete(&emulator, "dev-props", &got);
    }
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_bare_message_and_an_odd_device_id_are_fine() {
    let emulator = emulator().await;
    let id = "odd#1?(x)%20=@$;:";
    emulator.create_device(id).unwrap();
    let client = client(&emulator);
    client.send_c2d(id, &Message::new("")).await.unwrap();
    let got = receive_wait(&emulator, id).await;
    assert!(got.body.is_empty());
    assert_eq!(got.system.message_id, None);
    assert_eq!(got.system.ack, AckMode::None);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn send_errors_are_typed_and_the_link_survives_them() {
    let emulator = start(Emulator::builder().hub_settings(HubSettings {
        queue_depth: 2,
        ..settings()
    }))
    .await;
    emulator.create_device("dev-errors").unwrap();
    let client = client(&emulator);

    // Unknown device.
    let e = client
        .send_c2d("no-such-device", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-device"), "{e}");

    // Queue full (403004).
    for _ in 0..2 {
        client
            .send_c2d("dev-errors", &Message::new("x"))
            .await
            .unwrap();
    }
    let e = client
        .send_c2d("dev-errors", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::DeviceMaximumQueueDepthExceeded { .. }),
        "{e:?}"
    );
    assert_eq!(e.code().map(|c| c.code()), Some(403004));
    drain(&emulator, "dev-errors");

    // Too large (64 KB counts body and properties).
    let e = client
        .send_c2d("dev-errors", &Message::new(vec![b'a'; 64 * 1024 + 1]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { .. }), "{e:?}");

    // Bad message id and bad property name.
    let mut m = Message::new("x");
    m.system.message_id = Some("has/slash".into());
    let e = client.send_c2d("dev-errors", &m).await.unwrap_err();
    assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");
    let mut m = Message::new("x");
    m.properties.insert("bad name", "v");
    let e = client.send_c2d("dev-errors", &m).await.unwrap_err();
    assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");

    // Disabled device.
    emulator
        .hub()
        .run(|h, now| {
            let mut d = h.get_device("dev-errors")?;
            d.status = iothub_protocol::registry::DeviceStatus::Disabled;
            h.update_device(d, "*", now)
        })
        .unwrap();
    let e = client
        .send_c2d("dev-errors", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");

    // After all that, the same connection still sends.
    emulator.create_device("dev-ok").unwrap();
    client
        .send_c2d("dev-ok", &Message::new("ok"))
        .await
        .unwrap();
    assert_eq!(receive_wait(&emulator, "dev-ok").await.body, b"ok");

    client.close().await;
    let e = client
        .send_c2d("dev-ok", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Closed), "{e:?}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized() {
    let emulator = emulator().await;
    emulator.create_device("dev-auth").unwrap();
    let good = emulator.service_connection_string();
    let bad = good
        .split(';')
        .map(|p| {
            if p.starts_with("SharedAccessKey=") {
                "SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(";");
    let client = builder_for(&emulator, &bad).build().unwrap();
    let e = client
        .send_c2d("dev-auth", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    let e = client.feedback().await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    let e = client.get_device("dev-auth").await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");

    // A policy without ServiceConnect cannot send either.
    let registry_read = iothub_emulator::credentials::well_known_policies()
        .into_iter()
        .find(|p| p.name == "registryRead")
        .unwrap();
    let cs = format!(
        "HostName=localhost;SharedAccessKeyName=registryRead;SharedAccessKey={}",
        registry_read.primary_key
    );
    let client = builder_for(&emulator, &cs).build().unwrap();
    let e = client
        .send_c2d("dev-auth", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    // The feedback link is refused: at attach, or (when the refusal comes as a detach right
    // after the attach) at the first receive.
    let e = match client.feedback().await {
        Err(e) => e,
        Ok(mut feedback) => feedback.recv().await.unwrap_err(),
    };
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    // ...but it may read the registry.
    client.get_device("dev-auth").await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_connection_is_reopened_after_the_hub_goes_away() {
    let emulator = emulator().await;
    emulator.create_device("dev-reopen").unwrap();
    let client = client(&emulator);
    client
        .send_c2d("dev-reopen", &Message::new("1"))
        .await
        .unwrap();
    let ports = emulator.endpoints();
    let data_dir = emulator.config().data_dir.clone();
    emulator.shutdown().await;

    let e = client
        .send_c2d("dev-reopen", &Message::new("2"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");

    // A new emulator on the same ports with the same CA: the same client reconnects.
    let emulator = start(Emulator::builder().data_dir(data_dir).ports(
        iothub_emulator::config::Ports {
            amqp: ports.amqp,
            https: ports.https,
            ..iothub_emulator::config::Ports::ephemeral()
        },
    ))
    .await;
    emulator.create_device("dev-reopen").unwrap();
    client
        .send_c2d("dev-reopen", &Message::new("3"))
        .await
        .unwrap();
    assert_eq!(receive_wait(&emulator, "dev-reopen").await.body, b"3");
    client.close().await;
    emulator.shutdown().await;
}

#[test]
fn a_client_built_outside_a_runtime_works_inside_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emulator = rt.block_on(emulator());
    emulator.create_device("dev-outside").unwrap();
    let client = client(&emulator); // no runtime here
    rt.block_on(async {
        client
            .send_c2d("dev-outside", &Message::new("x"))
            .await
            .unwrap();
        assert_eq!(
            client.get_device("dev-outside").await.unwrap().device_id,
            "dev-outside"
        );
        client.close().await;
        emulator.shutdown().await;
    });
}
