//! The one accept loop every listener runs (TLS and plain, MQTT, AMQP, HTTPS with its
//! WebSockets, plain HTTP), and the admission rules they share (issue 12):
//!
//! * **One cap** on open connections over all listeners ([`ConnectionLimits::max`]), lowered
//!   to what the file-descriptor limit allows: at start the soft `RLIMIT_NOFILE` is raised to
//!   the hard limit, and [`FD_RESERVE`] descriptors are kept back for files, the accept that
//!   refuses, and the listeners themselves, so the emulator never hits `EMFILE`.
//! * **Before authentication** a connection is on probation: if it has not authenticated
//!   ([`authenticated`]: MQTT CONNECT accepted, an AMQP token put, an HTTP request made)
//!   within [`ConnectionLimits::pre_auth`], it is closed.
//! * **At the cap** the oldest connection still on probation makes room for the new one; when
//!   every connection is authenticated the new one is closed at once. Either is logged at
//!   most once a second, with counts. So a flood of idle sockets cannot keep a real device out:
//!   its connection evicts the flood's oldest, and once authenticated it cannot be evicted.
//!
//! Registering a listener is one call to [`serve`] with a function that serves one TCP
//! connection.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Descriptors kept free below the limit (files, refused accepts, listeners, DNS...).
pub const FD_RESERVE: usize = 256;
/// Pause after a failed accept, so an error the OS keeps returning does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Refusals and evictions are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// How many connections the emulator holds, and how long one may stay unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections over all listeners (lowered to the descriptor limit).
    pub max: usize,
    /// How long a connection may take to authenticate.
    pub pre_auth: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 100_000,
            pre_auth: Duration::from_secs(30),
        }
    }
}

/// Raises the soft descriptor limit to the hard one and returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let now = getrlimit(Resource::Nofile);
        if let (Some(cur), max) = (now.current, now.maximum)
            && max.is_none_or(|m| m > cur)
        {
            // An unlimited hard limit is not accepted as a soft limit by every kernel.
            let target = max.unwrap_or(1 << 20);
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(target),
                    maximum: max,
                },
            );
        }
        getrlimit(Resource::Nofile)
            .current
            .and_then(|c| usize::try_from(c).ok())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Counts open connections over all listeners and decides who gets in.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

struct Inner {
    cap: usize,
    pre_auth: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    live: usize,
    /// Connections on probation, oldest first, with the token that closes them.
    probation: BTreeMap<u64, CancellationToken>,
    next: u64,
    refused: u64,
    evicted: u64,
    last_log: Option<Instant>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("cap", &self.0.cap)
            .field("live", &self.live())
            .finish()
    }
}

impl Admission {
    /// Admission under `limits`, with the cap lowered to `fd_limit` minus [`FD_RESERVE`].
    pub fn new(limits: ConnectionLimits, fd_limit: Option<usize>) -> Admission {
        let by_fds = fd_limit.map_or(usize::MAX, |n| n.saturating_sub(FD_RESERVE).max(1));
        Admission(Arc::new(Inner {
            cap: limits.max.min(by_fds).max(1),
            pre_auth: limits.pre_auth,
            state: Mutex::new(State::default()),
        }))
    }

    /// The cap in force.
    pub fn cap(&self) -> usize {
        self.0.cap
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, or `None` when it must be closed at once.
    pub fn admit(&self) -> Option<Slot> {
        let mut st = self.lock();
        if st.live >= self.0.cap {
            let evicted = match st.probation.pop_first() {
                Some((_, oldest)) => {
                    oldest.cancel();
                    true
                }
                None => false,
            };
            if evicted {
                st.evicted += 1;
            } else {
                st.refused += 1;
            }
            let now = Instant::now();
            if st
                .last_log
                .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
            {
                tracing::warn!(
                    cap = self.0.cap,
                    refused = st.refused,
                    evicted_unauthenticated = st.evicted,
                    "connection limit reached (counts since the last report)"
                );
                st.last_log = Some(now);
                st.refused = 0;
                st.evicted = 0;
            }
            if !evicted {
                // Nobody could be evicted: everyone in is authenticated.
                return None;
            }
        }
        st.live += 1;
        let id = st.next;
        st.next += 1;
        let close = CancellationToken::new();
        st.probation.insert(id, close.clone());
        Some(Slot {
            id,
            admission: self.clone(),
            close,
            authenticated: AtomicBool::new(false),
        })
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    id: u64,
    admission: Admission,
    /// Cancelled to evict the connection.
    close: CancellationToken,
    authenticated: AtomicBool,
}

impl Slot {
    fn mark_authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.admission.lock().probation.remove(&self.id);
        }
    }

    /// Completes when the connection must close: evicted, or still unauthenticated after
    /// the deadline.
    async fn must_close(&self) {
        tokio::select! {
            () = self.close.cancelled() => {}
            () = tokio::time::sleep(self.admission.0.pre_auth) => {
                if self.authenticated.load(Ordering::Acquire) {
                    self.close.cancelled().await;
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        st.live = st.live.saturating_sub(1);
        st.probation.remove(&self.id);
    }
}

tokio::task_local! {
    static SLOT: Arc<Slot>;
}

/// Takes the current connection off probation: it has shown a valid credential (or, for HTTP,
/// made a request). Called by the adapters from the connection's own task; a no-op elsewhere.
pub fn authenticated() {
    let _ = SLOT.try_with(|s| s.mark_authenticated());
}

/// The admission slot of the connection whose task calls this (a no-op elsewhere), for a task
/// that outlives that connection's own: a WebSocket session goes on after hyper has handed
/// the upgraded stream over and the HTTP connection's task has ended, and must stay counted.
pub fn carry() -> Option<Carried> {
    SLOT.try_with(|s| Carried(s.clone())).ok()
}

/// A connection's admission slot carried over to another task (see [`carry`]).
pub struct Carried(Arc<Slot>);

impl Carried {
    /// Runs `session` as the carried connection: counted until it ends, closed when evicted,
    /// and able to call [`authenticated`].
    pub async fn run(self, session: impl Future<Output = ()>) {
        let guard = self.0.clone();
        SLOT.scope(self.0, async move {
            tokio::select! {
                () = session => {}
                () = guard.must_close() => {
                    tracing::debug!("upgraded connection closed: evicted");
                }
            }
        })
        .await;
    }
}

/// Accepts on `listener` until shutdown; each admitted connection is served by `handle` on a
/// task of its own, under the shared [`Admission`] of `ctx`.
pub async fn serve<F, Fut>(listener: TcpListener, what: &'static str, ctx: Context, handle: F)
where
    F: Fn(TcpStream, SocketAddr, Context) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut last_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_error.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    last_error = Some(Instant::now());
                }
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = ctx.admission.admit() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let slot = Arc::new(slot);
        let conn = handle(tcp, peer, ctx.clone());
        let guard = slot.clone();
        ctx.tasks.spawn(SLOT.scope(slot, async move {
            tokio::select! {
                () = conn => {}
                () = guard.must_close() => {
                    tracing::debug!(listener = what, %peer, "closed: not authenticated in time or evicted");
                }
            }
        }));
    }
    tracing::debug!(listener = what, "stopped accepting");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            max,
            pre_auth: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_cap_leaves_descriptor_headroom() {
        assert_eq!(
            Admission::new(limits(100_000), Some(20_000)).cap(),
            20_000 - FD_RESERVE
        );
        assert_eq!(Admission::new(limits(10), Some(20_000)).cap(), 10);
        assert_eq!(Admission::new(limits(10), None).cap(), 10);
    }

    #[test]
    fn at_the_cap_the_oldest_unauthenticated_connection_makes_room() {
        let a = Admission::new(limits(2), None);
        let first = a.admit().unwrap();
        let second = a.admit().unwrap();
        second.mark_authenticated();
        let third = a.admit().expect("evicts the first");
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled());
        drop(first);
        third.mark_authenticated();
        assert_eq!(a.live(), 2);
        assert!(a.admit().is_none(), "everyone is authenticated: refused");
        drop(third);
        assert!(a.admit().is_some(), "room again once one leaves");
    }

    #[tokio::test(start_paused = true)]
    async fn unauthenticated_connections_end_at_the_deadline() {
        let a = Admission::new(limits(10), None);
        let slot = a.admit().unwrap();
        let started = tokio::time::Instant::now();
        slot.must_close().await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let slot = a.admit().unwrap();
        slot.mark_authenticated();
        let waited = tokio::time::timeout(Duration::from_secs(3600), slot.must_close()).await;
        assert!(waited.is_err(), "authenticated connections stay");
    }
}
