//! MQTT over WebSockets on the HTTPS port (`wss://.../$iothub/websocket`), end to end with
//! rumqttc: this exercises the WebSocket upgrade and the byte-stream adapter with a real client.

use std::sync::Arc;
use std::time::Duration;

use crate::support::http::start_http;
use crate::support::{owner_token, policy_token};
use iothub_emulator::credentials::SERVICE;
use iothub_protocol::sas::build_token;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn mqtt_over_websocket_receives_c2d_and_sends_telemetry() {
    let (emu, c) = start_http().await;
    emu.create_device("d1").unwrap();
    let key = emu
        .hub()
        .read(|h| h.get_device("d1"))
        .unwrap()
        .primary_key()
        .unwrap()
        .to_owned();
    let token = build_token(
        "localhost/devices/d1",
        &key,
        None,
        emu.context().now_unix() + 3600,
    )
    .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let port = c.https_port;
    let mut o = MqttOptions::new(
        "d1",
        format!("wss://localhost:{port}/$iothub/websocket"),
        port,
    );
    o.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    o.set_credentials("localhost/d1/?api-version=2021-04-12", token);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(512 * 1024, 512 * 1024);
    let (client, mut events) = AsyncClient::new(o, 16);

    let mut next = async || {
        loop {
            match tokio::time::timeout(WAIT, events.poll()).await {
                Ok(Ok(Event::Incoming(p))) => return p,
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(e)) => panic!("MQTT over WebSocket failed: {e}"),
                Err(_) => panic!("timed out"),
            }
        }
    };
    assert!(matches!(next().await, Incoming::ConnAck(_)));
    client
        .subscribe("devices/d1/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    while !matches!(next().await, Incoming::SubAck(_)) {}

    // A C2D message sent over HTTPS arrives over the WebSocket; its automatic PUBACK completes
    // it, which shows as Success feedback.
    let svc = policy_token(&emu, SERVICE);
    let r = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .header("iothub-messageid", "m1")
        .header("iothub-ack", "positive")
        .body(vec![b'z'; 100_000])
        .send()
        .await;
    assert_eq!(r.status, 413, "C2D over 64 KB is refused");
    let r = c
        .post("/_emulator/devices/d1/messages")
        .auth(&svc)
        .header("iothub-messageid", "m1")
        .header("iothub-ack", "positive")
        .body(vec![b'z'; 60_000])
        .send()
        .await;
    assert_eq!(r.status, 200);
    let publish = loop {
        if let Incoming::Publish(p) = next().await {
            break p;
        }
    };
    assert!(
        publish
            .topic
            .starts_with("devices/d1/messages/devicebound/")
    );
    assert_eq!(publish.payload.len(), 60_000);

    client
        .publish(
            "devices/d1/messages/events/k=v",
            QoS::AtLeastOnce,
            false,
            "from ws",
        )
        .await
        .unwrap();
    while !matches!(next().await, Incoming::PubAck(_)) {}

    let fb = c
        .get("/messages/serviceBound/feedback")
        .auth(&svc)
        .send()
        .await;
    assert_eq!(
        fb.status, 200,
        "PUBACK over the WebSocket completed the message"
    );
    assert_eq!(fb.json()[0]["statusCode"], "Success");
    let d2c = c
        .get("/_emulator/devices/d1/d2c")
        .auth(&owner_token(&emu))
        .send()
        .await;
    assert_eq!(d2c.json()[0]["bodyText"], "from ws");

    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .expect("shutdown ends the WebSocket session");
}
