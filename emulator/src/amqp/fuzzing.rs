//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the AMQP code that
//! reads peer bytes before anything is authenticated, and the readers of the messages a peer
//! sends on its links.

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::performatives::{Attach, Performative};
use fe2o3_amqp_types::primitives::Value;
use fe2o3_amqp_types::sasl::SaslInit;

use super::connection::Conn;
use super::convert::{self, Incoming};
use super::frame_guard::{self, ReadGuard};
use super::sasl::HubSasl;
use super::stream::decode_frame;
use super::tokens::Tokens;
use super::{cbs, eventhubs, methods, service, twin};
use crate::context::Context;
use crate::hub::{Identity, Origin};

/// The frame guard over `data`, delivered in two reads split where the first byte says (that
/// byte is also the stream's first: a seed starts with `AMQP` and splits after 65 bytes): what
/// it forwards is decoded as fe2o3 would, and the emulator's answers are built.
pub fn frames(data: &[u8]) {
    let _ = guard_verdict(data);
}

/// [`frames`], returning why the guard refused the bytes (`None`: it forwarded them all).
fn guard_verdict(data: &[u8]) -> Option<frame_guard::Violation> {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut guard = ReadGuard::default();
    guard.push(&data[..cut]);
    guard.push(&data[cut..]);
    let mut rest = &guard.ready[..];
    while rest.first() == Some(&b'A') && rest.len() >= 8 {
        rest = &rest[8..];
    }
    let mut deliveries = Deliveries::default();
    while let Some(size) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
    {
        let Some(frame) = rest.get(..size) else { break };
        assert!(size >= 8, "the guard forwarded a {size}-byte frame");
        if let Some((channel, performative, payload)) = decode_frame(frame) {
            deliveries.take(channel, &performative, payload);
        }
        let _ = frame_guard::restore_link_name(frame);
        fe2o3_decodes(frame);
        rest = &rest[size..];
    }
    if let Some(v) = &guard.violation {
        let _ = frame_guard::refusal(v, data.len().is_multiple_of(2), "fuzz");
    }
    guard.violation
}

/// Messages as fe2o3's receiver links join and decode them from the forwarded frames, on the
/// handles fe2o3 knows (it drops transfers for others unread).
#[derive(Default)]
struct Deliveries(std::collections::HashMap<(u16, u32), Vec<u8>>);

impl Deliveries {
    fn take(&mut self, channel: u16, performative: &Performative, payload: &[u8]) {
        match performative {
            Performative::Attach(a) => {
                attach_readers(a);
                self.0.insert((channel, a.handle.0), Vec::new());
            }
            Performative::Detach(d) => {
                self.0.remove(&(channel, d.handle.0));
            }
            Performative::End(_) => self.0.retain(|(c, _), _| *c != channel),
            Performative::Transfer(t) => {
                let Some(joined) = self.0.get_mut(&(channel, t.handle.0)) else {
                    return;
                };
                if t.aborted {
                    joined.clear();
                    return;
                }
                joined.extend_from_slice(payload);
                if !t.more {
                    let reader = serde_amqp::read::IoReader::new(bytes::Buf::reader(&joined[..]));
                    let _ = Body::<Value>::decode_message_from_reader(reader);
                    joined.clear();
                }
            }
            _ => {}
        }
    }
}

/// What the emulator reads from a peer's attach before answering it: the node its address
/// names, and for an Event Hubs receiver the selector filter's start position and the owner
/// level.
fn attach_readers(attach: &Attach) {
    if let Some(address) = super::connection::address_of(attach) {
        addresses_in(&address);
    }
    let _ =
        super::eventhubs::receiver::request(attach, String::new(), String::new(), String::new());
}

/// Link addresses (IoT Hub and Event Hubs nodes, a C2D message's `to`) and Event Hubs selector
/// filters, over arbitrary text: what an attach's address and filter reach.
pub fn addresses(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        addresses_in(text);
        let _ = iothub_protocol::event_position::EventPosition::parse_selector(text);
    }
}

fn addresses_in(text: &str) {
    let _ = super::address::parse_node(text);
    let _ = super::address::c2d_target(Some(text));
    let _ = super::eventhubs::address::parse(text);
}

/// A forwarded frame through fe2o3's own decoders, as its transport hands it over (without
/// the size field): whatever the guard lets through must be safe for them too.
fn fe2o3_decodes(frame: &[u8]) {
    use tokio_util::codec::Decoder;
    let mut src = bytes::BytesMut::from(&frame[4..]);
    if frame[5] == 1 {
        let _ = fe2o3_amqp::frames::sasl::FrameCodec {}.decode(&mut src);
    } else {
        let _ = fe2o3_amqp::frames::amqp::FrameDecoder {}.decode(&mut src);
    }
}

/// A SASL init frame body as the emulator's SASL server answers it, once the frame guard
/// let it through.
pub fn sasl(data: &[u8]) {
    // The frame guard refuses SASL frames that are not whole, well-formed values before fe2o3
    // decodes them.
    if super::encoding::check_values(data).is_err() {
        return;
    }
    let Ok(init) = serde_amqp::from_slice::<SaslInit>(data) else {
        return;
    };
    let ctx = Context::for_tests(crate::hub::HubSettings::default());
    let mut sasl = HubSasl::new(ctx, Tokens::default());
    let _ = sasl.on_init(init);
}

/// An AMQP message (the payload of a delivery, as fe2o3's receiver links decode it) through
/// every reader of the emulator's receiver links, on a connection that holds an `iothubowner`
/// token, against a hub with device `d0`: a C2D send, telemetry, a twin request, a method
/// answer, a CBS put-token and an Event Hubs `$management` request.
pub fn messages(data: &[u8]) {
    let _ = message_outcomes(data);
}

/// What each reader of [`messages`] answered (`None`: `data` is no AMQP message), for the seed
/// tests: whether the hub took the C2D message, the telemetry and the method answer, and the
/// status of the twin, put-token and management answers.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the seed tests
struct Outcomes {
    c2d: bool,
    telemetry: bool,
    twin: Option<u16>,
    method_answer: bool,
    put_token: Option<i32>,
    management: Option<i32>,
}

fn message_outcomes(data: &[u8]) -> Option<Outcomes> {
    // The frame guard checks a delivery's joined payload before fe2o3 decodes it (serde_amqp
    // allocates whatever length a value claims).
    super::encoding::check_values(data).ok()?;
    let reader = serde_amqp::read::IoReader::new(bytes::Buf::reader(data));
    let m: Incoming = Body::<Value>::decode_message_from_reader(reader).ok()?;
    let conn = fuzz_conn();
    let hub = &conn.ctx.hub;
    let c2d = service::enqueue(hub, vec![m.clone()])
        .into_iter()
        .all(|r| r.is_ok());
    let telemetry = convert::to_hub(m.clone())
        .and_then(|t| hub.run(|hub, now| hub.send_telemetry(&Origin::device("d0"), t, now)))
        .is_ok();
    let twin = match twin::parse_request(&m) {
        Ok(twin::Request::Twin(op)) => {
            iothub_protocol::amqp::body_bytes(&m.body)
                .ok()
                .map(|payload| {
                    hub.device_twin_request(&Identity::device("d0"), op, &payload)
                        .status
                })
        }
        _ => None,
    };
    let method_answer = methods::answer(&conn, "d0", m.clone()).is_ok();
    let put_token = status_code(&cbs::answer(&conn, m.clone()));
    let management = status_code(&eventhubs::management::answer(&conn, &m));
    Some(Outcomes {
        c2d,
        telemetry,
        twin,
        method_answer,
        put_token,
        management,
    })
}

/// A connection's shared state around a test context with device `d0`, holding a hub-wide
/// `iothubowner` token, so the fuzzer reaches what follows authorization.
fn fuzz_conn() -> Conn {
    let ctx = Context::for_tests(crate::hub::HubSettings::default());
    let _ = ctx
        .hub
        .run(|hub, now| hub.create_device(iothub_protocol::registry::Device::new("d0"), now));
    let tokens = Tokens::default();
    if let Some(owner) = crate::credentials::well_known_policies().first()
        && let Ok(token) = iothub_protocol::sas::build_token(
            &ctx.host_name,
            &owner.primary_key,
            Some(&owner.name),
            FUZZ_TOKEN_EXPIRY,
        )
    {
        tokens.put(&token, Vec::new());
    }
    Conn {
        ctx,
        peer: "fuzz".to_owned(),
        tokens,
        cancel: tokio_util::sync::CancellationToken::new(),
        cbs: Default::default(),
        twins: Default::default(),
        methods: Default::default(),
        links: Default::default(),
        management: Default::default(),
    }
}

/// 2096: far past any clock a test or the fuzzer runs on.
const FUZZ_TOKEN_EXPIRY: u64 = 4_000_000_000;

/// The `status-code` application property of a reply.
fn status_code(reply: &super::replies::Reply) -> Option<i32> {
    use fe2o3_amqp_types::primitives::SimpleValue;
    match reply
        .application_properties
        .as_ref()?
        .0
        .get("status-code")?
    {
        SimpleValue::Int(s) => Some(*s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::frame_guard::Violation;

    fn seed(name: &str) -> Vec<u8> {
        crate::fuzzing::seed("amqp_frames", name)
    }

    /// The hand-written seeds are whole byte streams (the first byte is both the split point
    /// and the stream's first byte): each must reach the check it is named for, not die on its
    /// first four bytes, or the fuzzer and the replay test start from nothing.
    #[test]
    fn the_hand_written_seeds_reach_what_they_are_named_for() {
        let refused = |name: &str| super::guard_verdict(&seed(name));
        for name in ["open", "split", "sasl", "eventhubs_attach"] {
            assert_eq!(refused(name), None, "{name}");
        }
        let text = |v: Option<Violation>| match v {
            Some(Violation::Framing(t) | Violation::NotAllowed(t)) => t,
            other => panic!("unexpected verdict {other:?}"),
        };
        assert!(text(refused("channel")).contains("channel 300"));
        assert!(text(refused("short_frame")).contains("frame size 5"));
        assert!(text(refused("small_open")).contains("max-frame-size 511"));
    }

    /// The Event Hubs seed's attach carries a selector filter and an owner level, so the
    /// readers behind [`super::attach_readers`] see real values.
    #[test]
    fn the_event_hubs_seed_carries_a_filter_and_an_owner_level() {
        let bytes = seed("eventhubs_attach");
        let attach = bytes
            .windows(3)
            .position(|w| w == [0x00, 0x53, 0x12])
            .and_then(|i| serde_amqp::from_slice::<super::Attach>(&bytes[i..]).ok())
            .expect("an attach");
        let request = crate::amqp::eventhubs::receiver::request(
            &attach,
            String::new(),
            String::new(),
            String::new(),
        );
        assert_eq!(
            request.position,
            Ok(
                iothub_protocol::event_position::EventPosition::SequenceNumber {
                    sequence_number: 5,
                    inclusive: true
                }
            )
        );
        assert_eq!(request.owner_level, Some(3));
    }

    /// The hand-written `amqp_messages` seeds, as code: what each link of the emulator reads.
    fn message_seeds() -> Vec<(&'static str, Vec<u8>)> {
        use fe2o3_amqp_types::messaging::message::__private::Serializable;
        use fe2o3_amqp_types::messaging::{
            ApplicationProperties, Message, MessageAnnotations, MessageId, Properties,
        };
        use fe2o3_amqp_types::primitives::{Binary, Symbol};
        use iothub_protocol::sas::build_token;

        let owner = &crate::credentials::well_known_policies()[0];
        let token = build_token(
            "localhost",
            &owner.primary_key,
            Some(&owner.name),
            super::FUZZ_TOKEN_EXPIRY,
        )
        .unwrap();
        let hub_name = crate::hub::HubSettings::default().hub_name;
        let props = |to: Option<&str>| Properties {
            message_id: Some(MessageId::String("m1".into())),
            correlation_id: Some(MessageId::String("c1".into())),
            to: to.map(Into::into),
            content_type: Some(Symbol::from("application/json")),
            ..Properties::default()
        };
        let app = |pairs: &[(&str, &str)]| {
            let mut b = ApplicationProperties::builder();
            for (k, v) in pairs {
                b = b.insert(*k, *v);
            }
            b.build()
        };
        let twin = |op: &str, body: &str| {
            Message::builder()
                .properties(props(None))
                .message_annotations(
                    MessageAnnotations::builder()
                        .insert(Symbol::from("operation"), op)
                        .insert(Symbol::from("resource"), "/properties/reported")
                        .build(),
                )
                .data(Binary::from(body.as_bytes().to_vec()))
                .build()
        };
        fn encode<B: fe2o3_amqp_types::messaging::SerializableBody>(m: Message<B>) -> Vec<u8> {
            serde_amqp::to_vec(&Serializable(m)).unwrap()
        }
        vec![
            (
                "c2d_send",
                encode(
                    Message::builder()
                        .properties(props(Some("/devices/d0/messages/devicebound")))
                        .application_properties(app(&[("iothub-ack", "full"), ("k", "v")]))
                        .data(Binary::from(b"{\"on\":true}".to_vec()))
                        .build(),
                ),
            ),
            (
                "telemetry",
                encode(
                    Message::builder()
                        .properties(props(None))
                        .application_properties(app(&[("unit", "celsius")]))
                        .data(Binary::from(b"{\"t\":21}".to_vec()))
                        .build(),
                ),
            ),
            (
                "twin_patch",
                encode(twin("PATCH", "{\"battery\":90,\"gone\":null}")),
            ),
            ("twin_get", encode(twin("GET", ""))),
            (
                "method_answer",
                encode(
                    Message::builder()
                        .properties(props(None))
                        .application_properties(app(&[("IoThub-status", "200")]))
                        .data(Binary::from(b"{\"ok\":true}".to_vec()))
                        .build(),
                ),
            ),
            (
                "put_token",
                encode(
                    Message::builder()
                        .properties(props(None))
                        .application_properties(app(&[
                            ("operation", "put-token"),
                            ("type", "servicebus.windows.net:sastoken"),
                            ("name", "localhost"),
                        ]))
                        .value(token)
                        .build(),
                ),
            ),
            (
                "management",
                encode(
                    Message::builder()
                        .properties(props(None))
                        .application_properties(app(&[
                            ("operation", "READ"),
                            ("name", &hub_name),
                            ("type", "com.microsoft:eventhub"),
                        ]))
                        .value(String::new())
                        .build(),
                ),
            ),
        ]
    }

    /// The committed `amqp_messages` seeds are [`message_seeds`] (`WRITE_FUZZ_SEEDS=1` writes
    /// them), and each reaches the reader it is named for and is taken there, so the fuzzer
    /// starts past the readers' first refusals.
    #[test]
    fn the_message_seeds_are_taken_by_the_readers_they_are_named_for() {
        let dir = crate::fuzzing::corpus_dir("amqp_messages");
        for (name, bytes) in message_seeds() {
            let path = format!("{dir}/{name}");
            if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{path} is not the seed's code"
            );
            let o = super::message_outcomes(&bytes).expect("an AMQP message");
            let taken = match name {
                "c2d_send" => o.c2d,
                "telemetry" => o.telemetry,
                "twin_patch" => o.twin == Some(204),
                "twin_get" => o.twin == Some(200),
                "method_answer" => o.method_answer,
                "put_token" => o.put_token == Some(200),
                "management" => o.management == Some(200),
                other => panic!("no expectation for {other}"),
            };
            assert!(taken, "{name}: {o:?}");
        }
        assert!(super::message_outcomes(b"not amqp").is_none());
    }
}
