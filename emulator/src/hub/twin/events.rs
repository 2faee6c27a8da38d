//! Non-telemetry events for the Event Hubs-compatible endpoint (iothub-beyond-c2d.md 3.6):
//! twin changes, identity creation and deletion, connects and disconnects.
//!
//! A real hub sends these only through a route; here each source is switched on in
//! [`HubSettings::routes`](super::super::HubSettings) (all off by default) and the hub then
//! emits a [`HubEvent::NonTelemetry`](super::super::HubEvent) carrying a
//! [`NonTelemetryEvent`]: plain data the event log turns into an AMQP message with
//! - properties: `content-type` [`NonTelemetryEvent::CONTENT_TYPE`], `content-encoding`
//!   [`NonTelemetryEvent::CONTENT_ENCODING`], a unique `correlation-id`, `user-id` = hub name;
//! - annotations: `iothub-connection-device-id` (and `-module-id`), `iothub-enqueuedtime`,
//!   `iothub-message-source` = [`EventSource::as_str`];
//! - application properties: [`NonTelemetryEvent::application_properties`];
//! - body: [`NonTelemetryEvent::body`] as UTF-8 JSON.

use iothub_protocol::time_format::format_round_trip;
use serde_json::Value;
use time::OffsetDateTime;

use iothub_protocol::{Message, MessageId};

use super::super::Identity;
use super::super::event_log::{EventSource as LogSource, NewEvent};

/// `iothub-message-source` of a non-telemetry event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// Tags, desired or reported properties changed.
    TwinChangeEvents,
    /// An identity was created or deleted.
    DeviceLifecycleEvents,
    /// A device connected or disconnected (MQTT or AMQP).
    DeviceConnectionStateEvents,
}

impl EventSource {
    /// The `iothub-message-source` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::TwinChangeEvents => "twinChangeEvents",
            EventSource::DeviceLifecycleEvents => "deviceLifecycleEvents",
            EventSource::DeviceConnectionStateEvents => "deviceConnectionStateEvents",
        }
    }

    /// The `iothub-message-schema` application property.
    pub fn schema(self) -> &'static str {
        match self {
            EventSource::TwinChangeEvents => "twinChangeNotification",
            EventSource::DeviceLifecycleEvents => "deviceLifecycleNotification",
            EventSource::DeviceConnectionStateEvents => "deviceConnectionStateNotification",
        }
    }
}

/// One non-telemetry event, ready for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonTelemetryEvent {
    /// Which kind of event.
    pub source: EventSource,
    /// The device or module it is about.
    pub identity: Identity,
    /// `opType`: `updateTwin`, `replaceTwin`, `createDeviceIdentity`,
    /// `deleteDeviceIdentity`, `deviceConnected` or `deviceDisconnected`.
    pub op_type: &'static str,
    /// When the operation happened (`operationTimestamp`, and a fair `iothub-enqueuedtime`).
    pub operation_time: OffsetDateTime,
    /// The hub name (`hubName`, `user-id`).
    pub hub_name: String,
    /// The JSON body.
    pub body: Value,
}

impl NonTelemetryEvent {
    /// `content-type` of every non-telemetry event.
    pub const CONTENT_TYPE: &'static str = "application/json";
    /// `content-encoding` of every non-telemetry event.
    pub const CONTENT_ENCODING: &'static str = "utf-8";

    /// The application properties, in the order the docs list them: `hubName`, `deviceId`,
    /// `moduleId` (modules only), `operationTimestamp`, `iothub-message-schema`, `opType`.
    pub fn application_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("hubName", self.hub_name.clone()),
            ("deviceId", self.identity.device_id.clone()),
        ];
        if let Some(m) = &self.identity.module_id {
            out.push(("moduleId", m.clone()));
        }
        out.push(("operationTimestamp", format_round_trip(self.operation_time)));
        out.push(("iothub-message-schema", self.source.schema().to_owned()));
        out.push(("opType", self.op_type.to_owned()));
        out
    }

    /// The body as the bytes of the event.
    pub fn body_bytes(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail.
        serde_json::to_vec(&self.body).unwrap_or_default()
    }

    /// The event as the event log stores it: properties, application properties and body as
    /// the module documentation lists them, with `correlation_id` as its `correlation-id`.
    pub(crate) fn to_log_event(&self, correlation_id: String) -> NewEvent {
        let mut message = Message::new(self.body_bytes());
        let s = &mut message.system;
        s.content_type = Some(Self::CONTENT_TYPE.to_owned());
        s.content_encoding = Some(Self::CONTENT_ENCODING.to_owned());
        s.correlation_id = Some(MessageId::from(correlation_id));
        s.user_id = Some(self.hub_name.clone());
        for (k, v) in self.application_properties() {
            message.properties.insert(k, v);
        }
        let source = match self.source {
            EventSource::TwinChangeEvents => LogSource::TwinChangeEvents,
            EventSource::DeviceLifecycleEvents => LogSource::DeviceLifecycleEvents,
            EventSource::DeviceConnectionStateEvents => LogSource::DeviceConnectionStateEvents,
        };
        NewEvent {
            source,
            origin: self.identity.clone(),
            connection: None,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn properties_follow_the_docs() {
        let e = NonTelemetryEvent {
            source: EventSource::TwinChangeEvents,
            identity: Identity::module("d1", "m1"),
            op_type: "updateTwin",
            operation_time: datetime!(2024-05-01 10:00:00.5 UTC),
            hub_name: "hub".into(),
            body: json!({"version": 3}),
        };
        let props = e.application_properties();
        let names: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "hubName",
                "deviceId",
                "moduleId",
                "operationTimestamp",
                "iothub-message-schema",
                "opType"
            ]
        );
        assert_eq!(props[3].1, "2024-05-01T10:00:00.5000000Z");
        assert_eq!(props[4].1, "twinChangeNotification");
        assert_eq!(e.body_bytes(), br#"{"version":3}"#);
        assert_eq!(e.source.as_str(), "twinChangeEvents");
    }
}
