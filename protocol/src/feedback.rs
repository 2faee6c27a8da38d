//! Feedback (delivery acknowledgement) records and batches.
//!
//! Reference: iothub-protocol.md 2. A batch is one AMQP message (or one HTTPS response) whose body
//! is a JSON array of records. Field names are camelCase exactly as below; `description` always
//! equals the status string because the C service SDK reads the status from `description`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Content type of a feedback message; the C# receiver rejects anything else.
pub const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

/// How a C2D message ended, as reported in feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// The message's expiry time passed before it was completed.
    Expired,
    /// The message was abandoned more often than the max delivery count allows.
    DeliveryCountExceeded,
    /// The device rejected the message.
    Rejected,
    /// The queue was purged while the message was pending.
    Purged,
}

impl FeedbackStatus {
    /// The status as the hub writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Success => "Success",
            FeedbackStatus::Expired => "Expired",
            FeedbackStatus::DeliveryCountExceeded => "DeliveryCountExceeded",
            FeedbackStatus::Rejected => "Rejected",
            FeedbackStatus::Purged => "Purged",
        }
    }

    /// True for the outcomes that `iothub-ack: positive` asks about.
    pub fn is_positive(self) -> bool {
        self == FeedbackStatus::Success
    }
}

impl std::fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record in a feedback batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    /// The message id the service gave the C2D message, in its canonical string form.
    pub original_message_id: String,
    /// When the outcome happened (completion or expiry time).
    #[serde(with = "crate::time_format::serde_millis")]
    pub enqueued_time_utc: OffsetDateTime,
    /// The outcome.
    pub status_code: FeedbackStatus,
    /// Always the status string, e.g. `"Success"`.
    pub description: String,
    /// The device the message was for.
    pub device_id: String,
    /// The device's registry `generationId` when the message ended.
    pub device_generation_id: String,
}

impl FeedbackRecord {
    /// Builds a record whose `description` equals its status, as the hub sends it.
    pub fn new(
        original_message_id: impl Into<String>,
        status: FeedbackStatus,
        at: OffsetDateTime,
        device_id: impl Into<String>,
        device_generation_id: impl Into<String>,
    ) -> Self {
        FeedbackRecord {
            original_message_id: original_message_id.into(),
            enqueued_time_utc: at,
            status_code: status,
            description: status.as_str().to_owned(),
            device_id: device_id.into(),
            device_generation_id: device_generation_id.into(),
        }
    }
}

/// A batch of feedback records as delivered to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackBatch {
    /// When the hub enqueued the batch (`iothub-enqueuedtime`).
    pub enqueued_time: OffsetDateTime,
    /// The hub name (`user-id` of the feedback message).
    pub user_id: String,
    /// The records, oldest outcome first.
    pub records: Vec<FeedbackRecord>,
}

impl FeedbackBatch {
    /// The JSON body: an array of records.
    pub fn body_json(&self) -> Vec<u8> {
        // Serializing plain strings and enums into a Vec cannot fail.
        serde_json::to_vec(&self.records).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// Parses a feedback body back into records.
    pub fn parse_body(body: &[u8]) -> Result<Vec<FeedbackRecord>, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn record_json_matches_the_hub() {
        let r = FeedbackRecord::new(
            "0987654321",
            FeedbackStatus::Success,
            datetime!(2015-07-28 16:24:48.789 UTC),
            "123",
            "abcdefghijklmnopqrstuvwxyz",
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"originalMessageId":"0987654321","enqueuedTimeUtc":"2015-07-28T16:24:48.789Z","statusCode":"Success","description":"Success","deviceId":"123","deviceGenerationId":"abcdefghijklmnopqrstuvwxyz"}"#
        );
        let batch = FeedbackBatch {
            enqueued_time: datetime!(2015-07-28 16:24:50 UTC),
            user_id: "hub".into(),
            records: vec![r.clone()],
        };
        assert_eq!(
            FeedbackBatch::parse_body(&batch.body_json()).unwrap(),
            vec![r]
        );
    }

    #[test]
    fn description_equals_status_for_every_status() {
        for s in [
            FeedbackStatus::Success,
            FeedbackStatus::Expired,
            FeedbackStatus::DeliveryCountExceeded,
            FeedbackStatus::Rejected,
            FeedbackStatus::Purged,
        ] {
            let r = FeedbackRecord::new("m", s, datetime!(2020-01-01 0:00 UTC), "d", "g");
            assert_eq!(r.description, s.as_str());
            let v: serde_json::Value = serde_json::to_value(&r).unwrap();
            assert_eq!(v["statusCode"], s.as_str());
        }
    }
}
