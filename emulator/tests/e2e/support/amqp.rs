//! The AMQP side of the end-to-end tests: fe2o3-amqp as the client over real TLS, CBS,
//! raw frames, and error helpers.

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::{DetachError, LinkStateError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_emulator::RunningEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{tls_to, within};

/// A TLS stream to the AMQP port, nothing sent yet.
pub async fn tls(emu: &RunningEmulator) -> TlsStream<TcpStream> {
    tls_to(emu, emu.endpoints().amqp).await
}

/// An AMQP connection over TLS, optionally with a SASL profile.
pub async fn connect(emu: &RunningEmulator, sasl: Option<SaslProfile>) -> ConnectionHandle<()> {
    let stream = tls(emu).await;
    let mut builder = Connection::builder()
        .container_id("rust-test")
        .hostname("localhost");
    if let Some(profile) = sasl {
        builder = builder.sasl_profile(profile);
    }
    within(builder.open_with_stream(stream))
        .await
        .expect("AMQP open")
}

/// A connection (no SASL, as Node and C# do) with one session.
pub async fn session(emu: &RunningEmulator) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut c = connect(emu, None).await;
    let s = within(Session::begin(&mut c)).await.expect("session");
    (c, s)
}

/// The `$cbs` link pair of a client.
pub struct Cbs {
    pub sender: Sender,
    pub receiver: Receiver,
}

impl Cbs {
    /// Attaches the request and reply links.
    pub async fn attach(session: &mut SessionHandle<()>) -> Cbs {
        let sender = within(Sender::attach(session, "cbs-sender", "$cbs"))
            .await
            .expect("cbs sender");
        let receiver = within(
            Receiver::builder()
                .name("cbs-receiver")
                .source("$cbs")
                .target("cbs")
                .attach(session),
        )
        .await
        .expect("cbs receiver");
        Cbs { sender, receiver }
    }

    /// Sends a put-token with this message id; returns the reply.
    pub async fn put_token(&mut self, id: MessageId, token: &str) -> Message<Body<Value>> {
        self.put_token_for(id, token, "localhost").await
    }

    /// Sends a put-token for `audience` (its `name`); returns the reply.
    pub async fn put_token_for(
        &mut self,
        id: MessageId,
        token: &str,
        audience: &str,
    ) -> Message<Body<Value>> {
        let request = Message::builder()
            .properties(Properties {
                message_id: Some(id),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", audience)
                    .build(),
            )
            .value(token.to_owned())
            .build();
        let outcome = within(self.sender.send(request)).await.expect("sent");
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        let reply: Delivery<Body<Value>> = within(self.receiver.recv()).await.expect("cbs reply");
        within(self.receiver.accept(&reply)).await.expect("accept");
        reply.into_message()
    }
}

/// The `status-code` of a CBS reply, which must be an AMQP int.
pub fn status_code(reply: &Message<Body<Value>>) -> i32 {
    let app = reply.application_properties.as_ref().expect("app props");
    match app.0.get("status-code") {
        Some(SimpleValue::Int(code)) => *code,
        other => panic!("status-code must be an int, got {other:?}"),
    }
}

/// A string application property of a reply.
pub fn app_string(reply: &Message<Body<Value>>, name: &str) -> Option<String> {
    match reply.application_properties.as_ref()?.0.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A session authorized with `token` through CBS (ulong message id, as uamqp and fe2o3 use).
pub async fn authorized(
    emu: &RunningEmulator,
    token: &str,
) -> (ConnectionHandle<()>, SessionHandle<()>, Cbs) {
    let (c, mut s) = session(emu).await;
    let mut cbs = Cbs::attach(&mut s).await;
    let reply = cbs.put_token(MessageId::Ulong(1), token).await;
    assert_eq!(status_code(&reply), 200);
    (c, s, cbs)
}

/// The C2D `to` for a device.
pub fn to(device: &str) -> String {
    format!("/devices/{device}/messages/devicebound")
}

/// The condition of an AMQP error as text.
pub fn condition(e: &AmqpError) -> String {
    match &e.condition {
        ErrorCondition::AmqpError(a) => Symbol::from(a).0,
        ErrorCondition::LinkError(l) => Symbol::from(l).0,
        ErrorCondition::ConnectionError(c) => Symbol::from(c).0,
        ErrorCondition::SessionError(s) => Symbol::from(s).0,
        ErrorCondition::Custom(s) => s.0.clone(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// The condition a delivery was rejected with (panics on any other outcome).
pub fn rejected_with(outcome: &Outcome) -> (String, String) {
    match outcome {
        Outcome::Rejected(r) => {
            let e = r.error.as_ref().expect("rejection carries an error");
            (condition(e), e.description.clone().unwrap_or_default())
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Waits for the hub to detach `sender` with an error; returns the condition.
pub async fn sender_closed_with(sender: &mut Sender) -> String {
    match within(sender.on_detach()).await {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            condition(&e)
        }
        other => panic!("expected a detach with an error, got {other:?}"),
    }
}

/// Waits for the hub to detach `receiver` with an error; returns the condition.
pub async fn receiver_closed_with(receiver: &mut Receiver) -> String {
    match within(receiver.recv::<Body<Value>>()).await {
        Err(RecvError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        )) => condition(&e),
        other => panic!("expected a detach with an error, got {other:?}"),
    }
}

/// Closes the client connection, then the emulator.
pub async fn finish(mut c: ConnectionHandle<()>, emu: RunningEmulator) {
    let _ = within(c.close()).await;
    within(emu.shutdown()).await;
}

/// The raw SASL handshake offering only `MSSBCBS`, as the C SDK does: returns the stream after
/// the SASL outcome, ready for the AMQP header, and the mechanisms the server offered.
pub async fn sasl_mssbcbs(emu: &RunningEmulator) -> (TlsStream<TcpStream>, Vec<String>) {
    use fe2o3_amqp::types::primitives::Binary;
    use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
    let mut s = tls(emu).await;
    s.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    within(s.read_exact(&mut header)).await.unwrap();
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    let mechanisms: SaslMechanisms = serde_amqp::from_slice(&read_frame(&mut s).await).unwrap();
    let offered = mechanisms
        .sasl_server_mechanisms
        .0
        .iter()
        .map(|m| m.0.clone())
        .collect();
    let init = SaslInit {
        mechanism: Symbol::from("MSSBCBS"),
        initial_response: Some(Binary::from(Vec::new())),
        hostname: Some("localhost".into()),
    };
    write_frame(&mut s, 1, &serde_amqp::to_vec(&init).unwrap()).await;
    let outcome: SaslOutcome = serde_amqp::from_slice(&read_frame(&mut s).await).unwrap();
    assert_eq!(outcome.code, SaslCode::Ok);
    (s, offered)
}

/// Reads one frame and returns its body.
pub async fn read_frame(s: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut size = [0u8; 4];
    within(s.read_exact(&mut size)).await.unwrap();
    let size = u32::from_be_bytes(size) as usize;
    let mut rest = vec![0u8; size - 4];
    within(s.read_exact(&mut rest)).await.unwrap();
    let doff = rest[0] as usize * 4;
    rest[doff - 4..].to_vec()
}

/// Writes one frame of `frame_type` on channel 0.
pub async fn write_frame(s: &mut TlsStream<TcpStream>, frame_type: u8, body: &[u8]) {
    let size = (8 + body.len()) as u32;
    let mut f = size.to_be_bytes().to_vec();
    f.extend_from_slice(&[2, frame_type, 0, 0]);
    f.extend_from_slice(body);
    s.write_all(&f).await.unwrap();
    s.flush().await.unwrap();
}
