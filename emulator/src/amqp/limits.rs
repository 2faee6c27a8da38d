//! What one AMQP connection may hold before it has proven anything, and after.
//!
//! An unauthenticated peer could otherwise attach `$cbs` links without end and grow the
//! process by hundreds of megabytes (issue 12). The limits sit far above what any SDK uses
//! (one to three sessions, a handful of links; a multiplexing C client a few per device):
//!
//! * sessions per connection: [`super::frame_guard::CHANNEL_MAX`] + 1 (the guard refuses
//!   higher channels);
//! * links attached at once: [`MAX_LINKS_PER_SESSION`] per session and
//!   [`MAX_LINKS_PER_CONNECTION`] per connection; an attach past either is answered with a
//!   detach carrying `amqp:resource-limit-exceeded`;
//! * a connection that has not presented a valid token (CBS put-token or SASL PLAIN)
//!   [`TOKEN_DEADLINE`] after its `open` is closed with `amqp:unauthorized-access`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fe2o3_amqp_types::definitions::{AmqpError, Error};

/// Links one session may have attached at once.
pub const MAX_LINKS_PER_SESSION: usize = 1024;
/// Links one connection may have attached at once, over all its sessions.
pub const MAX_LINKS_PER_CONNECTION: usize = 4096;
/// How long after `open` a connection may go without a valid token (on the hub's clock).
pub const TOKEN_DEADLINE: Duration = Duration::from_secs(30);
/// How often a connection without a token looks at the clock.
pub const TOKEN_CHECK: Duration = Duration::from_millis(500);

/// Counts attached links; a [`LinkSlot`] is held while a link is served.
#[derive(Debug, Clone, Default)]
pub struct LinkCount(Arc<AtomicUsize>);

/// One attached link, counted in its session and its connection until dropped.
#[derive(Debug)]
pub struct LinkSlot {
    counts: [LinkCount; 2],
}

impl Drop for LinkSlot {
    fn drop(&mut self) {
        for c in &self.counts {
            c.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Takes a slot for one more link, or says which limit forbids it.
pub fn admit_link(session: &LinkCount, connection: &LinkCount) -> Result<LinkSlot, Error> {
    let limits = [
        (session, MAX_LINKS_PER_SESSION, "session"),
        (connection, MAX_LINKS_PER_CONNECTION, "connection"),
    ];
    let mut taken = Vec::with_capacity(2);
    for (count, max, what) in limits {
        if count.0.fetch_add(1, Ordering::AcqRel) >= max {
            count.0.fetch_sub(1, Ordering::AcqRel);
            for c in taken {
                let c: &LinkCount = c;
                c.0.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Error::new(
                AmqpError::ResourceLimitExceeded,
                format!("a {what} of the emulator may have at most {max} links attached"),
                None,
            ));
        }
        taken.push(count);
    }
    Ok(LinkSlot {
        counts: [session.clone(), connection.clone()],
    })
}

/// The error a connection without a token is closed with.
pub fn no_token_error() -> Error {
    Error::new(
        AmqpError::UnauthorizedAccess,
        format!(
            "no valid token was put on $cbs within {} s of open",
            TOKEN_DEADLINE.as_secs()
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_capped_per_session_and_per_connection_and_freed_on_drop() {
        let conn = LinkCount::default();
        let s1 = LinkCount::default();
        let held: Vec<_> = (0..MAX_LINKS_PER_SESSION)
            .map(|_| admit_link(&s1, &conn).unwrap())
            .collect();
        assert!(admit_link(&s1, &conn).is_err());
        drop(held);
        assert_eq!(s1.0.load(Ordering::Acquire), 0);
        let sessions: Vec<_> = (0..MAX_LINKS_PER_CONNECTION / MAX_LINKS_PER_SESSION)
            .map(|_| LinkCount::default())
            .collect();
        let held: Vec<_> = sessions
            .iter()
            .flat_map(|s| (0..MAX_LINKS_PER_SESSION).map(|_| admit_link(s, &conn).unwrap()))
            .collect();
        let fresh = LinkCount::default();
        let e = admit_link(&fresh, &conn).unwrap_err();
        assert_eq!(e.condition, AmqpError::ResourceLimitExceeded.into());
        assert_eq!(
            fresh.0.load(Ordering::Acquire),
            0,
            "a refusal takes nothing"
        );
        drop(held);
        assert_eq!(conn.0.load(Ordering::Acquire), 0);
    }
}
