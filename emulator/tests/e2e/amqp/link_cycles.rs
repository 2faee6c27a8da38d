//! Links attached and detached in quick succession on one session, and link names reused
//! within a session (issue 12).

use crate::support::amqp::*;
use crate::support::*;
use fe2o3_amqp::{Receiver, Sender, Session};

/// A client that attaches and detaches links as fast as it can keeps its session: every cycle
/// gets its attach answered and its detach echoed, and nothing ends the session under it.
/// Before the fix, fe2o3's first-credit `flow` could go out after the detach of its link and
/// the client ended the session with `unattached-handle` within a few hundred cycles
/// (`SessionStopped(Ended)`); see `amqp::handles`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_rapid_attach_detach_cycles() {
    let emu = start().await;
    let (mut c, _s, _cbs) = authorized(&emu, &owner_token(&emu)).await;
    let mut s = within(Session::begin(&mut c)).await.expect("session");
    for i in 0..1000 {
        let sender = within(Sender::attach(&mut s, format!("cycle{i}"), "$cbs"))
            .await
            .unwrap_or_else(|e| panic!("attach {i}: {e:?}"));
        within(sender.close())
            .await
            .unwrap_or_else(|e| panic!("detach {i}: {e:?}"));
    }
    // Receivers too (the hub's sending side), on an address a service may attach to.
    for i in 0..100 {
        let receiver = within(Receiver::attach(
            &mut s,
            format!("feedback{i}"),
            "/messages/servicebound/feedback",
        ))
        .await
        .unwrap_or_else(|e| panic!("attach receiver {i}: {e:?}"));
        within(receiver.close())
            .await
            .unwrap_or_else(|e| panic!("detach receiver {i}: {e:?}"));
    }
    let still = within(Sender::attach(&mut s, "after", "$cbs")).await;
    assert!(still.is_ok(), "{still:?}");
    finish(c, emu).await;
}
