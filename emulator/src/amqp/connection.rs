//! One AMQP connection: the protocol header, SASL or not, then sessions and links routed by
//! address (iothub-protocol.md 5.1–5.3).
//!
//! The SDKs differ at the first byte after TLS: Node and C# send the plain AMQP header
//! (`AMQP 0 1 0 0`), uamqp and the C SDK the SASL header (`AMQP 3 1 0 0`). The header is read
//! here and replayed to the matching fe2o3 acceptor. A wrong header is answered with the header
//! the hub speaks, and the connection closed (AMQP 1.0 §2.2). Nothing here touches the hub: each
//! accepted link is handed to the module for its node.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp_types::definitions::ReceiverSettleMode;
use fe2o3_amqp_types::definitions::Role;
use fe2o3_amqp_types::messaging::Target;
use fe2o3_amqp_types::performatives::Attach;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::address::{Node, parse_node};
use super::errors::unknown_address;
use super::limits::{self, LinkCount, LinkSlot};
use super::sasl::HubSasl;
use super::stream::HubStream;
use super::tokens::Tokens;
use super::{cbs, device, inbound, methods, outbound, service, twin};
use crate::context::Context;
use crate::hub::Identity;

/// The plain AMQP protocol header.
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The SASL protocol header.
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// How long a new connection may take to send its protocol header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SASL and the `open` exchange may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the `close` exchange may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle timeout announced in `open`: a peer silent for this long is dropped (Azure uses 240 s).
const IDLE_TIMEOUT_MS: u32 = 240_000;
/// The largest message a link accepts; the hub's own limits (64 KiB C2D, 256 KiB D2C) are
/// checked per message and answered with a rejection, not a detach.
pub const MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

/// What the tasks of one connection share.
pub struct Conn {
    /// The emulator.
    pub ctx: Context,
    /// The peer's address, for logs.
    pub peer: String,
    /// Tokens the peer presented (CBS or SASL PLAIN).
    pub tokens: Tokens,
    /// Cancelled when the connection ends; every link of it stops.
    pub cancel: CancellationToken,
    /// Put-token replies on their way to the `$cbs` receiver link.
    pub cbs: super::replies::Replies,
    /// Twin responses on their way to each device's twin receiver link.
    pub twins: twin::Channels,
    /// Where method answers find the request link they belong to.
    pub methods: methods::Responders,
    /// Links attached on this connection (see [`limits`]).
    pub links: LinkCount,
    /// Event Hubs `$management` replies on their way to the management receiver link.
    pub management: super::replies::Replies,
}

/// Which acceptor the protocol header asks for.
enum Layer {
    Sasl,
    Plain,
}

/// Serves one connection over `io` until it closes or the emulator shuts down.
pub async fn serve<IO>(mut io: IO, peer: String, ctx: Context)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cancel = ctx.shutdown.child_token();
    let mut header = [0u8; 8];
    let read = tokio::select! {
        _ = cancel.cancelled() => return,
        r = timeout(HEADER_TIMEOUT, io.read_exact(&mut header)) => r,
    };
    if !matches!(read, Ok(Ok(_))) {
        tracing::debug!(%peer, "AMQP connection sent no protocol header");
        return;
    }
    let layer = match header {
        SASL_HEADER => Layer::Sasl,
        AMQP_HEADER => Layer::Plain,
        _ => {
            tracing::debug!(%peer, ?header, "wrong AMQP protocol header");
            let _ = timeout(CLOSE_TIMEOUT, async {
                io.write_all(&AMQP_HEADER).await?;
                io.shutdown().await
            })
            .await;
            return;
        }
    };
    let tokens = Tokens::default();
    // Whatever way this function ends, fe2o3's own task for the connection ends with it.
    let ended = CancellationToken::new();
    let _end_io = ended.clone().drop_guard();
    let stream = HubStream::new(io, &header, ended);
    let container = ctx.host_name.clone();
    let open = async {
        match layer {
            Layer::Sasl => {
                ConnectionAcceptor::builder()
                    .container_id(container)
                    .idle_time_out(IDLE_TIMEOUT_MS)
                    .channel_max(super::frame_guard::CHANNEL_MAX)
                    .sasl_acceptor(HubSasl::new(ctx.clone(), tokens.clone()))
                    .build()
                    .accept(stream)
                    .await
            }
            Layer::Plain => {
                ConnectionAcceptor::builder()
                    .container_id(container)
                    .idle_time_out(IDLE_TIMEOUT_MS)
                    .channel_max(super::frame_guard::CHANNEL_MAX)
                    .build()
                    .accept(stream)
                    .await
            }
        }
    };
    let opened = tokio::select! {
        _ = cancel.cancelled() => return,
        r = timeout(OPEN_TIMEOUT, open) => r,
    };
    let connection = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "AMQP connection not opened");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "AMQP connection did not open in time");
            return;
        }
    };
    tracing::debug!(%peer, "AMQP connection open");
    let conn = Arc::new(Conn {
        ctx,
        peer,
        tokens,
        cancel,
        cbs: super::replies::Replies::default(),
        twins: twin::Channels::default(),
        methods: methods::Responders::default(),
        links: LinkCount::default(),
        management: Default::default(),
    });
    run(conn, connection).await;
}

/// Accepts sessions until the connection ends, then stops every link of it.
async fn run(conn: Arc<Conn>, mut connection: ListenerConnectionHandle) {
    let acceptor = SessionAcceptor::new();
    // On the hub's clock, so that a test can move it forward.
    let deadline = conn
        .ctx
        .now_unix()
        .saturating_add(limits::TOKEN_DEADLINE.as_secs());
    let mut watch = tokio::time::interval(limits::TOKEN_CHECK);
    let mut has_token = false;
    loop {
        let incoming = tokio::select! {
            _ = conn.cancel.cancelled() => break,
            _ = watch.tick(), if !has_token => {
                has_token = conn.tokens.any();
                if has_token {
                    crate::accept::authenticated();
                }
                if has_token || conn.ctx.now_unix() < deadline {
                    continue;
                }
                tracing::debug!(peer = %conn.peer, "AMQP connection put no token in time");
                conn.cancel.cancel();
                let close = connection.close_with_error(limits::no_token_error());
                let _ = timeout(CLOSE_TIMEOUT, close).await;
                return;
            }
            s = connection.next_incoming_session() => s,
        };
        let Some(incoming) = incoming else { break };
        match acceptor
            .accept_incoming_session(incoming, &mut connection)
            .await
        {
            Ok(session) => {
                conn.ctx.tasks.spawn(serve_session(conn.clone(), session));
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "session not accepted");
                break;
            }
        }
    }
    conn.cancel.cancel();
    let _ = timeout(CLOSE_TIMEOUT, connection.close()).await;
    tracing::debug!(peer = %conn.peer, "AMQP connection closed");
}

/// Accepts links until the session ends.
async fn serve_session(conn: Arc<Conn>, mut session: ListenerSessionHandle) {
    // Where the peer sends (C2D, telemetry, CBS requests) the hub settles at once: it answers
    // an attach asking for rcv-settle-mode `second` with `first`, as the hub does. uamqp asks
    // for `second` but completes a send only on a *settled* disposition, so a `second`-mode
    // reply would leave `send_c2d_message` waiting forever. Where the peer receives (feedback,
    // C2D to a device) both modes are honoured: the C# feedback receiver uses `second`.
    let from_peer = LinkAcceptor::builder()
        .max_message_size(MAX_MESSAGE_SIZE)
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    let to_peer = LinkAcceptor::builder()
        .max_message_size(MAX_MESSAGE_SIZE)
        .build();
    let links = LinkCount::default();
    let mut renamed = 0;
    loop {
        let attach = tokio::select! {
            _ = conn.cancel.cancelled() => break,
            a = session.next_incoming_attach() => a,
        };
        let Some(attach) = attach else { break };
        let address = address_of(&attach);
        let eventhubs = super::eventhubs::classify(&attach, address.as_deref());
        let acceptor = match attach.role {
            Role::Sender => &from_peer,
            Role::Receiver => &to_peer,
        };
        let accepted = super::duplicates::accept(acceptor, attach, &mut session, &mut renamed);
        let (link, duplicate_of) = match accepted.await {
            Ok(a) => (a.link, a.duplicate_of),
            Err(e) => {
                tracing::debug!(peer = %conn.peer, ?address, error = %e, "link not attached");
                continue;
            }
        };
        let slot = match limits::admit_link(&links, &conn.links) {
            Ok(slot) => slot,
            Err(error) => {
                tracing::debug!(peer = %conn.peer, ?address, "link refused: too many links");
                conn.ctx.tasks.spawn(refuse(link, error));
                continue;
            }
        };
        if let Some(name) = duplicate_of {
            tracing::debug!(peer = %conn.peer, ?address, "link refused: name in use");
            conn.ctx.tasks.spawn(async move {
                let _slot = slot;
                refuse(link, super::duplicates::error(&name)).await
            });
            continue;
        }
        tracing::debug!(peer = %conn.peer, ?address, "link attached");
        match eventhubs {
            Some(eh) => {
                let conn = conn.clone();
                conn.ctx.tasks.clone().spawn(async move {
                    let _slot = slot;
                    super::eventhubs::serve(conn, link, eh, address).await
                })
            }
            None => conn
                .ctx
                .tasks
                .spawn(serve_link(conn.clone(), link, address, slot)),
        };
    }
    let _ = timeout(CLOSE_TIMEOUT, session.end()).await;
}

/// The node an attach names: the target of a peer sender, the source of a peer receiver.
pub(super) fn address_of(attach: &Attach) -> Option<String> {
    match attach.role {
        Role::Sender => attach
            .target
            .as_deref()
            .cloned()
            .and_then(|t| Target::try_from(t).ok())
            .and_then(|t| t.address),
        Role::Receiver => attach.source.as_ref().and_then(|s| s.address.clone()),
    }
}

/// Detaches a link with `error`.
async fn refuse(link: LinkEndpoint, error: fe2o3_amqp_types::definitions::Error) {
    match link {
        LinkEndpoint::Sender(s) => outbound::refuse(s, error).await,
        LinkEndpoint::Receiver(r) => inbound::refuse(r, error).await,
    }
}

/// Hands an attached link to the module for its node; refuses links to unknown nodes. The
/// link counts against the limits until it ends.
async fn serve_link(conn: Arc<Conn>, link: LinkEndpoint, address: Option<String>, _slot: LinkSlot) {
    let node = address.as_deref().and_then(parse_node);
    match (node, link) {
        (Some(Node::Cbs), LinkEndpoint::Receiver(r)) => cbs::serve_requests(conn, r).await,
        (Some(Node::Cbs), LinkEndpoint::Sender(s)) => cbs::serve_replies(conn, s).await,
        (Some(Node::ServiceDevicebound), LinkEndpoint::Receiver(r)) => {
            service::serve_c2d(conn, r).await
        }
        (Some(Node::Feedback), LinkEndpoint::Sender(s)) => service::serve_feedback(conn, s).await,
        (Some(Node::DeviceDevicebound(id)), LinkEndpoint::Sender(s)) => {
            device::serve_c2d(conn, s, id).await
        }
        (Some(Node::DeviceEvents(id)), LinkEndpoint::Receiver(r)) => {
            device::serve_events(conn, r, id).await
        }
        (Some(Node::DeviceTwin(id)), LinkEndpoint::Receiver(r)) => {
            twin::serve_requests(conn, r, Identity::device(id)).await
        }
        (Some(Node::DeviceTwin(id)), LinkEndpoint::Sender(s)) => {
            twin::serve_responses(conn, s, Identity::device(id)).await
        }
        (Some(Node::DeviceMethods(id)), LinkEndpoint::Sender(s)) => {
            methods::serve_requests(conn, s, Identity::device(id)).await
        }
        (Some(Node::DeviceMethods(id)), LinkEndpoint::Receiver(r)) => {
            methods::serve_responses(conn, r, Identity::device(id)).await
        }
        (Some(Node::Module(module, node)), link) => {
            super::modules::serve(conn, link, module, node).await
        }
        (_, link) => {
            refuse(
                link,
                unknown_address(address.as_deref().unwrap_or_default()),
            )
            .await
        }
    }
}
