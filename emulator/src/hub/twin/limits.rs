//! What a twin section may hold (iothub-beyond-c2d.md 1.3).
//!
//! Keys: UTF-8, at most 1 KB, not empty, without control characters (C0, DEL, C1), `.`, `$` or
//! space. Values: booleans, numbers (integers between −2^52 and 2^52 − 1), strings of at most
//! 4 KB, objects and arrays; `null` only as "remove this key" in a patch (and inside arrays).
//! Depth: at most 10 levels, counting a top-level value as level 1. Size: tags 8 KB, desired
//! and reported 32 KB each, counted as the sum over members of key length plus value length
//! (strings in UTF-8 bytes, numbers 8, booleans 4, `null` 0, objects and arrays the sum of
//! their members), without `$version` and `$metadata`.

use iothub_protocol::HubError;
use iothub_protocol::twin::JsonObject;
use serde_json::Value;

/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest string value, in UTF-8 bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Deepest nesting of values, a top-level value being level 1.
pub const MAX_DEPTH: usize = 10;
/// Smallest integer a twin holds: −2^52.
pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;
/// Largest integer a twin holds: 2^52 − 1.
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;

/// The three sections, each with its own size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `tags`: service only, 8 KB.
    Tags,
    /// `properties.desired`: written by the service, 32 KB.
    Desired,
    /// `properties.reported`: written by the device, 32 KB.
    Reported,
}

impl SectionKind {
    /// The name the hub's size error uses.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Tags => "Tags",
            SectionKind::Desired => "Properties.Desired",
            SectionKind::Reported => "Properties.Reported",
        }
    }

    /// The size limit in bytes.
    pub fn max_size(self) -> usize {
        match self {
            SectionKind::Tags => 8 * 1024,
            SectionKind::Desired | SectionKind::Reported => 32 * 1024,
        }
    }
}

/// Checks the keys, values and depth of a patch or replacement. `null` members are allowed
/// (they remove keys).
pub fn check_patch(kind: SectionKind, patch: &JsonObject) -> Result<(), HubError> {
    let mut path = Vec::new();
    check_object(kind, patch, 1, &mut path)
}

/// Checks that a section's new content fits its size limit.
pub fn check_size(kind: SectionKind, values: &JsonObject) -> Result<(), HubError> {
    let size = object_size(values);
    if size > kind.max_size() {
        return Err(HubError::TwinTooLarge {
            section: kind.name().to_owned(),
            size,
            max: kind.max_size(),
        });
    }
    Ok(())
}

/// The size of an object by the documented rule.
pub fn object_size(m: &JsonObject) -> usize {
    m.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(value_size).sum(),
        Value::Object(m) => object_size(m),
    }
}

fn check_object(
    kind: SectionKind,
    m: &JsonObject,
    depth: usize,
    path: &mut Vec<String>,
) -> Result<(), HubError> {
    for (k, v) in m {
        check_key(kind, k, path)?;
        path.push(k.clone());
        let r = check_value(kind, v, depth, path);
        path.pop();
        r?;
    }
    Ok(())
}

fn check_value(
    kind: SectionKind,
    v: &Value,
    depth: usize,
    path: &mut Vec<String>,
) -> Result<(), HubError> {
    if depth > MAX_DEPTH {
        return Err(HubError::argument(format!(
            "{} '{}' is nested {depth} levels deep; twin sections allow at most {MAX_DEPTH} levels",
            what(kind),
            path.join(".")
        )));
    }
    match v {
        // A `null` member removes a key; inside an array it is a value.
        Value::Null | Value::Bool(_) => Ok(()),
        Value::Number(n) => {
            let in_range = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (MIN_INTEGER..=MAX_INTEGER).contains(&i),
                (None, Some(_)) => false,
                // Floating-point numbers are accepted as they are.
                (None, None) => true,
            };
            if in_range {
                Ok(())
            } else {
                Err(HubError::argument(format!(
                    "{} '{}' is {n}; integers must be between {MIN_INTEGER} and {MAX_INTEGER}",
                    what(kind),
                    path.join(".")
                )))
            }
        }
        Value::String(s) => {
            if s.len() > MAX_STRING_BYTES {
                Err(HubError::argument(format!(
                    "Property or Tag value should be maximum {MAX_STRING_BYTES} bytes. Error in Property/Tag '{}' ({} bytes)",
                    path.join("."),
                    s.len()
                )))
            } else {
                Ok(())
            }
        }
        Value::Array(items) => {
            for item in items {
                // Objects in arrays follow the key rules like any other.
                check_value(kind, item, depth + 1, path)?;
            }
            Ok(())
        }
        Value::Object(m) => check_object(kind, m, depth + 1, path),
    }
}

fn check_key(kind: SectionKind, k: &str, path: &[String]) -> Result<(), HubError> {
    let bad_char = k
        .chars()
        .find(|c| c.is_control() || matches!(c, '.' | '$' | ' '));
    let problem = if k.is_empty() {
        Some("is empty".to_owned())
    } else if k.len() > MAX_KEY_BYTES {
        Some(format!(
            "is {} bytes long; keys may be at most {MAX_KEY_BYTES} bytes",
            k.len()
        ))
    } else {
        bad_char.map(|c| {
            format!("contains {c:?}; keys may not contain control characters, '.', '$' or space")
        })
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let shown: String = k.chars().take(64).collect();
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" under '{}'", path.join("."))
            };
            Err(HubError::argument(format!(
                "the {} key '{shown}'{at} {p}",
                what(kind).to_ascii_lowercase()
            )))
        }
    }
}

fn what(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Tags => "Tag",
        SectionKind::Desired | SectionKind::Reported => "Property",
    }
}

#[cfg(test)]
mod tests {
    use super::super::obj;
    use super::*;
    use iothub_protocol::ErrorCode;
    use serde_json::json;

    fn refused(kind: SectionKind, v: Value) -> String {
        let e = check_patch(kind, &obj(v)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
        e.to_string()
    }

    #[test]
    fn key_rules() {
        for bad in ["a.b", "$x", "a b", "tab\there", "\u{85}c1", ""] {
            let msg = refused(SectionKind::Desired, json!({ bad: 1 }));
            assert!(msg.contains("key"), "{msg}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(refused(SectionKind::Tags, json!({ long: 1 })).contains("1024"));
        let ok = "k".repeat(MAX_KEY_BYTES);
        check_patch(SectionKind::Tags, &obj(json!({ ok: 1, "ünï-cødé_@#": 2 }))).unwrap();
        // Nested keys follow the same rules and the error names where.
        assert!(refused(SectionKind::Reported, json!({"a": {"b.c": 1}})).contains("under 'a'"));
    }

    #[test]
    fn value_rules() {
        check_patch(
            SectionKind::Desired,
            &obj(json!({"b": true, "n": MAX_INTEGER, "m": MIN_INTEGER, "f": 1.5e300, "s": "x", "a": [1, null, {"k": "v"}], "gone": null})),
        )
        .unwrap();
        assert!(refused(SectionKind::Desired, json!({"n": MAX_INTEGER + 1})).contains("integers"));
        assert!(refused(SectionKind::Desired, json!({"n": MIN_INTEGER - 1})).contains("integers"));
        assert!(refused(SectionKind::Desired, json!({"n": u64::MAX})).contains("integers"));
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let msg = refused(SectionKind::Tags, json!({"a": {"s": long}}));
        assert!(
            msg.starts_with(
                "Property or Tag value should be maximum 4096 bytes. Error in Property/Tag 'a.s'"
            ),
            "{msg}"
        );
        check_patch(
            SectionKind::Tags,
            &obj(json!({"s": "x".repeat(MAX_STRING_BYTES)})),
        )
        .unwrap();
        // Objects inside arrays obey the key rules.
        refused(SectionKind::Desired, json!({"a": [{"$bad": 1}]}));
    }

    #[test]
    fn depth_rule() {
        let mut deep = json!(1);
        for i in (1..=MAX_DEPTH).rev() {
            deep = json!({ format!("l{i}"): deep });
        }
        // l1 .. l10: the leaf is at level 10.
        check_patch(SectionKind::Desired, &obj(deep.clone())).unwrap();
        let deeper = json!({ "l0": deep });
        assert!(refused(SectionKind::Desired, deeper).contains("at most 10 levels"));
    }

    #[test]
    fn size_rule() {
        assert_eq!(
            object_size(&obj(
                json!({"ab": "xyz", "n": 1, "b": false, "o": {"k": [true, "é"]}})
            )),
            (2 + 3) + (1 + 8) + (1 + 4) + (1 + 1 + 4 + 2)
        );
        let fits = obj(json!({"k": "x".repeat(4000), "l": "x".repeat(4000), "m": "x".repeat(189)}));
        assert_eq!(object_size(&fits), 8192);
        check_size(SectionKind::Tags, &fits).unwrap();
        let mut over = fits.clone();
        over.insert("z".into(), json!(true));
        let e = check_size(SectionKind::Tags, &over).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("'Tags' size should be less than 8192 bytes.")
        );
        check_size(SectionKind::Reported, &over).unwrap();
    }
}
