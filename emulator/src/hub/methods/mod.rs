//! Direct methods: the service calls a method on a device (or module), the device answers with
//! a status and a payload, and the hub enforces the timeouts in between.
//!
//! Reference: iothub-beyond-c2d.md 2. The adapters drive it like this:
//!
//! - the HTTP layer parses `POST /twins/{id}/methods` with
//!   [`CloudToDeviceMethod::from_json`](iothub_protocol::method::CloudToDeviceMethod::from_json)
//!   and `into_call`, calls [`Hub::invoke_method`], and waits for the one
//!   [`HubEvent::MethodCompleted`] with the returned [`InvocationId`];
//! - a device connection calls [`Hub::method_subscribe`] when it subscribes to
//!   `$iothub/methods/POST/#` (MQTT) or attaches its receiver on the methods node (AMQP), and
//!   [`Hub::method_unsubscribe`] when it unsubscribes, detaches or closes;
//! - it delivers each [`HubEvent::MethodRequest`] addressed to it, and passes the device's
//!   answer to [`Hub::method_response`].
//!
//! Every invocation that [`Hub::invoke_method`] accepts ends exactly once, with a
//! [`HubEvent::MethodCompleted`] carrying either the device's answer or one of the hub's errors:
//!
//! | What happened | Outcome |
//! |---|---|
//! | the device answered in time | `Ok(CloudToDeviceMethodResult { status, payload })` |
//! | no subscriber within `connectTimeoutInSeconds` | 404103 `DeviceNotOnline` |
//! | no answer in time | 504101 `GatewayTimeout` |
//! | the connection holding the request unsubscribed, closed, or its device was disabled | 404104 `DeviceConnectionClosedRemotely` ("Device unavailable") |
//! | the device was deleted (or the hub reset) | 404001 `DeviceNotFound` |
//! | the device answered with a body that is not JSON, or over 128 KB | 400004 `ArgumentInvalid`, 413001 `MessageTooLarge` |
//!
//! Errors known at once (unknown device, invalid call, nobody subscribed with a connect timeout
//! of 0) are returned by [`Hub::invoke_method`] itself and produce no event.
//!
//! ```
//! use iothub_emulator::hub::{ConnectionId, Hub, HubEvent, HubSettings, Identity};
//! use iothub_protocol::method::{CloudToDeviceMethod, JsonPayload};
//! use iothub_protocol::registry::Device;
//! use time::macros::datetime;
//!
//! let now = datetime!(2026-01-01 0:00 UTC);
//! let mut hub = Hub::new(HubSettings::default(), 1);
//! hub.create_device(Device::new("d1"), now)?;
//! let d1 = Identity::device("d1");
//! hub.method_subscribe(ConnectionId(7), &d1, now)?;
//!
//! let body = br#"{"methodName":"reboot","payload":{"delay":5}}"#;
//! let call = CloudToDeviceMethod::from_json(body)?.into_call()?;
//! let invocation = hub.invoke_method(&d1, call, now)?;
//! let Some(HubEvent::MethodRequest(request)) = hub.poll_event() else { unreachable!() };
//! assert_eq!((request.connection, request.name.as_str()), (ConnectionId(7), "reboot"));
//!
//! hub.method_response(ConnectionId(7), &request.rid.to_string(), 200, b"\"done\"", now);
//! let Some(HubEvent::MethodCompleted { invocation: ended, outcome }) = hub.poll_event() else {
//!     unreachable!()
//! };
//! assert_eq!(ended, invocation);
//! assert_eq!(outcome.unwrap().payload, JsonPayload::from_json("\"done\"").unwrap());
//! # Ok::<(), iothub_protocol::HubError>(())
//! ```

mod table;

#[cfg(test)]
mod connection_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use iothub_protocol::HubError;
use iothub_protocol::method::{
    CloudToDeviceMethodResult, JsonPayload, MethodCall, PayloadError, request_topic,
};
use iothub_protocol::registry::DeviceStatus;
use time::OffsetDateTime;

use super::store::Store;
use super::timers::Timer;
use super::{Hub, HubEvent, Identity};
use table::Invocation;
pub(crate) use table::MethodTable;

/// How much earlier than the service client's own HTTP timeout the hub answers 504101.
///
/// The Node service SDK sets its socket timeout to exactly connect + response timeout (NHUB-DM),
/// starting before the request reaches the hub; a 504 sent at that instant would race it. The
/// hub therefore ends every invocation by `received + connect + response - margin`. When the
/// request is sent at once and the connect timeout is at least the margin, this changes
/// nothing: the response timeout then counts in full from the send.
pub const HTTP_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// A device connection, as the adapter numbers it (the driver's connection id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// One method invocation, numbered by the hub in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InvocationId(pub(crate) u64);

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The request id (`$rid`) of a method request sent to a device.
///
/// A hub-wide counter, so ids are unique per connection (and across connections). Over MQTT it
/// is written in decimal, which every SDK's parser takes as an opaque string
/// (iothub-beyond-c2d.md 2.2); over AMQP it must be a UUID (the C and C# SDKs parse the
/// correlation id as one, 2.3), so [`RequestId::to_uuid`] spells the same number as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id as an AMQP correlation id: a UUID whose low 64 bits are the number.
    pub fn to_uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_u64_pair(0, self.0)
    }

    /// Reads an id the way a device echoes it: decimal (MQTT `$rid`), or a UUID in any of its
    /// spellings (AMQP correlation id, uuid-typed or as a string).
    pub fn parse(s: &str) -> Option<RequestId> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().map(RequestId);
        }
        match uuid::Uuid::parse_str(s).ok()?.as_u64_pair() {
            (0, n) => Some(RequestId(n)),
            _ => None,
        }
    }
}

/// Decimal, the MQTT form.
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A method request for the adapter to deliver on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodRequest {
    /// The invocation it belongs to (for logs; the device never sees it).
    pub invocation: InvocationId,
    /// The connection to send it on: the identity's newest subscriber.
    pub connection: ConnectionId,
    /// The device or module called.
    pub identity: Identity,
    /// The request id the device must answer with.
    pub rid: RequestId,
    /// The method name.
    pub name: String,
    /// The payload, exactly as the service sent it; `null` when it sent none. Never empty, so
    /// it is the MQTT body as is (the Node SDK cannot parse an empty one).
    pub payload: JsonPayload,
}

impl MethodRequest {
    /// The MQTT topic to publish it on: `$iothub/methods/POST/{name}/?$rid={rid}`.
    pub fn mqtt_topic(&self) -> String {
        request_topic(&self.name, &self.rid.to_string())
    }
}

/// How an invocation ended: the device's answer, or the hub's error.
pub type MethodOutcome = Result<CloudToDeviceMethodResult, HubError>;

/// What became of a device's answer, for the adapter to log. Only `Answered` had an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// It ended this invocation (a [`HubEvent::MethodCompleted`] was emitted).
    Answered(InvocationId),
    /// The request id was issued, but its invocation has already ended (timed out, failed,
    /// or answered before): a late or repeated answer, dropped.
    Late,
    /// The request id belongs to a request sent on another connection: dropped.
    WrongConnection,
    /// This hub never issued the request id: dropped.
    Unknown,
}

/// Seconds as a duration.
fn secs(n: u32) -> Duration {
    Duration::from_secs(n.into())
}

impl<S: Store> Hub<S> {
    /// Invokes a direct method on `identity` (`POST /twins/{id}/methods`).
    ///
    /// If a connection of the identity is subscribed, the request goes to the newest one at
    /// once; otherwise the invocation waits up to the connect timeout for a subscription. On
    /// `Ok` exactly one [`HubEvent::MethodCompleted`] with the returned id follows (possibly
    /// from a later operation or deadline). Errors, with no event: `DeviceNotFound`, the call's
    /// own rule violations (`ArgumentInvalid`, `MessageTooLarge`), and `DeviceNotOnline` when
    /// nothing is subscribed and the connect timeout is 0.
    ///
    /// A module identity must be registered on its device (`ModuleNotFound` otherwise); like a
    /// device, it is reached only through a connection of its own that subscribed.
    pub fn invoke_method(
        &mut self,
        identity: &Identity,
        call: MethodCall,
        now: OffsetDateTime,
    ) -> Result<InvocationId, HubError> {
        self.handle_timeout(now);
        call.check()?;
        self.check_identity(identity)?;
        let target = self.methods.target(identity);
        if target.is_none() && call.connect_timeout_secs == 0 {
            return Err(HubError::DeviceNotOnline {
                identity: identity.to_string(),
                connect_timeout_secs: 0,
            });
        }
        let id = self.methods.next_invocation_id();
        let timer = self.timers.insert(
            now + secs(call.connect_timeout_secs),
            Timer::MethodDeadline { invocation: id },
        );
        self.methods.insert(
            id,
            Invocation {
                identity: identity.clone(),
                name: call.name,
                payload: Some(call.payload),
                connect_timeout_secs: call.connect_timeout_secs,
                response_timeout_secs: call.response_timeout_secs,
                received: now,
                timer,
                sent: None,
            },
        );
        if let Some(connection) = target {
            self.send_method(id, connection, now);
        }
        Ok(id)
    }

    /// Records that `connection` (of `identity`) now listens for method requests; invocations
    /// waiting for the identity are sent to it, oldest first. It becomes the identity's newest
    /// subscriber: during a takeover, new requests go to the connection that subscribed last.
    ///
    /// Errors: the device is unknown or disabled (the adapter should refuse the subscription).
    pub fn method_subscribe(
        &mut self,
        connection: ConnectionId,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        self.handle_timeout(now);
        let entry =
            self.store
                .get(&identity.device_id)
                .ok_or_else(|| HubError::DeviceNotFound {
                    device_id: identity.device_id.clone(),
                })?;
        if entry.device.status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled {
                device_id: identity.device_id.clone(),
            });
        }
        self.check_identity(identity)?;
        self.methods.subscribe(connection, identity);
        for id in self.methods.waiting_for(identity) {
            self.send_method(id, connection, now);
        }
        Ok(())
    }

    /// Records that `connection` no longer listens for method requests: it unsubscribed,
    /// detached its methods link, or closed. Call it on every close; for a connection that
    /// never subscribed it does nothing. Requests in flight on it end with 404104
    /// `DeviceConnectionClosedRemotely` (the hub's "Device unavailable"); invocations still
    /// waiting keep waiting for another subscriber.
    pub fn method_unsubscribe(&mut self, connection: ConnectionId, now: OffsetDateTime) {
        self.handle_timeout(now);
        self.methods.unsubscribe(connection);
        self.fail_in_flight(connection);
    }

    /// Takes a device's answer: `rid` as the device sent it (MQTT `$rid`, AMQP correlation id),
    /// `status` from the topic or `IoThub-status`, `body` the payload bytes (empty means `null`).
    ///
    /// Only the connection the request went to can answer it, and only once; anything else is
    /// dropped and reported, so the adapter can log it.
    pub fn method_response(
        &mut self,
        connection: ConnectionId,
        rid: &str,
        status: i32,
        body: &[u8],
        now: OffsetDateTime,
    ) -> ResponseDisposition {
        self.handle_timeout(now);
        let Some(rid) = RequestId::parse(rid) else {
            return ResponseDisposition::Unknown;
        };
        let Some(id) = self.methods.by_rid(rid) else {
            return if self.methods.was_issued(rid) {
                ResponseDisposition::Late
            } else {
                ResponseDisposition::Unknown
            };
        };
        let Some(inv) = self.methods.get(id) else {
            return ResponseDisposition::Unknown;
        };
        if inv.sent.map(|(c, _)| c) != Some(connection) {
            return ResponseDisposition::WrongConnection;
        }
        let outcome = match JsonPayload::from_body(body) {
            Ok(payload) => Ok(CloudToDeviceMethodResult { status, payload }),
            Err(PayloadError::TooLarge { size, max }) => {
                Err(HubError::MessageTooLarge { size, max })
            }
            Err(PayloadError::NotJson { reason }) => Err(HubError::argument(format!(
                "'{}' answered method '{}' with status {status} and a body that is not JSON ({reason}); IoT Hub passes the body on unparsed and the service SDKs then fail to read the result, so answer with a JSON document (or an empty body for null)",
                inv.identity, inv.name
            ))),
        };
        self.end_method(id, outcome);
        ResponseDisposition::Answered(id)
    }

    /// Number of invocations that have not ended.
    pub fn pending_methods(&self) -> usize {
        self.methods.len()
    }

    /// The connection that would receive a method request for `identity` now.
    pub fn method_target(&self, identity: &Identity) -> Option<ConnectionId> {
        self.methods.target(identity)
    }

    /// An invocation's deadline fired: the connect timeout while it waits, the response
    /// timeout once sent.
    pub(super) fn method_deadline(&mut self, id: InvocationId) {
        let Some(inv) = self.methods.get(id) else {
            return;
        };
        let identity = inv.identity.to_string();
        let outcome = match inv.sent {
            None => HubError::DeviceNotOnline {
                identity,
                connect_timeout_secs: inv.connect_timeout_secs,
            },
            Some(_) => HubError::GatewayTimeout {
                identity,
                method: inv.name.clone(),
                response_timeout_secs: inv.response_timeout_secs,
            },
        };
        self.end_method(id, Err(outcome));
    }

    /// The device was deleted: its subscriptions go, and every invocation for it (or its
    /// modules) ends with `DeviceNotFound`.
    pub(super) fn methods_device_deleted(&mut self, device_id: &str) {
        self.methods.unsubscribe_device(device_id);
        for id in self.methods.for_device(device_id) {
            let not_found = HubError::DeviceNotFound {
                device_id: device_id.to_owned(),
            };
            self.end_method(id, Err(not_found));
        }
    }

    /// The module was deleted: its subscriptions go, and every invocation for it ends with
    /// `ModuleNotFound`.
    pub(super) fn methods_module_deleted(&mut self, identity: &Identity) {
        self.methods.unsubscribe_identity(identity);
        for id in self.methods.for_device(&identity.device_id) {
            if self
                .methods
                .get(id)
                .is_some_and(|inv| inv.identity == *identity)
            {
                let not_found = HubError::ModuleNotFound {
                    device_id: identity.device_id.clone(),
                    module_id: identity.module_id.clone().unwrap_or_default(),
                };
                self.end_method(id, Err(not_found));
            }
        }
    }

    /// The device was disabled: its connections are being closed, so its subscriptions go
    /// and its requests in flight fail as on a disconnect. Waiting invocations keep waiting (it
    /// may be enabled again and connect within their connect timeout).
    pub(super) fn methods_device_disabled(&mut self, device_id: &str) {
        self.methods.unsubscribe_device(device_id);
        for id in self.methods.for_device(device_id) {
            if let Some(inv) = self.methods.get(id)
                && inv.sent.is_some()
            {
                let closed = HubError::DeviceConnectionClosedRemotely {
                    identity: inv.identity.to_string(),
                    method: inv.name.clone(),
                };
                self.end_method(id, Err(closed));
            }
        }
    }

    /// The hub is being emptied: every invocation ends with `DeviceNotFound`.
    pub(super) fn methods_reset(&mut self) {
        self.methods.unsubscribe_all();
        for id in self.methods.all() {
            if let Some(inv) = self.methods.get(id) {
                let not_found = HubError::DeviceNotFound {
                    device_id: inv.identity.device_id.clone(),
                };
                self.end_method(id, Err(not_found));
            }
        }
    }

    /// Sends a waiting invocation on `connection` and arms its response deadline.
    fn send_method(&mut self, id: InvocationId, connection: ConnectionId, now: OffsetDateTime) {
        let Some((rid, payload)) = self.methods.mark_sent(id, connection) else {
            return;
        };
        let Some(inv) = self.methods.get_mut(id) else {
            return;
        };
        let by_response = now + secs(inv.response_timeout_secs);
        let by_client = inv.received + secs(inv.connect_timeout_secs + inv.response_timeout_secs)
            - HTTP_TIMEOUT_MARGIN;
        self.timers.remove(inv.timer);
        inv.timer = self.timers.insert(
            by_response.min(by_client),
            Timer::MethodDeadline { invocation: id },
        );
        self.events
            .push_back(HubEvent::MethodRequest(MethodRequest {
                invocation: id,
                connection,
                identity: inv.identity.clone(),
                rid,
                name: inv.name.clone(),
                payload,
            }));
    }

    /// Ends the requests in flight on `connection` as the hub does when a device goes away.
    fn fail_in_flight(&mut self, connection: ConnectionId) {
        for id in self.methods.in_flight_on(connection) {
            if let Some(inv) = self.methods.get(id) {
                let closed = HubError::DeviceConnectionClosedRemotely {
                    identity: inv.identity.to_string(),
                    method: inv.name.clone(),
                };
                self.end_method(id, Err(closed));
            }
        }
    }

    /// The one place an invocation ends: its state and deadline go, and the event goes out.
    fn end_method(&mut self, id: InvocationId, outcome: MethodOutcome) {
        if let Some(inv) = self.methods.remove(id) {
            self.timers.remove(inv.timer);
            self.events.push_back(HubEvent::MethodCompleted {
                invocation: id,
                outcome,
            });
        }
    }
}
