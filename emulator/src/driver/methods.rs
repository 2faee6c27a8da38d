//! Direct methods between the hub and the sockets: the service's waiting request, and the
//! device connections that listen for method requests.
//!
//! The rules (timeouts, exactly-once outcomes, which connection gets a request) are the hub's
//! (`hub::methods`); this file only carries its two events to where they are awaited:
//!
//! - [`HubEvent::MethodRequest`](crate::hub::HubEvent::MethodRequest) goes to the
//!   [`MethodListener`] the hub picked (its [`ConnectionId`]), whatever transport holds it;
//! - [`HubEvent::MethodCompleted`](crate::hub::HubEvent::MethodCompleted) goes to the
//!   [`PendingMethod`] of the service request that invoked it.
//!
//! Both are registered under the hub lock or before the hub can emit for them, so neither event
//! can be dispatched before its receiver exists.

use std::sync::atomic::Ordering;

use dashmap::DashMap;
use iothub_protocol::HubError;
use iothub_protocol::method::MethodCall;
use tokio::sync::{mpsc, oneshot};

use super::HubHandle;
use crate::hub::{
    ConnectionId, Identity, InvocationId, MethodOutcome, MethodRequest, ResponseDisposition,
};

/// Where the two method events go.
#[derive(Default)]
pub(super) struct MethodRoutes {
    /// Listening connections, by the id the hub knows them by.
    listeners: DashMap<ConnectionId, mpsc::UnboundedSender<MethodRequest>>,
    /// Service requests waiting for their invocation to end.
    waiters: DashMap<InvocationId, oneshot::Sender<MethodOutcome>>,
}

impl HubHandle {
    /// Invokes a direct method; the returned [`PendingMethod`] resolves exactly once, when the
    /// hub ends the invocation (answer, 404103, 504101, ...). Errors known at once (unknown
    /// device, invalid call, offline with connect timeout 0) are returned here.
    pub fn invoke_method(
        &self,
        identity: &Identity,
        call: MethodCall,
    ) -> Result<PendingMethod, HubError> {
        let (tx, rx) = oneshot::channel();
        self.run(|hub, now| {
            let id = hub.invoke_method(identity, call, now)?;
            // Under the hub lock: its completion cannot be dispatched before this exists.
            self.inner.methods.waiters.insert(id, tx);
            Ok(PendingMethod { rx })
        })
    }

    /// Makes a device (or module) connection listen for method requests: the MQTT
    /// subscription to `$iothub/methods/POST/#` or the AMQP methods link. Requests waiting for
    /// the identity arrive at once. Dropping the listener unsubscribes; requests in flight on
    /// it then fail as the hub fails them on a disconnect.
    pub fn listen_methods(&self, identity: &Identity) -> Result<MethodListener, HubError> {
        let connection = ConnectionId(self.inner.next_connection.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        // Before the hub can send anything to it.
        self.inner.methods.listeners.insert(connection, tx);
        if let Err(e) = self.run(|hub, now| hub.method_subscribe(connection, identity, now)) {
            self.inner.methods.listeners.remove(&connection);
            return Err(e);
        }
        Ok(MethodListener {
            handle: self.clone(),
            connection,
            rx,
        })
    }

    /// Sends a request to the listener the hub chose. A listener that is gone (it cannot be
    /// while the hub still counts it, but a peer must never wedge an invocation) is
    /// unsubscribed, which fails the request at once.
    pub(super) fn deliver_method(&self, request: MethodRequest) {
        let connection = request.connection;
        let sent = match self.inner.methods.listeners.get(&connection) {
            Some(tx) => tx.send(request).is_ok(),
            None => false,
        };
        if !sent {
            self.run(|hub, now| hub.method_unsubscribe(connection, now));
        }
    }

    /// Hands an ended invocation to its waiting service request (which may have gone: the
    /// service closed its HTTP connection).
    pub(super) fn complete_method(&self, invocation: InvocationId, outcome: MethodOutcome) {
        if let Some((_, tx)) = self.inner.methods.waiters.remove(&invocation) {
            let _ = tx.send(outcome);
        }
    }
}

/// A service request waiting for its invocation to end.
#[derive(Debug)]
pub struct PendingMethod {
    rx: oneshot::Receiver<MethodOutcome>,
}

impl PendingMethod {
    /// The outcome, when the hub ends the invocation (never later than its connect plus
    /// response timeout on the hub clock).
    pub async fn outcome(self) -> MethodOutcome {
        self.rx.await.unwrap_or_else(|_| {
            // Only a dropped hub handle gets here: the emulator is stopping.
            Err(HubError::ServerError {
                detail: "the emulator stopped before the method invocation ended".to_owned(),
            })
        })
    }
}

/// One device connection listening for method requests (see [`HubHandle::listen_methods`]).
pub struct MethodListener {
    handle: HubHandle,
    connection: ConnectionId,
    rx: mpsc::UnboundedReceiver<MethodRequest>,
}

impl MethodListener {
    /// The next request to deliver on this connection. Cancel-safe.
    pub async fn recv(&mut self) -> Option<MethodRequest> {
        self.rx.recv().await
    }

    /// A request already waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<MethodRequest> {
        self.rx.try_recv().ok()
    }

    /// The device's answer to a request delivered here: `rid` as the device echoed it,
    /// `status`, and the body (empty means `null`).
    pub fn respond(&self, rid: &str, status: i32, body: &[u8]) -> ResponseDisposition {
        self.responder().respond(rid, status, body)
    }

    /// A handle that answers for this listener from elsewhere (AMQP takes answers on another
    /// link than the one requests go out on). It answers nothing once the listener is dropped.
    pub fn responder(&self) -> MethodResponder {
        MethodResponder {
            handle: self.handle.clone(),
            connection: self.connection,
        }
    }
}

/// Answers method requests delivered to one [`MethodListener`].
#[derive(Clone)]
pub struct MethodResponder {
    handle: HubHandle,
    connection: ConnectionId,
}

impl MethodResponder {
    /// See [`MethodListener::respond`].
    pub fn respond(&self, rid: &str, status: i32, body: &[u8]) -> ResponseDisposition {
        let connection = self.connection;
        self.handle
            .run(|hub, now| hub.method_response(connection, rid, status, body, now))
    }

    /// True when both answer for the same listener.
    pub fn same_listener(&self, other: &MethodResponder) -> bool {
        self.connection == other.connection
    }
}

impl Drop for MethodListener {
    fn drop(&mut self) {
        let connection = self.connection;
        self.handle.inner.methods.listeners.remove(&connection);
        self.handle
            .run(|hub, now| hub.method_unsubscribe(connection, now));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use iothub_protocol::method::JsonPayload;
    use iothub_protocol::registry::Device;
    use iothub_protocol::{ErrorCode, HubError};

    use super::*;
    use crate::driver::Clock;
    use crate::hub::{Hub, HubSettings};

    fn handle() -> HubHandle {
        let h = HubHandle::new(Hub::new(HubSettings::default(), 2), Clock::new(true));
        h.run(|hub, now| hub.create_device(Device::new("d1"), now))
            .unwrap();
        h
    }

    fn call(connect: u32, response: u32) -> MethodCall {
        MethodCall {
            connect_timeout_secs: connect,
            response_timeout_secs: response,
            ..MethodCall::new("reboot", JsonPayload::from_json(r#"{"a":1}"#).unwrap())
        }
    }

    #[tokio::test]
    async fn a_listener_answers_and_the_service_gets_it() {
        let h = handle();
        let d1 = Identity::device("d1");
        let mut listener = h.listen_methods(&d1).unwrap();
        let pending = h.invoke_method(&d1, call(0, 30)).unwrap();
        let req = listener.recv().await.unwrap();
        assert_eq!(
            (req.name.as_str(), req.payload.as_str()),
            ("reboot", r#"{"a":1}"#)
        );
        let d = listener.respond(&req.rid.to_string(), 201, b"[1]");
        assert!(matches!(d, ResponseDisposition::Answered(_)));
        let r = pending.outcome().await.unwrap();
        assert_eq!((r.status, r.payload.as_str()), (201, "[1]"));
        assert_eq!(
            listener.respond(&req.rid.to_string(), 200, b""),
            ResponseDisposition::Late
        );
    }

    #[tokio::test]
    async fn a_waiting_invocation_goes_to_the_device_that_subscribes_later() {
        let h = handle();
        let d1 = Identity::device("d1");
        let pending = h.invoke_method(&d1, call(10, 30)).unwrap();
        let mut listener = h.listen_methods(&d1).unwrap();
        let req = listener.recv().await.unwrap();
        listener.respond(&req.rid.to_string(), 200, b"null");
        assert_eq!(pending.outcome().await.unwrap().payload.as_str(), "null");
    }

    #[tokio::test]
    async fn timeouts_run_on_the_hub_clock() {
        let h = handle();
        let d1 = Identity::device("d1");
        let offline = h.invoke_method(&d1, call(5, 30)).unwrap();
        assert!(h.advance_clock(Duration::from_secs(6)));
        let e = offline.outcome().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::DeviceNotOnline);

        let mut listener = h.listen_methods(&d1).unwrap();
        let silent = h.invoke_method(&d1, call(0, 5)).unwrap();
        listener.recv().await.unwrap();
        assert!(h.advance_clock(Duration::from_secs(6)));
        let e = silent.outcome().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::GatewayTimeout);
    }

    #[tokio::test]
    async fn dropping_the_listener_fails_what_it_holds_and_offline_fails_at_once() {
        let h = handle();
        let d1 = Identity::device("d1");
        let listener = h.listen_methods(&d1).unwrap();
        let pending = h.invoke_method(&d1, call(0, 30)).unwrap();
        drop(listener);
        let e = pending.outcome().await.unwrap_err();
        assert!(matches!(e, HubError::DeviceConnectionClosedRemotely { .. }));
        let e = h.invoke_method(&d1, call(0, 30)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::DeviceNotOnline);
        assert!(h.listen_methods(&Identity::device("ghost")).is_err());
        assert_eq!(h.read(|hub| hub.pending_methods()), 0);
    }
}
