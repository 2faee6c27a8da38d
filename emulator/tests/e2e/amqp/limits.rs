//! Frames and link patterns that fe2o3 alone would panic on or leave unanswered: the frame
//! guard answers them (issue 12).

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Source, Target};
use fe2o3_amqp::types::performatives::{Attach, Begin, Close, Open, Performative};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";

fn frame(channel: u16, p: &Performative) -> Vec<u8> {
    let body = serde_amqp::to_vec(p).unwrap();
    let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&[2, 0]);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&body);
    f
}

fn open(max_frame_size: u32) -> Vec<u8> {
    frame(
        0,
        &Performative::Open(Open {
            container_id: "raw".into(),
            hostname: Some("localhost".into()),
            max_frame_size: max_frame_size.into(),
            channel_max: 65535.into(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
    )
}

fn begin(channel: u16) -> Vec<u8> {
    frame(
        channel,
        &Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 100,
            outgoing_window: 100,
            handle_max: Default::default(),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
    )
}

fn attach(name: &str, handle: u32, role: Role) -> Vec<u8> {
    let initial_delivery_count = (role == Role::Sender).then_some(0);
    let (source, target) = match role {
        Role::Sender => (
            Some(Source::builder().address("raw").build()),
            Some(Target::builder().address("$cbs").build()),
        ),
        Role::Receiver => (
            Some(Source::builder().address("$cbs").build()),
            Some(Target::builder().address("raw").build()),
        ),
    };
    frame(
        0,
        &Performative::Attach(Attach {
            name: name.into(),
            handle: Handle(handle),
            role,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: source.map(Box::new),
            target: target.map(|t| Box::new(t.into())),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
    )
}

/// Every performative the server sends until it closes the stream.
async fn performatives(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<Performative> {
    let mut got = Vec::new();
    let _ = within(s.read_to_end(&mut got)).await;
    let mut out = Vec::new();
    let mut rest = got.strip_prefix(AMQP_HEADER).unwrap_or(&got);
    while rest.len() >= 8 {
        let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let doff = rest[4] as usize * 4;
        if size > doff {
            out.push(serde_amqp::from_slice(&rest[doff..size]).unwrap());
        }
        rest = &rest[size..];
    }
    out
}

/// Reads performatives until `n` attaches have arrived.
async fn until_attaches(s: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<Performative> {
    let mut out = Vec::new();
    let mut header = [0u8; 8];
    within(s.read_exact(&mut header)).await.unwrap();
    assert_eq!(&header, AMQP_HEADER);
    while out
        .iter()
        .filter(|p| matches!(p, Performative::Attach(_)))
        .count()
        < n
    {
        let mut size = [0u8; 4];
        within(s.read_exact(&mut size)).await.unwrap();
        let mut rest = vec![0u8; u32::from_be_bytes(size) as usize - 4];
        within(s.read_exact(&mut rest)).await.unwrap();
        let doff = rest[0] as usize * 4;
        if rest.len() + 4 > doff {
            out.push(serde_amqp::from_slice(&rest[doff - 4..]).unwrap());
        }
    }
    out
}

fn closed_with(ps: &[Performative]) -> String {
    match ps.last() {
        Some(Performative::Close(Close { error: Some(e) })) => condition(e),
        other => panic!("no close with an error: {other:?}"),
    }
}

#[tokio::test]
async fn frames_shorter_than_their_header_get_a_framing_error_close() {
    let emu = start().await;
    for size in 4u8..8 {
        let mut s = tls(&emu).await;
        s.write_all(AMQP_HEADER).await.unwrap();
        s.write_all(&open(65536)).await.unwrap();
        s.write_all(&[0, 0, 0, size, 2, 0, 0, 0]).await.unwrap();
        s.flush().await.unwrap();
        let ps = performatives(&mut s).await;
        assert!(matches!(ps.first(), Some(Performative::Open(_))), "{ps:?}");
        assert_eq!(closed_with(&ps), "amqp:connection:framing-error", "{size}");
    }
    // Before the peer's open as well: the emulator's own open went out already.
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&[0, 0, 0, 5, 2, 0, 0, 0]).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        closed_with(&performatives(&mut s).await),
        "amqp:connection:framing-error"
    );
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn open_below_512_and_begin_above_channel_max_are_refused() {
    let emu = start().await;
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(511)).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        closed_with(&performatives(&mut s).await),
        "amqp:not-allowed"
    );

    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(65536)).await.unwrap();
    s.write_all(&begin(256)).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        closed_with(&performatives(&mut s).await),
        "amqp:not-allowed"
    );
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn a_sender_and_a_receiver_may_share_a_link_name() {
    let emu = start().await;
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(65536)).await.unwrap();
    s.write_all(&begin(0)).await.unwrap();
    s.write_all(&attach("shared", 0, Role::Sender))
        .await
        .unwrap();
    s.write_all(&attach("shared", 1, Role::Receiver))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let mut ps = until_attaches(&mut s, 2).await;
    ps.retain(|p| !matches!(p, Performative::Flow(_)));
    assert!(
        !ps.iter().any(|p| matches!(p, Performative::Detach(_))),
        "{ps:?}"
    );
    let attaches: Vec<_> = ps
        .iter()
        .filter_map(|p| match p {
            Performative::Attach(a) => Some((a.name.clone(), a.role.clone())),
            _ => None,
        })
        .collect();
    assert!(
        attaches.contains(&("shared".into(), Role::Receiver)),
        "{ps:?}"
    );
    assert!(
        attaches.contains(&("shared".into(), Role::Sender)),
        "{ps:?}"
    );
    within(emu.shutdown()).await;
}
