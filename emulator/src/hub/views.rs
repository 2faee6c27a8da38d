//! Read-only views of the hub's state, for inspection (the control API, tests).
//!
//! The views are copies: building one never changes the hub, and holding one never holds the
//! hub. They serialize as the control API's JSON (camelCase names, times in RFC 3339 with
//! milliseconds, bodies as base64 plus UTF-8 text when they are text), so the control API
//! returns them as they are and never reads the hub's storage itself.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::registry::{ConnectionState, DeviceStatus, registry_time};
use iothub_protocol::time_format::{serde_millis, serde_millis_opt};
use iothub_protocol::{FeedbackRecord, HubError, Message};
use serde::Serialize;
use time::OffsetDateTime;

use super::Hub;
use super::c2d::{MessageState, QueuedMessage};
use super::feedback::StoredBatch;
use super::store::{D2cRecord, DeviceEntry, Store};

/// A device with its queue counts and connection state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSummary {
    /// The device id.
    pub device_id: String,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Whether an MQTT or AMQP connection is open.
    pub connection_state: ConnectionState,
    /// Last connect, send or receive.
    #[serde(with = "registry_time")]
    pub last_activity_time: Option<OffsetDateTime>,
    /// Pending C2D messages, locked ones included.
    pub cloud_to_device_message_count: usize,
    /// C2D messages a receiver holds locked.
    pub locked_message_count: usize,
    /// Telemetry messages received so far.
    pub device_to_cloud_message_count: u64,
}

impl DeviceSummary {
    fn of(e: &DeviceEntry) -> Self {
        let d = &e.device;
        DeviceSummary {
            device_id: d.device_id.clone(),
            status: d.status,
            connection_state: d.connection_state,
            last_activity_time: d.last_activity_time,
            cloud_to_device_message_count: e.queue.len(),
            locked_message_count: e.queue.iter().filter(|m| m.is_locked()).count(),
            device_to_cloud_message_count: e.d2c_count,
        }
    }
}

/// What every message view shows: system properties, application properties and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// `message-id`, as a string.
    pub message_id: Option<String>,
    /// `correlation-id`, as a string.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// `to`.
    pub to: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `content-encoding`.
    pub content_encoding: Option<String>,
    /// `iothub-ack`: `none`, `positive`, `negative` or `full`.
    pub ack: &'static str,
    /// Absolute expiry, if the sender set one.
    #[serde(rename = "expiry", with = "serde_millis_opt")]
    pub expiry: Option<OffsetDateTime>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
    /// The body, base64.
    #[serde(serialize_with = "base64_body")]
    pub body: Vec<u8>,
    /// The body as text, when it is UTF-8.
    pub body_text: Option<String>,
}

fn base64_body<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(body))
}

impl MessageView {
    /// The view of a message.
    pub fn of(m: &Message) -> Self {
        let s = &m.system;
        MessageView {
            message_id: s.message_id.as_ref().map(|i| i.canonical()),
            correlation_id: s.correlation_id.as_ref().map(|i| i.canonical()),
            user_id: s.user_id.clone(),
            to: s.to.clone(),
            content_type: s.content_type.clone(),
            content_encoding: s.content_encoding.clone(),
            ack: s.ack.as_str(),
            expiry: s.absolute_expiry,
            properties: m
                .properties
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            body: m.body.clone(),
            body_text: std::str::from_utf8(&m.body).ok().map(str::to_owned),
        }
    }
}

/// Where a C2D message is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum C2dState {
    /// Waiting to be received.
    Enqueued,
    /// A receiver holds its lock.
    Locked,
}

/// A pending C2D message with the hub's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessageView {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// Its sequence number in the device's queue.
    pub sequence_number: u64,
    /// When the hub accepted it.
    #[serde(with = "serde_millis_opt")]
    pub enqueued_time: Option<OffsetDateTime>,
    /// When it expires.
    #[serde(with = "serde_millis")]
    pub expires_at: OffsetDateTime,
    /// Deliveries counted so far.
    pub delivery_count: u32,
    /// Enqueued or locked.
    pub state: C2dState,
    /// The lock token while locked.
    pub lock_token: Option<String>,
    /// When the lock runs out, while locked.
    #[serde(with = "serde_millis_opt")]
    pub locked_until: Option<OffsetDateTime>,
}

impl C2dMessageView {
    fn of(q: &QueuedMessage) -> Self {
        let (state, lock_token, locked_until) = match &q.state {
            MessageState::Enqueued => (C2dState::Enqueued, None, None),
            MessageState::Locked { token, until, .. } => {
                (C2dState::Locked, Some(token.clone()), Some(*until))
            }
        };
        C2dMessageView {
            message: MessageView::of(&q.message),
            sequence_number: q.sequence_number(),
            enqueued_time: q.message.system.enqueued_time,
            expires_at: q.expires_at,
            delivery_count: q.delivery_count,
            state,
            lock_token,
            locked_until,
        }
    }
}

/// A telemetry message the hub recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct D2cRecordView {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// Per-device sequence number of received telemetry.
    pub sequence_number: u64,
    /// When the hub received it.
    #[serde(with = "serde_millis")]
    pub received_at: OffsetDateTime,
}

impl D2cRecordView {
    /// The view of a recorded message.
    pub fn of(r: &D2cRecord) -> Self {
        D2cRecordView {
            message: MessageView::of(r.message()),
            sequence_number: r.sequence_number,
            received_at: r.received,
        }
    }
}

/// A released feedback batch, waiting for or held by a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackBatchView {
    /// When the batch was released.
    #[serde(with = "serde_millis")]
    pub enqueued_time: OffsetDateTime,
    /// The lock token while a receiver holds it.
    pub lock_token: Option<String>,
    /// When the lock runs out, while locked.
    #[serde(with = "serde_millis_opt")]
    pub locked_until: Option<OffsetDateTime>,
    /// Releases that counted as deliveries so far.
    pub delivery_count: u32,
    /// The records, as the service receives them.
    pub records: Vec<FeedbackRecord>,
}

impl FeedbackBatchView {
    fn of(b: &StoredBatch) -> Self {
        FeedbackBatchView {
            enqueued_time: b.batch.enqueued_time,
            lock_token: b.lock.as_ref().map(|(t, _)| t.clone()),
            locked_until: b.lock.as_ref().map(|(_, timer)| timer.at()),
            delivery_count: b.delivery_count,
            records: b.batch.records.clone(),
        }
    }
}

/// The feedback queue: records waiting for the batch window, and released batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackView {
    /// Records not yet batched (the batch window is open).
    pub pending: Vec<FeedbackRecord>,
    /// Released batches, oldest first.
    pub batches: Vec<FeedbackBatchView>,
}

impl<S: Store> Hub<S> {
    /// Every device, in id order, with its queue counts and connection state.
    pub fn device_summaries(&self) -> Vec<DeviceSummary> {
        self.store
            .list(None, usize::MAX)
            .into_iter()
            .map(DeviceSummary::of)
            .collect()
    }

    /// Up to `limit` devices in id order after `after`, whose id contains `filter` (ignoring
    /// ASCII case), for paging through large registries without copying them whole.
    pub fn device_summaries_page(
        &self,
        after: Option<&str>,
        limit: usize,
        filter: Option<&str>,
    ) -> Vec<DeviceSummary> {
        let needle = filter.map(str::to_ascii_lowercase).unwrap_or_default();
        if needle.is_empty() {
            return self
                .store
                .list(after, limit)
                .into_iter()
                .map(DeviceSummary::of)
                .collect();
        }
        self.store
            .list(after, usize::MAX)
            .into_iter()
            .filter(|e| e.device.device_id.to_ascii_lowercase().contains(&needle))
            .take(limit)
            .map(DeviceSummary::of)
            .collect()
    }

    /// The device's pending C2D messages, oldest first, with their state.
    pub fn c2d_view(&self, device_id: &str) -> Result<Vec<C2dMessageView>, HubError> {
        Ok(self
            .entry(device_id)?
            .queue
            .iter()
            .map(C2dMessageView::of)
            .collect())
    }

    /// The device's recorded telemetry, oldest first.
    pub fn d2c_view(&self, device_id: &str) -> Result<Vec<D2cRecordView>, HubError> {
        Ok(self
            .entry(device_id)?
            .d2c
            .iter()
            .map(D2cRecordView::of)
            .collect())
    }

    /// The feedback queue.
    pub fn feedback_view(&self) -> FeedbackView {
        let fb = self.store.feedback();
        FeedbackView {
            pending: fb.pending().to_vec(),
            batches: fb.batches().map(FeedbackBatchView::of).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use iothub_protocol::registry::{Device, NEVER};
    use iothub_protocol::{AckMode, MessageId};
    use serde_json::Value;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2024-03-01 12:00 UTC);

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn views_serialize_as_the_control_api_answers() {
        let mut hub = Hub::new(
            HubSettings {
                feedback_window: std::time::Duration::ZERO,
                ..HubSettings::default()
            },
            1,
        );
        hub.create_device(Device::new("d1"), T0).unwrap();
        let mut m = Message::new("hi");
        m.system.message_id = Some(MessageId::from("m1"));
        m.system.ack = AckMode::Full;
        m.properties.insert("k", "v");
        hub.enqueue_c2d("d1", m, T0).unwrap();
        hub.enqueue_c2d("d1", Message::new(vec![0xff_u8]), T0)
            .unwrap();
        let got = hub.receive_c2d("d1", T0).unwrap().unwrap();
        let token = got.system.lock_token.unwrap();

        let devices = serde_json::to_value(hub.device_summaries()).unwrap();
        assert_eq!(
            keys(&devices[0]),
            [
                "cloudToDeviceMessageCount",
                "connectionState",
                "deviceId",
                "deviceToCloudMessageCount",
                "lastActivityTime",
                "lockedMessageCount",
                "status"
            ]
        );
        assert_eq!(devices[0]["lastActivityTime"], NEVER);
        assert_eq!(devices[0]["cloudToDeviceMessageCount"], 2);
        assert_eq!(devices[0]["lockedMessageCount"], 1);

        let c2d = serde_json::to_value(hub.c2d_view("d1").unwrap()).unwrap();
        assert_eq!(
            keys(&c2d[0]),
            [
                "ack",
                "body",
                "bodyText",
                "contentEncoding",
                "contentType",
                "correlationId",
                "deliveryCount",
                "enqueuedTime",
                "expiresAt",
                "expiry",
                "lockToken",
                "lockedUntil",
                "messageId",
                "properties",
                "sequenceNumber",
                "state",
                "to",
                "userId"
            ]
        );
        assert_eq!(c2d[0]["state"], "locked");
        assert_eq!(c2d[0]["lockToken"], token.as_str());
        assert_eq!(c2d[0]["lockedUntil"], "2024-03-01T12:01:00.000Z");
        assert_eq!(c2d[0]["enqueuedTime"], "2024-03-01T12:00:00.000Z");
        assert_eq!(c2d[0]["ack"], "full");
        assert_eq!(c2d[0]["properties"]["k"], "v");
        assert_eq!(
            (&c2d[0]["body"], &c2d[0]["bodyText"]),
            (&"aGk=".into(), &"hi".into())
        );
        assert_eq!(c2d[1]["state"], "enqueued");
        assert_eq!(c2d[1]["lockToken"], Value::Null);
        assert_eq!(
            (&c2d[1]["body"], &c2d[1]["bodyText"]),
            (&"/w==".into(), &Value::Null)
        );

        hub.send_telemetry(&crate::hub::Origin::device("d1"), Message::new("t"), T0)
            .unwrap();
        let d2c = serde_json::to_value(hub.d2c_view("d1").unwrap()).unwrap();
        assert_eq!(d2c[0]["sequenceNumber"], 1);
        assert_eq!(d2c[0]["receivedAt"], "2024-03-01T12:00:00.000Z");
        assert_eq!(d2c[0]["bodyText"], "t");

        hub.reject_c2d("d1", &token, T0).unwrap();
        hub.purge_c2d("d1", T0).unwrap();
        let fb = hub.feedback_view();
        assert!(fb.pending.is_empty());
        assert_eq!(fb.batches.len(), 1);
        assert_eq!(fb.batches[0].lock_token, None);
        assert_eq!(fb.batches[0].records.len(), 1, "only m1 asked for feedback");
        assert_eq!(fb.batches[0].records[0].original_message_id, "m1");

        hub.create_device(Device::new("a2"), T0).unwrap();
        hub.create_device(Device::new("b3"), T0).unwrap();
        let ids = |v: Vec<DeviceSummary>| v.into_iter().map(|d| d.device_id).collect::<Vec<_>>();
        assert_eq!(ids(hub.device_summaries_page(None, 2, None)), ["a2", "b3"]);
        assert_eq!(
            ids(hub.device_summaries_page(Some("a2"), 5, None)),
            ["b3", "d1"]
        );
        assert_eq!(ids(hub.device_summaries_page(None, 5, Some("D"))), ["d1"]);

        assert!(matches!(
            hub.c2d_view("ghost"),
            Err(HubError::DeviceNotFound { .. })
        ));
    }
}
