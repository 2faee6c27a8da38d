//! Every TLS port sends the server certificate alone, never the emulator's self-signed root
//! (a real hub does not send its root either), and clients that trust the CA still connect.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_port_sends_the_leaf_only_and_trusting_clients_connect() {
    let emu = start().await;
    let e = emu.endpoints();
    for (name, port) in [("https", e.https), ("mqtt", e.mqtt), ("amqp", e.amqp)] {
        // tls_to verifies the chain against the emulator's CA: the handshake is the second half.
        let s = tls_to(&emu, port).await;
        let sent = s.get_ref().1.peer_certificates().expect("certificates");
        assert_eq!(sent.len(), 1, "{name} sent {} certificates", sent.len());
        let (_, leaf) = x509_parser::parse_x509_certificate(&sent[0]).expect("x509");
        assert_ne!(
            leaf.subject().as_raw(),
            leaf.issuer().as_raw(),
            "{name} sent a self-signed certificate"
        );
    }
    within(emu.shutdown()).await;
}
