//! Twin operations on the hub: what the MQTT, AMQP and REST adapters call.
//!
//! Reads take `&self` and no clock (nothing in a twin read depends on time); writes take
//! `now`, fire due deadlines first like every other operation, and leave their notifications
//! in the event queue: [`HubEvent::TwinDesiredChanged`] for devices, in version order, and
//! [`HubEvent::NonTelemetry`] for the routes switched on in the settings.

use iothub_protocol::HubError;
use iothub_protocol::twin::{JsonObject, Twin, TwinProperties, TwinWrite};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::super::store::Store;
use super::super::{Hub, HubEvent, Identity, if_match_allows};
use super::events::{EventSource, NonTelemetryEvent};
use super::{ServiceWriteOutcome, TwinState, WriteMode, module_service_view, service_view};

impl<S: Store> Hub<S> {
    /// The twin as the service sees it (`GET /twins/{id}`).
    ///
    /// ```
    /// use iothub_emulator::hub::{Hub, HubSettings, Identity};
    /// use iothub_protocol::registry::Device;
    /// use iothub_protocol::twin::TwinWrite;
    /// use serde_json::json;
    ///
    /// let now = time::OffsetDateTime::UNIX_EPOCH;
    /// let mut hub = Hub::new(HubSettings::default(), 1);
    /// hub.create_device(Device::new("d1"), now).unwrap();
    /// let id = Identity::device("d1");
    /// let twin = hub.get_twin(&id).unwrap();
    /// assert_eq!(twin.etag.as_deref(), Some("AAAAAAAAAAE="));
    ///
    /// let body = json!({"properties": {"desired": {"fw": "1.2"}}});
    /// let write = TwinWrite::from_json(&body).unwrap();
    /// let twin = hub.update_twin(&id, &write, twin.etag.as_deref(), now).unwrap();
    /// assert_eq!(twin.properties.desired_version(), Some(2));
    /// ```
    pub fn get_twin(&self, identity: &Identity) -> Result<Twin, HubError> {
        self.twin_entry(identity)
    }

    /// The twin as the device sees it (MQTT/AMQP GET): `{"desired":{..,"$version":n},
    /// "reported":{..,"$version":m}}`, without tags or `$metadata`.
    pub fn get_twin_properties(&self, identity: &Identity) -> Result<TwinProperties, HubError> {
        Ok(self.twin_state(identity)?.properties(false))
    }

    /// `PATCH /twins/{id}`: merges tags and desired properties (`null` removes a key; a
    /// section set to `null` is emptied). `if_match` is the `If-Match` header (an etag or
    /// `*`); a stale etag gives `PreconditionFailed`. Returns the updated twin.
    pub fn update_twin(
        &mut self,
        identity: &Identity,
        write: &TwinWrite,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Twin, HubError> {
        self.write_twin(identity, write, WriteMode::Patch, if_match, now)
    }

    /// `PUT /twins/{id}`: replaces tags and desired properties with the body's (a section
    /// the body leaves out becomes empty). Same `if_match` rules as [`Hub::update_twin`].
    pub fn replace_twin(
        &mut self,
        identity: &Identity,
        write: &TwinWrite,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Twin, HubError> {
        self.write_twin(identity, write, WriteMode::Replace, if_match, now)
    }

    /// A device's reported-properties patch (MQTT `PATCH/properties/reported`, AMQP `PATCH`).
    /// Returns the new `properties.reported.$version`, which the MQTT response carries as
    /// `$version` and the AMQP response as its `version` annotation.
    pub fn update_reported_properties(
        &mut self,
        identity: &Identity,
        patch: &JsonObject,
        now: OffsetDateTime,
    ) -> Result<i64, HubError> {
        self.handle_timeout(now);
        let twin = self.twin_state_mut(identity)?;
        let reported = twin.patch_reported(patch, now)?;
        let (version, reported_version) = (twin.version(), twin.reported().version());
        self.store.commit(&[&identity.device_id]);
        if self.settings.routes.twin_change_events {
            let body = json!({"version": version, "properties": {"reported": reported}});
            self.push_notification(
                EventSource::TwinChangeEvents,
                identity,
                "updateTwin",
                body,
                now,
            );
        }
        Ok(reported_version)
    }

    /// A service write in the given mode, after the `If-Match` check. Used by the REST
    /// operations above and by bulk `updateTwin`.
    pub(crate) fn write_twin(
        &mut self,
        identity: &Identity,
        write: &TwinWrite,
        mode: WriteMode,
        if_match: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Twin, HubError> {
        self.handle_timeout(now);
        let twin = self.twin_state_mut(identity)?;
        if let Some(m) = if_match {
            let etag = twin.etag();
            if !if_match_allows(m, &etag) {
                return Err(HubError::PreconditionFailed {
                    detail: format!(
                        "the etag in If-Match does not match the twin of '{identity}' (current etag \"{etag}\"); read the twin again"
                    ),
                });
            }
        }
        if let Some(outcome) = twin.write(write, mode, now)? {
            let version = twin.version();
            self.store.commit(&[&identity.device_id]);
            self.twin_written(identity, version, outcome, now);
        }
        self.get_twin(identity)
    }

    fn twin_written(
        &mut self,
        identity: &Identity,
        version: i64,
        outcome: ServiceWriteOutcome,
        now: OffsetDateTime,
    ) {
        if let Some(d) = &outcome.desired {
            self.events.push_back(HubEvent::TwinDesiredChanged {
                identity: identity.clone(),
                version: d.version,
                patch: Value::Object(d.notification.clone()),
            });
        }
        if !self.settings.routes.twin_change_events {
            return;
        }
        let (op, body) = if outcome.replaced {
            let full = self
                .get_twin(identity)
                .ok()
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or(Value::Null);
            ("replaceTwin", full)
        } else {
            let mut body = json!({"version": version});
            if let Some(tags) = outcome.tags {
                body["tags"] = tags;
            }
            if let Some(d) = outcome.desired {
                body["properties"] = json!({"desired": d.event});
            }
            ("updateTwin", body)
        };
        self.push_notification(EventSource::TwinChangeEvents, identity, op, body, now);
    }

    /// Emits `createDeviceIdentity` for a new identity, if lifecycle events are routed.
    pub(crate) fn identity_created(&mut self, identity: &Identity, now: OffsetDateTime) {
        if self.settings.routes.device_lifecycle_events
            && let Ok(twin) = self.get_twin(identity)
        {
            self.identity_lifecycle(twin, "createDeviceIdentity", now);
        }
    }

    /// The twin to put in a `deleteDeviceIdentity` event: read it before deleting, pass it to
    /// [`Hub::identity_deleted`] after. `None` when lifecycle events are not routed.
    pub(crate) fn twin_before_delete(&self, identity: &Identity) -> Option<Twin> {
        if self.settings.routes.device_lifecycle_events {
            self.get_twin(identity).ok()
        } else {
            None
        }
    }

    /// Emits `deleteDeviceIdentity` with the twin read by [`Hub::twin_before_delete`].
    pub(crate) fn identity_deleted(&mut self, twin: Option<Twin>, now: OffsetDateTime) {
        if let Some(twin) = twin {
            self.identity_lifecycle(twin, "deleteDeviceIdentity", now);
        }
    }

    fn identity_lifecycle(&mut self, twin: Twin, op: &'static str, now: OffsetDateTime) {
        let identity = Identity {
            device_id: twin.device_id.clone(),
            module_id: twin.module_id.clone(),
        };
        let body = serde_json::to_value(twin).unwrap_or(Value::Null);
        self.push_notification(EventSource::DeviceLifecycleEvents, &identity, op, body, now);
    }

    /// Emits `deviceConnected` / `deviceDisconnected`, if connection-state events are routed.
    /// The body's `sequenceNumber` is 64 hex digits that increase with every such event, so
    /// comparing them as strings orders them.
    pub(crate) fn connection_state_changed(
        &mut self,
        identity: &Identity,
        connected: bool,
        now: OffsetDateTime,
    ) {
        if !self.settings.routes.device_connection_state_events {
            return;
        }
        self.connection_events += 1;
        let body = json!({"sequenceNumber": format!("{:064x}", self.connection_events)});
        let op = if connected {
            "deviceConnected"
        } else {
            "deviceDisconnected"
        };
        self.push_notification(
            EventSource::DeviceConnectionStateEvents,
            identity,
            op,
            body,
            now,
        );
    }

    fn push_notification(
        &mut self,
        source: EventSource,
        identity: &Identity,
        op_type: &'static str,
        body: Value,
        now: OffsetDateTime,
    ) {
        let event = NonTelemetryEvent {
            source,
            identity: identity.clone(),
            op_type,
            operation_time: now,
            hub_name: self.settings.hub_name.clone(),
            body,
        };
        // Routed to the built-in endpoint as the route would: into the event log.
        let correlation_id = uuid::Uuid::from_bytes(self.ids.bytes16()).to_string();
        self.append_event(event.to_log_event(correlation_id), now);
        self.events.push_back(HubEvent::NonTelemetry(event));
    }

    fn twin_entry(&self, identity: &Identity) -> Result<Twin, HubError> {
        let device = self.entry(&identity.device_id)?;
        Ok(match &identity.module_id {
            None => service_view(device),
            Some(m) => module_service_view(device, self.module_entry(&identity.device_id, m)?),
        })
    }

    fn twin_state(&self, identity: &Identity) -> Result<&TwinState, HubError> {
        Ok(match &identity.module_id {
            None => &self.entry(&identity.device_id)?.twin,
            Some(m) => &self.module_entry(&identity.device_id, m)?.twin,
        })
    }

    fn twin_state_mut(&mut self, identity: &Identity) -> Result<&mut TwinState, HubError> {
        Ok(match &identity.module_id {
            None => &mut self.entry_mut(&identity.device_id)?.twin,
            Some(m) => &mut self.module_entry_mut(&identity.device_id, m)?.twin,
        })
    }
}
