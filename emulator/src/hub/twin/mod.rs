//! Device twins (iothub-beyond-c2d.md 1): the document, its versions and etag, its limits,
//! and the hub operations on it.
//!
//! One [`TwinState`] per identity: a device's lives in its [`DeviceEntry`](super::DeviceEntry),
//! and a module's will live in its module entry (issue 17), so every operation takes an
//! [`Identity`](super::Identity).
//!
//! Versions and etag (reference 1.2; the decisions where the hub is not documented):
//! - `properties.desired.$version` and `properties.reported.$version` start at 1 and move by
//!   exactly one per accepted write to that section.
//! - The twin `version` starts at 2 (every docs sample of a new twin) and moves by one per
//!   accepted write of any kind: tags, desired or reported (open question 4: twin versions in
//!   the hundreds with a low desired `$version` show that reported writes count).
//! - The `etag` is base64 of the 8-byte big-endian twin version minus one, so a new twin has
//!   `AAAAAAAAAAE=` as in the docs and every write, reported included, changes it.
//! - A PATCH that names no section (`{}`) changes nothing and moves nothing.

mod events;
mod limits;
mod ops;
mod section;
mod view;

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::HubError;
use iothub_protocol::twin::{JsonObject, SectionWrite, TwinProperties, TwinWrite, VERSION_KEY};
use serde_json::{Value, json};
use time::OffsetDateTime;

pub use events::{EventSource, NonTelemetryEvent};
pub use limits::{
    MAX_DEPTH, MAX_INTEGER, MAX_KEY_BYTES, MAX_STRING_BYTES, MIN_INTEGER, SectionKind, object_size,
};
pub use section::{Section, apply_merge_patch};
pub(crate) use view::{module_service_view, service_view, wire_time};

use limits::{check_patch, check_size};
use section::{replacement_patch, without_nulls};

/// How a service write treats the sections it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `PATCH /twins/{id}`: merge the given sections; absent ones stay as they are.
    Patch,
    /// `PUT /twins/{id}`: replace tags and desired; an absent section becomes empty.
    Replace,
    /// Bulk `updateTwin`: replace the given sections; absent ones stay as they are.
    ReplaceGiven,
}

/// What one section of a write does.
enum Action<'a> {
    Keep,
    Merge(&'a JsonObject),
    Replace(Cow<'a, JsonObject>),
}

impl<'a> Action<'a> {
    fn of(w: &'a SectionWrite, mode: WriteMode) -> Action<'a> {
        match (w, mode) {
            (SectionWrite::Absent, WriteMode::Patch | WriteMode::ReplaceGiven) => Action::Keep,
            (SectionWrite::Absent, WriteMode::Replace) | (SectionWrite::Null, _) => {
                Action::Replace(Cow::Owned(JsonObject::new()))
            }
            (SectionWrite::Set(p), WriteMode::Patch) => Action::Merge(p),
            (SectionWrite::Set(p), _) => Action::Replace(Cow::Borrowed(p)),
        }
    }

    fn content(&self) -> Option<&JsonObject> {
        match self {
            Action::Keep => None,
            Action::Merge(p) => Some(p),
            Action::Replace(p) => Some(p),
        }
    }
}

/// What an accepted service write changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceWriteOutcome {
    /// The tags part of a change event: the patch as written, or the new tags.
    pub tags: Option<Value>,
    /// The desired change, if desired was written.
    pub desired: Option<DesiredChange>,
    /// True for replacements (the change event carries the whole twin).
    pub replaced: bool,
}

/// A write to desired properties, as devices and change events see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredChange {
    /// The new `$version`.
    pub version: i64,
    /// What connected devices receive: the patch, or for a replacement the new section plus
    /// `null` for every key it removed, with `$version`.
    pub notification: JsonObject,
    /// The `properties.desired` of a change event: the write with its metadata and `$version`.
    pub event: JsonObject,
}

/// A twin: tags, desired and reported properties, and the twin version. Serializable for
/// the durable store (`crate::persist`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TwinState {
    tags: JsonObject,
    desired: Section,
    reported: Section,
    version: i64,
}

impl TwinState {
    /// The twin of a newly created identity: empty sections at `$version` 1, twin version 2.
    pub fn new(now: OffsetDateTime) -> TwinState {
        TwinState {
            tags: JsonObject::new(),
            desired: Section::new(now, true),
            reported: Section::new(now, false),
            version: 2,
        }
    }

    /// The twin version.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The twin etag (base64 of the version minus one, 8 bytes big-endian).
    pub fn etag(&self) -> String {
        let n = u64::try_from(self.version.saturating_sub(1)).unwrap_or_default();
        STANDARD.encode(n.to_be_bytes())
    }

    /// The tags.
    pub fn tags(&self) -> &JsonObject {
        &self.tags
    }

    /// Desired properties.
    pub fn desired(&self) -> &Section {
        &self.desired
    }

    /// Reported properties.
    pub fn reported(&self) -> &Section {
        &self.reported
    }

    /// `properties` of the service view (with `$metadata`) or of the device view (without).
    pub fn properties(&self, with_metadata: bool) -> TwinProperties {
        if with_metadata {
            TwinProperties {
                desired: self.desired.render(),
                reported: self.reported.render(),
            }
        } else {
            TwinProperties {
                desired: self.desired.render_for_device(),
                reported: self.reported.render_for_device(),
            }
        }
    }

    /// Applies a service write; `Ok(None)` when it names nothing to change. Nothing changes
    /// unless every rule holds.
    pub(crate) fn write(
        &mut self,
        w: &TwinWrite,
        mode: WriteMode,
        now: OffsetDateTime,
    ) -> Result<Option<ServiceWriteOutcome>, HubError> {
        let tags = Action::of(&w.tags, mode);
        let desired = Action::of(&w.desired, mode);
        if matches!((&tags, &desired), (Action::Keep, Action::Keep)) {
            return Ok(None);
        }
        if let Some(p) = tags.content() {
            check_patch(SectionKind::Tags, p)?;
        }
        if let Some(p) = desired.content() {
            check_patch(SectionKind::Desired, p)?;
        }

        let new_tags = match &tags {
            Action::Keep => None,
            Action::Merge(p) => {
                let mut t = self.tags.clone();
                apply_merge_patch(&mut t, p);
                Some(t)
            }
            Action::Replace(p) => Some(without_nulls(p)),
        };
        if let Some(t) = &new_tags {
            check_size(SectionKind::Tags, t)?;
        }
        let new_desired = match &desired {
            Action::Keep => None,
            Action::Merge(p) => {
                let mut s = self.desired.clone();
                s.merge(p, now);
                Some(s)
            }
            Action::Replace(p) => {
                let mut s = self.desired.clone();
                s.replace(p, now);
                Some(s)
            }
        };
        if let Some(s) = &new_desired {
            check_size(SectionKind::Desired, s.values())?;
        }

        let replaced = matches!(mode, WriteMode::Replace);
        let tags_event = match (&tags, &new_tags) {
            (Action::Merge(p), _) => Some(Value::Object((*p).clone())),
            (_, Some(t)) => Some(Value::Object(t.clone())),
            _ => None,
        };
        if let Some(t) = new_tags {
            self.tags = t;
        }
        let desired_change = match new_desired {
            None => None,
            Some(s) => {
                let (notification, event) = match &desired {
                    Action::Merge(p) => {
                        let mut n = (*p).clone();
                        n.insert(VERSION_KEY.to_owned(), json!(s.version()));
                        (n, s.render_patch(p))
                    }
                    _ => {
                        let mut n = replacement_patch(self.desired.values(), s.values());
                        n.insert(VERSION_KEY.to_owned(), json!(s.version()));
                        (n, s.render())
                    }
                };
                let version = s.version();
                self.desired = s;
                Some(DesiredChange {
                    version,
                    notification,
                    event,
                })
            }
        };
        self.version += 1;
        Ok(Some(ServiceWriteOutcome {
            tags: tags_event,
            desired: desired_change,
            replaced,
        }))
    }

    /// Applies a device's reported-properties patch. Returns the `properties.reported` of the
    /// change event (the patch as sent, nulls kept, with metadata and the new `$version`).
    pub(crate) fn patch_reported(
        &mut self,
        patch: &JsonObject,
        now: OffsetDateTime,
    ) -> Result<JsonObject, HubError> {
        check_patch(SectionKind::Reported, patch)?;
        let mut s = self.reported.clone();
        s.merge(patch, now);
        check_size(SectionKind::Reported, s.values())?;
        let event = s.render_patch(patch);
        self.reported = s;
        self.version += 1;
        Ok(event)
    }
}

/// Test helper: the object inside a `json!({...})`.
#[cfg(test)]
pub(crate) fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}

#[cfg(test)]
mod tests;
