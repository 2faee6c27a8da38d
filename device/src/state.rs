//! Connection state: the current value ([`DeviceClient::connection_state`]) and every change
//! ([`DeviceClient::connection_events`]).
//!
//! [`DeviceClient::connection_state`]: crate::DeviceClient::connection_state
//! [`DeviceClient::connection_events`]: crate::DeviceClient::connection_events

use tokio::sync::{broadcast, watch};

use crate::error::Error;

/// Where the client's connection to the hub stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The first connection is being opened.
    Connecting,
    /// Connected. MQTT: the hub accepted the CONNECT. HTTPS: the TLS connection is open and
    /// the last request reached the hub.
    Connected,
    /// Not connected.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// True while the client is reconnecting (with backoff); false once it has stopped for
        /// good, after which every operation returns the error in `reason` or
        /// [`Error::Closed`].
        retrying: bool,
    },
}

impl ConnectionState {
    /// True for [`ConnectionState::Connected`].
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }

    /// True once the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            ConnectionState::Disconnected {
                retrying: false,
                ..
            }
        )
    }

    /// The error that stopped the client, if one did.
    pub(crate) fn fatal_error(&self) -> Option<Error> {
        match self {
            ConnectionState::Disconnected {
                reason: DisconnectReason::Refused(e),
                retrying: false,
            } => Some(e.clone()),
            _ => None,
        }
    }
}

/// Why the client is not connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection to reconnect with a fresh SAS token (MQTT reads the
    /// token only at CONNECT).
    TokenRenewal,
    /// The network or the hub dropped the connection.
    ConnectionLost {
        /// What the client saw.
        detail: String,
    },
    /// The hub refused a connection or request, or it could not be made. With `retrying:
    /// false` this is why the client stopped.
    Refused(Error),
    /// The application closed the client.
    Closed,
}

/// Publishes state changes to the watch and the event stream.
#[derive(Clone)]
pub(crate) struct StateReporter {
    watch: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ConnectionState>,
}

impl StateReporter {
    pub fn new() -> Self {
        let (watch, _) = watch::channel(ConnectionState::Connecting);
        let (events, _) = broadcast::channel(64);
        StateReporter { watch, events }
    }

    /// Records a new state; repeating the current state is not an event.
    pub fn set(&self, state: ConnectionState) {
        let changed = self.watch.send_if_modified(|cur| {
            if *cur == state || cur.is_closed() {
                false
            } else {
                *cur = state.clone();
                true
            }
        });
        if changed {
            tracing::debug!(?state, "connection state");
            let _ = self.events.send(state);
        }
    }

    pub fn current(&self) -> ConnectionState {
        self.watch.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.watch.subscribe()
    }

    pub fn events(&self) -> ConnectionEvents {
        ConnectionEvents {
            rx: self.events.subscribe(),
        }
    }
}

/// Every connection-state change from the moment it was created, in order.
///
/// Unlike the [`watch`] from [`DeviceClient::connection_state`](crate::DeviceClient::connection_state),
/// which only keeps the latest value, this sees each change, e.g. a token-renewal reconnect that
/// took a few milliseconds. It holds the last 64 changes; a reader that falls further behind
/// skips the oldest.
#[derive(Debug)]
pub struct ConnectionEvents {
    rx: broadcast::Receiver<ConnectionState>,
}

impl ConnectionEvents {
    /// The next change; `None` once the client is gone and every change has been read.
    pub async fn recv(&mut self) -> Option<ConnectionState> {
        loop {
            match self.rx.recv().await {
                Ok(state) => return Some(state),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A change that already happened, without waiting.
    pub fn try_recv(&mut self) -> Option<ConnectionState> {
        loop {
            match self.rx.try_recv() {
                Ok(state) => return Some(state),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_see_every_change_and_closed_is_final() {
        let r = StateReporter::new();
        let mut ev = r.events();
        r.set(ConnectionState::Connected);
        r.set(ConnectionState::Connected);
        r.set(ConnectionState::Disconnected {
            reason: DisconnectReason::TokenRenewal,
            retrying: true,
        });
        r.set(ConnectionState::Connected);
        r.set(ConnectionState::Disconnected {
            reason: DisconnectReason::Refused(Error::Closed),
            retrying: false,
        });
        r.set(ConnectionState::Connected);
        let seen: Vec<_> = std::iter::from_fn(|| ev.try_recv()).collect();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(r.current().is_closed());
        assert_eq!(r.current().fatal_error(), Some(Error::Closed));
    }
}
