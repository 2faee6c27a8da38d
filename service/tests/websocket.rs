//! AMQP over WebSockets (`AmqpTransport::WebSocket`): C2D messages and their feedback travel
//! through the emulator's HTTPS port, `/$iothub/websocket`, as on networks that only let 443
//! through; a server that does not speak AMQP there is refused with a typed error.

mod common;

use common::*;
use iothub_protocol::AckMode;
use iothub_service::{AmqpTransport, Error};

#[tokio::test]
async fn c2d_and_feedback_travel_over_a_websocket() {
    let emulator = emulator().await;
    emulator.create_device("dev-ws").unwrap();
    let client = builder_for(&emulator, &emulator.service_connection_string())
        .amqp_transport(AmqpTransport::WebSocket)
        .amqp_port(emulator.endpoints().https)
        .build()
        .unwrap();
    let mut feedback = client.feedback().await.unwrap();
    for id in ["ws-1", "ws-2"] {
        client
            .send_c2d("dev-ws", &message(id, AckMode::Full))
            .await
            .unwrap();
        let got = receive_wait(&emulator, "dev-ws").await;
        assert_eq!(got.system.message_id, Some(id.into()));
        complete(&emulator, "dev-ws", &got);
    }
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let batch = next_batch(&mut feedback, 15).await;
        ids.extend(
            batch
                .records()
                .iter()
                .map(|r| r.original_message_id.clone()),
        );
        batch.complete().await.unwrap();
    }
    ids.sort();
    assert_eq!(ids, ["ws-1", "ws-2"]);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_port_without_amqp_over_websockets_is_a_connection_error() {
    let emulator = emulator().await;
    emulator.create_device("dev-ws-refused").unwrap();
    // The MQTT port speaks TLS but no HTTP: the WebSocket upgrade cannot succeed.
    let client = builder_for(&emulator, &emulator.service_connection_string())
        .amqp_transport(AmqpTransport::WebSocket)
        .amqp_port(emulator.endpoints().mqtt)
        .build()
        .unwrap();
    let e = client
        .send_c2d("dev-ws-refused", &message("x", AckMode::None))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e:?}");
    assert!(e.to_string().contains("WebSocket"), "{e}");
    // The cause (what the WebSocket library saw) is kept.
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    client.close().await;
    emulator.shutdown().await;
}

#[test]
fn the_transports_default_ports_are_the_hubs() {
    assert_eq!(AmqpTransport::default(), AmqpTransport::Tls);
    assert_eq!(AmqpTransport::Tls.default_port(), 5671);
    assert_eq!(AmqpTransport::WebSocket.default_port(), 443);
}
