//! One versioned twin section (`desired` or `reported`): its values, its `$version`, and the
//! `$metadata` tree that says when each object and leaf was last written.
//!
//! Values and metadata are kept side by side: the values are plain JSON (what queries walk and
//! what the device view shows), the metadata a tree of [`Meta`] with one node per object and
//! leaf. A write stamps every object on its path, so removing a key still moves its parent's
//! `$lastUpdated` (iothub-beyond-c2d.md 1.2: "kept at every level ... so that removals are
//! timestamped"). Timestamps stay [`OffsetDateTime`] until rendered.

use std::collections::BTreeMap;

use iothub_protocol::time_format::format_round_trip;
use iothub_protocol::twin::{
    JsonObject, LAST_UPDATED_KEY, LAST_UPDATED_VERSION_KEY, METADATA_KEY, VERSION_KEY,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// When a write happened and, in desired, which `$version` it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    at: OffsetDateTime,
    version: Option<i64>,
}

/// The metadata of one object or leaf.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Meta {
    stamp: Stamp,
    /// One entry per member, for objects; empty for leaves.
    children: BTreeMap<String, Meta>,
}

impl Meta {
    fn leaf(stamp: Stamp) -> Meta {
        Meta {
            stamp,
            children: BTreeMap::new(),
        }
    }

    /// Metadata for a value written as a whole at `stamp`.
    fn fresh(value: &Value, stamp: Stamp) -> Meta {
        match value {
            Value::Object(m) => Meta::fresh_object(m, stamp),
            _ => Meta::leaf(stamp),
        }
    }

    fn fresh_object(m: &JsonObject, stamp: Stamp) -> Meta {
        Meta {
            stamp,
            children: m
                .iter()
                .map(|(k, v)| (k.clone(), Meta::fresh(v, stamp)))
                .collect(),
        }
    }

    fn stamp_json(&self, out: &mut JsonObject) {
        out.insert(
            LAST_UPDATED_KEY.to_owned(),
            Value::String(format_round_trip(self.stamp.at)),
        );
        if let Some(v) = self.stamp.version {
            out.insert(LAST_UPDATED_VERSION_KEY.to_owned(), json!(v));
        }
    }

    /// `{"$lastUpdated":..,["$lastUpdatedVersion":..,] member: {...}}`.
    fn render(&self) -> Value {
        let mut out = JsonObject::new();
        self.stamp_json(&mut out);
        for (k, child) in &self.children {
            out.insert(k.clone(), child.render());
        }
        Value::Object(out)
    }

    /// The metadata of what `patch` wrote: this node's stamp and, for every member the patch
    /// set (not removed), its metadata, recursing only into the patch's objects.
    fn render_for(&self, patch: &JsonObject) -> Value {
        let mut out = JsonObject::new();
        self.stamp_json(&mut out);
        for (k, pv) in patch {
            let Some(child) = self.children.get(k) else {
                continue;
            };
            let rendered = match pv {
                Value::Object(sub) => child.render_for(sub),
                Value::Null => continue,
                _ => child.render(),
            };
            out.insert(k.clone(), rendered);
        }
        Value::Object(out)
    }
}

/// A versioned section with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    values: JsonObject,
    meta: Meta,
    version: i64,
    /// Desired metadata carries `$lastUpdatedVersion`; reported metadata does not.
    with_versions: bool,
}

impl Section {
    /// An empty section at `$version` 1, stamped `now`.
    pub(crate) fn new(now: OffsetDateTime, with_versions: bool) -> Section {
        let version = 1;
        Section {
            values: JsonObject::new(),
            meta: Meta::leaf(Stamp {
                at: now,
                version: with_versions.then_some(version),
            }),
            version,
            with_versions,
        }
    }

    /// The properties, without `$version` and `$metadata`.
    pub fn values(&self) -> &JsonObject {
        &self.values
    }

    /// `$version`: 1 for a new twin, one more for every accepted write.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// When the section as a whole was last written (the root `$lastUpdated`).
    pub fn last_updated(&self) -> OffsetDateTime {
        self.meta.stamp.at
    }

    fn next_stamp(&mut self, now: OffsetDateTime) -> Stamp {
        self.version += 1;
        Stamp {
            at: now,
            version: self.with_versions.then_some(self.version),
        }
    }

    /// Merges a patch (JSON merge patch: `null` removes, objects merge, anything else
    /// replaces) and moves `$version` by one.
    pub(crate) fn merge(&mut self, patch: &JsonObject, now: OffsetDateTime) {
        let stamp = self.next_stamp(now);
        merge_into(&mut self.values, &mut self.meta, patch, stamp);
    }

    /// Replaces every property and moves `$version` by one. `null` members are dropped.
    pub(crate) fn replace(&mut self, values: &JsonObject, now: OffsetDateTime) {
        let stamp = self.next_stamp(now);
        self.values = without_nulls(values);
        self.meta = Meta::fresh_object(&self.values, stamp);
    }

    /// The section as the service view shows it: values, `$metadata`, `$version`.
    pub fn render(&self) -> JsonObject {
        let mut out = self.values.clone();
        out.insert(METADATA_KEY.to_owned(), self.meta.render());
        out.insert(VERSION_KEY.to_owned(), json!(self.version));
        out
    }

    /// The section as the device view shows it: values and `$version`, no `$metadata`.
    pub fn render_for_device(&self) -> JsonObject {
        let mut out = self.values.clone();
        out.insert(VERSION_KEY.to_owned(), json!(self.version));
        out
    }

    /// `$metadata` as rendered in [`Section::render`].
    pub fn metadata(&self) -> Value {
        self.meta.render()
    }

    /// A patch as a change notification shows it: the patch as written (nulls kept), the
    /// metadata of what it wrote, and the new `$version`.
    pub(crate) fn render_patch(&self, patch: &JsonObject) -> JsonObject {
        let mut out = patch.clone();
        out.insert(METADATA_KEY.to_owned(), self.meta.render_for(patch));
        out.insert(VERSION_KEY.to_owned(), json!(self.version));
        out
    }
}

fn merge_into(values: &mut JsonObject, meta: &mut Meta, patch: &JsonObject, stamp: Stamp) {
    meta.stamp = stamp;
    for (k, pv) in patch {
        match pv {
            Value::Null => {
                values.remove(k);
                meta.children.remove(k);
            }
            Value::Object(sub) => {
                if !matches!(values.get(k), Some(Value::Object(_))) {
                    values.insert(k.clone(), Value::Object(JsonObject::new()));
                    meta.children.insert(k.clone(), Meta::leaf(stamp));
                }
                let child_meta = meta
                    .children
                    .entry(k.clone())
                    .or_insert_with(|| Meta::leaf(stamp));
                if let Some(Value::Object(child)) = values.get_mut(k) {
                    merge_into(child, child_meta, sub, stamp);
                }
            }
            leaf => {
                values.insert(k.clone(), leaf.clone());
                meta.children.insert(k.clone(), Meta::leaf(stamp));
            }
        }
    }
}

/// A copy of `m` with every `null` object member removed (arrays are kept as they are).
pub(crate) fn without_nulls(m: &JsonObject) -> JsonObject {
    m.iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::Object(sub) => Some((k.clone(), Value::Object(without_nulls(sub)))),
            other => Some((k.clone(), other.clone())),
        })
        .collect()
}

/// The notification for a replacement: the new content, plus `null` for every key the
/// replacement removed, at every level where old and new both hold an object. Applied as a
/// merge patch to the old content it gives exactly the new content, so devices that merge
/// every notification into their copy (Node's `Twin` does) stay in step; read as a whole it is
/// the new section as the docs describe ("the same form of update").
pub(crate) fn replacement_patch(old: &JsonObject, new: &JsonObject) -> JsonObject {
    let mut out = new.clone();
    for (k, ov) in old {
        match (ov, new.get(k)) {
            (_, None) => {
                out.insert(k.clone(), Value::Null);
            }
            (Value::Object(o), Some(Value::Object(n))) => {
                out.insert(k.clone(), Value::Object(replacement_patch(o, n)));
            }
            _ => {}
        }
    }
    out
}

/// Applies a merge patch to plain JSON, as a device applying desired-property notifications
/// does. Used by tests and by anything that keeps a device-side copy.
pub fn apply_merge_patch(target: &mut JsonObject, patch: &JsonObject) {
    for (k, pv) in patch {
        match pv {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(sub) => {
                if !matches!(target.get(k), Some(Value::Object(_))) {
                    target.insert(k.clone(), Value::Object(JsonObject::new()));
                }
                if let Some(Value::Object(child)) = target.get_mut(k) {
                    apply_merge_patch(child, sub);
                }
            }
            leaf => {
                target.insert(k.clone(), leaf.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::obj;
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2024-01-01 0:00 UTC);
    const T1: OffsetDateTime = datetime!(2024-01-01 0:01 UTC);
    const T2: OffsetDateTime = datetime!(2024-01-01 0:02 UTC);

    #[test]
    fn merge_sets_removes_and_versions() {
        let mut s = Section::new(T0, true);
        assert_eq!(s.version(), 1);
        s.merge(&obj(json!({"a": {"b": 1, "c": 2}, "d": "x"})), T1);
        assert_eq!(s.version(), 2);
        s.merge(&obj(json!({"a": {"b": null}, "e": [1, null]})), T2);
        assert_eq!(s.version(), 3);
        assert_eq!(
            Value::Object(s.values().clone()),
            json!({"a": {"c": 2}, "d": "x", "e": [1, null]})
        );
        let m = s.metadata();
        // The removal of a.b stamps a (and the root), not its untouched sibling.
        assert_eq!(m["$lastUpdated"], "2024-01-01T00:02:00.0000000Z");
        assert_eq!(m["$lastUpdatedVersion"], 3);
        assert_eq!(m["a"]["$lastUpdated"], "2024-01-01T00:02:00.0000000Z");
        assert_eq!(m["a"]["c"]["$lastUpdated"], "2024-01-01T00:01:00.0000000Z");
        assert_eq!(m["a"]["c"]["$lastUpdatedVersion"], 2);
        assert!(m["a"].get("b").is_none());
        assert_eq!(m["d"]["$lastUpdatedVersion"], 2);
    }

    #[test]
    fn reported_metadata_has_no_versions() {
        let mut s = Section::new(T0, false);
        s.merge(&obj(json!({"a": 1})), T1);
        let m = s.metadata();
        assert!(m.get("$lastUpdatedVersion").is_none());
        assert!(m["a"].get("$lastUpdatedVersion").is_none());
        assert_eq!(s.render()["$version"], 2);
        assert!(s.render_for_device().get("$metadata").is_none());
    }

    #[test]
    fn replace_drops_nulls_and_restamps_everything() {
        let mut s = Section::new(T0, true);
        s.merge(&obj(json!({"old": 1})), T1);
        s.replace(&obj(json!({"new": {"x": null, "y": 2}})), T2);
        assert_eq!(Value::Object(s.values().clone()), json!({"new": {"y": 2}}));
        assert_eq!(s.metadata()["new"]["y"]["$lastUpdatedVersion"], 3);
        assert!(s.metadata().get("old").is_none());
    }

    #[test]
    fn a_leaf_becomes_an_object_and_back() {
        let mut s = Section::new(T0, true);
        s.merge(&obj(json!({"a": 1})), T1);
        s.merge(&obj(json!({"a": {"b": {"c": true}}})), T1);
        assert_eq!(s.metadata()["a"]["b"]["c"]["$lastUpdatedVersion"], 3);
        s.merge(&obj(json!({"a": "flat"})), T2);
        assert!(s.metadata()["a"].get("b").is_none());
        assert_eq!(Value::Object(s.values().clone()), json!({"a": "flat"}));
    }

    #[test]
    fn patch_rendering_keeps_nulls_and_names_only_written_metadata() {
        let mut s = Section::new(T0, true);
        s.merge(&obj(json!({"keep": 1, "gone": 2})), T1);
        let patch = obj(json!({"gone": null, "new": {"x": 1}}));
        s.merge(&patch, T2);
        let r = Value::Object(s.render_patch(&patch));
        assert_eq!(r["gone"], Value::Null);
        assert_eq!(r["$version"], 3);
        assert_eq!(r["$metadata"]["new"]["x"]["$lastUpdatedVersion"], 3);
        assert!(r["$metadata"].get("keep").is_none());
        assert!(r["$metadata"].get("gone").is_none());
    }

    #[test]
    fn replacement_patches_converge_by_merging() {
        let old = obj(json!({"a": {"x": 1, "y": {"z": 2}}, "b": 1, "c": {"k": 1}}));
        let new = obj(json!({"a": {"y": {}}, "c": 5, "d": {"n": true}}));
        let p = replacement_patch(&old, &new);
        assert_eq!(
            Value::Object(p.clone()),
            json!({"a": {"x": null, "y": {"z": null}}, "b": null, "c": 5, "d": {"n": true}})
        );
        let mut copy = old.clone();
        apply_merge_patch(&mut copy, &p);
        assert_eq!(copy, new);
    }

    #[test]
    fn merge_patch_helper_matches_section_values() {
        let mut s = Section::new(T0, false);
        let mut copy = JsonObject::new();
        for p in [
            json!({"a": {"b": 1}}),
            json!({"a": 2, "c": null}),
            json!({"a": {"x": {"y": null}}}),
        ] {
            let p = obj(p);
            s.merge(&p, T1);
            apply_merge_patch(&mut copy, &p);
            assert_eq!(&copy, s.values());
        }
    }
}
