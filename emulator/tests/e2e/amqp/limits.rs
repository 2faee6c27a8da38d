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
    until(s, |ps| {
        count(ps, |p| matches!(p, Performative::Attach(_))) >= n
    })
    .await
}

fn count(ps: &[Performative], f: impl Fn(&Performative) -> bool) -> usize {
    ps.iter().filter(|p| f(p)).count()
}

/// Reads performatives (after the protocol header) until `done` says so.
async fn until(
    s: &mut (impl AsyncReadExt + Unpin),
    done: impl Fn(&[Performative]) -> bool,
) -> Vec<Performative> {
    let mut out = Vec::new();
    let mut header = [0u8; 8];
    within(s.read_exact(&mut header)).await.unwrap();
    assert_eq!(&header, AMQP_HEADER);
    while !done(&out) {
        out.extend(read_performative(s).await);
    }
    out
}

/// The next frame's performative; `None` for an empty frame.
async fn read_performative(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Performative> {
    let mut size = [0u8; 4];
    within(s.read_exact(&mut size)).await.unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(size) as usize - 4];
    within(s.read_exact(&mut rest)).await.unwrap();
    let doff = rest[0] as usize * 4;
    (rest.len() + 4 > doff).then(|| serde_amqp::from_slice(&rest[doff - 4..]).unwrap())
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

/// fe2o3 alone fails a second attach of a name already attached in the same direction and
/// sends nothing, so the peer waits forever. It gets an attach under its own name and a detach
/// with `amqp:invalid-field`; the first link of that name, the rest of the session and other
/// connections go on.
#[tokio::test]
async fn a_second_link_with_a_name_in_use_in_its_direction_is_detached_with_invalid_field() {
    let emu = start().await;
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(65536)).await.unwrap();
    s.write_all(&begin(0)).await.unwrap();
    for (handle, role) in [
        (0, Role::Sender),
        (1, Role::Sender),
        (2, Role::Receiver),
        (3, Role::Receiver),
    ] {
        s.write_all(&attach("twice", handle, role)).await.unwrap();
    }
    s.write_all(&attach("after", 4, Role::Sender))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let ps = until(&mut s, |ps| {
        count(ps, |p| matches!(p, Performative::Attach(_))) >= 5
            && count(ps, |p| matches!(p, Performative::Detach(_))) >= 2
    })
    .await;
    // The emulator's handle for each of the peer's links, in the order they were answered.
    let answers: Vec<_> = ps
        .iter()
        .filter_map(|p| match p {
            Performative::Attach(a) => Some((a.name.clone(), a.role.clone(), a.handle.0)),
            _ => None,
        })
        .collect();
    let handles_of = |name: &str, role: Role| -> Vec<u32> {
        answers
            .iter()
            .filter(|(n, r, _)| n == name && *r == role)
            .map(|(_, _, h)| *h)
            .collect()
    };
    // Our receiver answers the peer's senders, our sender the peer's receivers.
    let to_senders = handles_of("twice", Role::Receiver);
    let to_receivers = handles_of("twice", Role::Sender);
    assert_eq!(to_senders.len(), 2, "{ps:?}");
    assert_eq!(to_receivers.len(), 2, "{ps:?}");
    assert_eq!(handles_of("after", Role::Receiver).len(), 1, "{ps:?}");
    let mut detached: Vec<_> = ps
        .iter()
        .filter_map(|p| match p {
            Performative::Detach(d) => Some((d.handle.0, d.error.as_ref().map(condition))),
            _ => None,
        })
        .collect();
    detached.sort();
    let mut expected = vec![
        (to_senders[1], Some("amqp:invalid-field".to_string())),
        (to_receivers[1], Some("amqp:invalid-field".to_string())),
    ];
    expected.sort();
    assert_eq!(detached, expected, "{ps:?}");
    assert!(
        !ps.iter()
            .any(|p| matches!(p, Performative::End(_) | Performative::Close(_))),
        "{ps:?}"
    );
    // The session still takes links.
    s.write_all(&attach("later", 5, Role::Receiver))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let ps = until_more_attaches(&mut s, 1).await;
    assert!(
        ps.iter()
            .any(|p| matches!(p, Performative::Attach(a) if a.name == "later")),
        "{ps:?}"
    );
    // Another connection is not affected.
    let (mut c, _s) = session(&emu).await;
    within(c.close()).await.unwrap();
    within(emu.shutdown()).await;
}

/// Detaching a link and attaching another under its name at once is legal: the new link is
/// attached, not refused as a duplicate (fe2o3 frees the name a moment after the detach).
#[tokio::test]
async fn a_name_detached_can_be_attached_again_at_once() {
    use fe2o3_amqp::types::performatives::Detach;
    let emu = start().await;
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(65536)).await.unwrap();
    s.write_all(&begin(0)).await.unwrap();
    s.write_all(&attach("again", 0, Role::Sender))
        .await
        .unwrap();
    s.flush().await.unwrap();
    until_attaches(&mut s, 1).await;
    for round in 1..20u32 {
        let detach = Detach {
            handle: Handle(round - 1),
            closed: true,
            error: None,
        };
        s.write_all(&frame(0, &Performative::Detach(detach)))
            .await
            .unwrap();
        s.write_all(&attach("again", round, Role::Sender))
            .await
            .unwrap();
        s.flush().await.unwrap();
        let ps = until_more_attaches(&mut s, 1).await;
        assert!(
            !ps.iter().any(|p| matches!(
                p,
                Performative::Detach(Detach { error: Some(_), .. })
                    | Performative::End(_)
                    | Performative::Close(_)
            )),
            "round {round}: {ps:?}"
        );
    }
    within(emu.shutdown()).await;
}

/// Reads performatives after the protocol header was read, until `n` more attaches arrived.
async fn until_more_attaches(s: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<Performative> {
    let mut out = Vec::new();
    while count(&out, |p| matches!(p, Performative::Attach(_))) < n {
        out.extend(read_performative(s).await);
    }
    out
}

/// A transfer frame carrying `payload`.
fn transfer(handle: u32, delivery: Option<u32>, more: bool, payload: &[u8]) -> Vec<u8> {
    use fe2o3_amqp::types::performatives::Transfer;
    let mut f = frame(
        0,
        &Performative::Transfer(Transfer {
            handle: Handle(handle),
            delivery_id: delivery,
            delivery_tag: delivery.map(|d| d.to_be_bytes().to_vec().into()),
            message_format: delivery.map(|_| 0),
            settled: None,
            more,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        }),
    );
    f.extend_from_slice(payload);
    let size = (f.len() as u32).to_be_bytes();
    f[..4].copy_from_slice(&size);
    f
}

fn flow(handle: Option<u32>) -> Vec<u8> {
    use fe2o3_amqp::types::performatives::Flow;
    frame(
        0,
        &Performative::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: 100,
            next_outgoing_id: 0,
            outgoing_window: 100,
            handle: handle.map(Handle),
            delivery_count: Some(0),
            link_credit: Some(10),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }),
    )
}

/// Flows for a handle never attached are dropped before fe2o3 (which would keep each one) and
/// harm nothing; a message whose section claims 3 GB across two frames closes the connection
/// with `amqp:decode-error` before serde_amqp reads the joined bytes.
#[tokio::test]
async fn stray_flows_are_dropped_and_a_split_oversized_claim_is_a_decode_error() {
    let emu = start().await;
    let mut s = tls(&emu).await;
    s.write_all(AMQP_HEADER).await.unwrap();
    s.write_all(&open(65536)).await.unwrap();
    s.write_all(&begin(0)).await.unwrap();
    let stray = flow(Some(9));
    for _ in 0..2_000 {
        s.write_all(&stray).await.unwrap();
    }
    s.write_all(&attach("cbs-in", 0, Role::Sender))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let ps = until_attaches(&mut s, 1).await;
    assert!(
        !ps.iter()
            .any(|p| matches!(p, Performative::End(_) | Performative::Close(_))),
        "{ps:?}"
    );
    // A data section claiming 0xbfffffff bytes, the claim cut across the two frames.
    let mut section = vec![0x00, 0x53, 0x75, 0xb0, 0xbf, 0xff, 0xff, 0xff];
    section.extend_from_slice(&[7; 40]);
    s.write_all(&transfer(0, Some(0), true, &section[..5]))
        .await
        .unwrap();
    s.write_all(&transfer(0, None, false, &section[5..]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        closed_with(&performatives(&mut s).await),
        "amqp:decode-error"
    );
    // Another connection is not affected.
    let (mut c, _s) = session(&emu).await;
    within(c.close()).await.unwrap();
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn links_past_the_session_limit_are_detached_with_resource_limit_exceeded() {
    use fe2o3_amqp::Sender;
    let emu = start().await;
    let (mut c, mut s) = session(&emu).await;
    let mut held = Vec::new();
    for i in 0..1024 {
        let sender = within(Sender::attach(&mut s, format!("l{i}"), "$cbs"))
            .await
            .expect("under the limit");
        held.push(sender);
    }
    let mut refused = within(Sender::attach(&mut s, "one-too-many", "$cbs"))
        .await
        .unwrap();
    assert_eq!(
        sender_closed_with(&mut refused).await,
        "amqp:resource-limit-exceeded"
    );
    // Detached links make room again.
    for sender in held.drain(..10) {
        within(sender.close()).await.unwrap();
    }
    let again = within(Sender::attach(&mut s, "room-again", "$cbs")).await;
    assert!(again.is_ok(), "{again:?}");
    let _ = within(c.close()).await;
    within(emu.shutdown()).await;
}

#[tokio::test]
async fn a_connection_without_a_token_is_closed_after_the_deadline() {
    let emu = start_virtual().await;
    let (mut authorized_c, _s2, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let (mut c, _s) = session(&emu).await;
    emu.hub().advance_clock(std::time::Duration::from_secs(31));
    let closed = within(c.on_close()).await;
    match closed {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(condition(&e), "amqp:unauthorized-access")
        }
        other => panic!("{other:?}"),
    }
    // A connection with a token stays.
    let open =
        tokio::time::timeout(std::time::Duration::from_secs(1), authorized_c.on_close()).await;
    assert!(open.is_err(), "still open: {open:?}");
    let _ = within(authorized_c.close()).await;
    within(emu.shutdown()).await;
}

/// Resident set size of this process in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Figures for the README (issue 12): RSS before, during and after 50,000 `$cbs` attach/detach
/// cycles on one connection, and under a flood of attaches that never detach. Prints; asserts
/// only that memory comes back. `cargo test -p iothub-emulator --test e2e --release
/// link_flood_rss -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes minutes; prints figures"]
async fn link_flood_rss() {
    use fe2o3_amqp::Sender;
    let emu = start().await;
    let (mut c, mut s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let before = rss_kib();
    let mut peak = before;
    let cycles: u32 = std::env::var("CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    // A session that cycles links ends after a few cycles (SessionStopped(Ended), under
    // investigation): a fresh session every few cycles still frees both kinds of state.
    let mut cycling = within(fe2o3_amqp::Session::begin(&mut c)).await.unwrap();
    let mut stopped = 0u32;
    for i in 0..cycles {
        if i % 4 == 0 {
            let _ = within(cycling.end()).await;
            cycling = within(fe2o3_amqp::Session::begin(&mut c)).await.unwrap();
        }
        match within(Sender::attach(&mut cycling, format!("cycle{i}"), "$cbs")).await {
            Ok(sender) => {
                let _ = within(sender.close()).await;
            }
            Err(e) => {
                stopped += 1;
                if stopped <= 3 {
                    println!("cycle {i}: {e:?}; new session");
                }
                cycling = within(fe2o3_amqp::Session::begin(&mut c)).await.unwrap();
            }
        }
        if i % 5_000 == 0 {
            peak = peak.max(rss_kib());
            println!("cycle {i}: RSS {} KiB", rss_kib());
        }
    }
    let after_cycles = rss_kib();
    println!("sessions that ended under the cycling: {stopped}");
    // Attaches that never detach, until the limits refuse them.
    let mut held = Vec::new();
    for i in 0..MAX_HELD + 100 {
        // Past the limit the attach is answered and at once detached with an error.
        if let Ok(l) = within(Sender::attach(&mut s, format!("held{i}"), "$cbs")).await {
            held.push(l);
        }
    }
    let flood = rss_kib();
    drop(held);
    let _ = within(c.close()).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let closed = rss_kib();
    println!(
        "RSS KiB: start {before}, peak during cycles {peak}, after 50,000 cycles {after_cycles}, \
         holding {} links (then refused) {flood}, after close {closed}",
        MAX_HELD
    );
    within(emu.shutdown()).await;
    assert!(
        after_cycles < before + 64 * 1024,
        "cycles leak: {before} -> {after_cycles}"
    );
}

const MAX_HELD: usize = 1024;
