//! What every task of one client shares, whatever the transport: where connection-state
//! changes are reported, the token that stops everything, and the tracker `close` waits on.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::StateReporter;

/// The handles a transport's tasks need from the client.
#[derive(Clone)]
pub(crate) struct Runtime {
    /// Connection-state changes.
    pub state: StateReporter,
    /// Cancelled when the client closes or stops.
    pub shutdown: CancellationToken,
    /// Every task the client spawned.
    pub tasks: TaskTracker,
}

impl Runtime {
    pub fn new() -> Self {
        Runtime {
            state: StateReporter::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }
}
