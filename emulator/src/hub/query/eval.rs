//! Evaluating a query over twins: field lookup, conditions, projections and groups.
//!
//! Conditions use the three-valued logic of document queries: a missing field, or a comparison
//! between different types (or with an object or array), is *undefined*, and a row is kept only
//! when its condition is *true*. So `tags.x != 'a'` does not match twins without `tags.x`, and
//! `NOT` of undefined stays undefined. Ordering comparisons work on numbers and strings
//! (ordinal); `=` and `!=` also on booleans and `null`.
//!
//! Field names: the top-level fields (`deviceId`, `status`, `tags`, `properties`, ...), the
//! `desired`/`reported` level and the members of identity objects (`capabilities.iotEdge`) match
//! in any letter case, as the docs' own `SELECT DeviceID, LastActivityTime` does; keys inside
//! tags, desired and reported are case-sensitive, like the twin's keys.

use std::borrow::Cow;
use std::collections::HashMap;

use iothub_protocol::twin::{JsonObject, METADATA_KEY, VERSION_KEY};
use serde_json::{Value, json};

use super::super::modules::ModuleEntry;
use super::super::store::DeviceEntry;
use super::super::twin::{Section, TwinState, module_service_view, service_view};
use super::ast::{CmpOp, Column, ColumnValue, Expr, Literal, Operand, Path};
use super::parser::output_name;

/// One twin as a query sees it: a device's ([`DeviceRow`]) or a module's ([`ModuleRow`]).
pub(crate) trait Row {
    /// The value at `path`, or `None` when it is not defined.
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>>;
    /// The whole twin, as `SELECT *` returns it.
    fn twin(&self) -> Value;
}

/// A device twin.
pub(crate) struct DeviceRow<'a>(pub &'a DeviceEntry);

impl Row for DeviceRow<'_> {
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>> {
        resolve_in(&self.0.twin, path, |field| identity_field(self.0, field))
    }

    fn twin(&self) -> Value {
        serde_json::to_value(service_view(self.0)).unwrap_or(Value::Null)
    }
}

/// A module twin, with its device (whose status it shows).
pub(crate) struct ModuleRow<'a>(pub &'a DeviceEntry, pub &'a ModuleEntry);

impl Row for ModuleRow<'_> {
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>> {
        resolve_in(&self.1.twin, path, |field| {
            module_field(self.0, self.1, field)
        })
    }

    fn twin(&self) -> Value {
        serde_json::to_value(module_service_view(self.0, self.1)).unwrap_or(Value::Null)
    }
}

/// The value at `path` in a twin whose top-level identity fields `field` gives.
fn resolve_in<'a>(
    twin: &'a TwinState,
    path: &Path,
    field: impl Fn(&str) -> Option<Value>,
) -> Option<Cow<'a, Value>> {
    let (root, rest) = path.0.split_first()?;
    match root.to_ascii_lowercase().as_str() {
        "tags" => object_path(twin.tags(), rest),
        "properties" => {
            let Some((section, rest)) = rest.split_first() else {
                return Some(Cow::Owned(json!({
                    "desired": twin.desired().render(),
                    "reported": twin.reported().render(),
                })));
            };
            match section.to_ascii_lowercase().as_str() {
                "desired" => section_path(twin.desired(), rest),
                "reported" => section_path(twin.reported(), rest),
                _ => None,
            }
        }
        lower => {
            let v = field(lower)?;
            walk_ci(v, rest).map(Cow::Owned)
        }
    }
}

/// A top-level identity field of a device twin, by lower-case name.
fn identity_field(e: &DeviceEntry, lower: &str) -> Option<Value> {
    let d = &e.device;
    let time = |t: &Option<time::OffsetDateTime>| Value::String(super::super::twin::wire_time(*t));
    Some(match lower {
        "deviceid" => Value::String(d.device_id.clone()),
        "etag" => Value::String(e.twin.etag()),
        "deviceetag" => Value::String(d.etag.clone()?),
        "status" => serde_json::to_value(d.status).ok()?,
        "statusreason" => Value::String(d.status_reason.clone()?),
        "statusupdatetime" => time(&d.status_updated_time),
        "connectionstate" => serde_json::to_value(d.connection_state).ok()?,
        "lastactivitytime" => time(&d.last_activity_time),
        "cloudtodevicemessagecount" => json!(e.queue.len()),
        "authenticationtype" => Value::String(d.authentication.kind.clone()),
        "x509thumbprint" => serde_json::to_value(&d.authentication.x509_thumbprint).ok()?,
        "capabilities" => serde_json::to_value(d.capabilities).ok()?,
        "version" => json!(e.twin.version()),
        _ => return None,
    })
}

/// A top-level identity field of a module twin, by lower-case name: the module's own, and
/// the device's status (a module has none of its own).
fn module_field(d: &DeviceEntry, e: &ModuleEntry, lower: &str) -> Option<Value> {
    let m = &e.module;
    let time = |t: &Option<time::OffsetDateTime>| Value::String(super::super::twin::wire_time(*t));
    Some(match lower {
        "moduleid" => Value::String(m.module_id.clone()),
        "etag" => Value::String(e.twin.etag()),
        "deviceetag" => Value::String(m.etag.clone()?),
        "connectionstate" => serde_json::to_value(m.connection_state).ok()?,
        "lastactivitytime" => time(&m.last_activity_time),
        "cloudtodevicemessagecount" => json!(0),
        "authenticationtype" => Value::String(m.authentication.kind.clone()),
        "x509thumbprint" => serde_json::to_value(&m.authentication.x509_thumbprint).ok()?,
        "version" => json!(e.twin.version()),
        "capabilities" => return None,
        "deviceid" | "status" | "statusreason" | "statusupdatetime" => {
            return identity_field(d, lower);
        }
        _ => return None,
    })
}

fn section_path<'a>(s: &'a Section, rest: &[String]) -> Option<Cow<'a, Value>> {
    match rest.split_first() {
        None => Some(Cow::Owned(Value::Object(s.render()))),
        Some((k, [])) if k == VERSION_KEY => Some(Cow::Owned(json!(s.version()))),
        Some((k, more)) if k == METADATA_KEY => walk(&s.metadata(), more).cloned().map(Cow::Owned),
        Some(_) => object_path(s.values(), rest),
    }
}

fn object_path<'a>(m: &'a JsonObject, rest: &[String]) -> Option<Cow<'a, Value>> {
    match rest.split_first() {
        None => Some(Cow::Owned(Value::Object(m.clone()))),
        Some((k, more)) => walk(m.get(k)?, more).map(Cow::Borrowed),
    }
}

fn walk<'a>(mut v: &'a Value, segs: &[String]) -> Option<&'a Value> {
    for s in segs {
        v = v.as_object()?.get(s)?;
    }
    Some(v)
}

fn walk_ci(mut v: Value, segs: &[String]) -> Option<Value> {
    for s in segs {
        let Value::Object(m) = v else { return None };
        v = m.into_iter().find(|(k, _)| k.eq_ignore_ascii_case(s))?.1;
    }
    Some(v)
}

/// The path as compared for `GROUP BY`: case-insensitive parts lower-cased.
fn canonical(p: &Path) -> Vec<String> {
    let mut out = Vec::with_capacity(p.0.len());
    let root = p.0.first().map(|s| s.to_ascii_lowercase());
    for (i, s) in p.0.iter().enumerate() {
        let ci = match root.as_deref() {
            Some("tags") => i == 0,
            Some("properties") => i <= 1,
            _ => true,
        };
        out.push(if ci {
            s.to_ascii_lowercase()
        } else {
            s.clone()
        });
    }
    out
}

/// True when two paths name the same field.
pub(crate) fn same_field(a: &Path, b: &Path) -> bool {
    canonical(a) == canonical(b)
}

/// True when the row satisfies the condition.
pub(crate) fn matches(expr: &Expr, row: &dyn Row) -> bool {
    eval(expr, row) == Some(true)
}

fn eval(expr: &Expr, row: &dyn Row) -> Option<bool> {
    match expr {
        Expr::And(items) => {
            let mut all = Some(true);
            for e in items {
                match eval(e, row) {
                    Some(false) => return Some(false),
                    None => all = None,
                    Some(true) => {}
                }
            }
            all
        }
        Expr::Or(items) => {
            let mut any = Some(false);
            for e in items {
                match eval(e, row) {
                    Some(true) => return Some(true),
                    None => any = None,
                    Some(false) => {}
                }
            }
            any
        }
        Expr::Not(e) => eval(e, row).map(|b| !b),
        Expr::Compare(l, op, r) => {
            let l = operand(l, row)?;
            let r = operand(r, row)?;
            compare(&l, *op, &r)
        }
        Expr::In {
            operand: o,
            list,
            negated,
        } => {
            let v = operand(o, row)?;
            if v.is_object() || v.is_array() {
                return None;
            }
            let found = list
                .iter()
                .any(|l| compare(&v, CmpOp::Eq, &literal(l)) == Some(true));
            Some(found != *negated)
        }
        Expr::IsDefined(p) => Some(row.resolve(p).is_some()),
    }
}

fn operand<'r>(o: &Operand, row: &'r dyn Row) -> Option<Cow<'r, Value>> {
    match o {
        Operand::Path(p) => row.resolve(p),
        Operand::Literal(l) => Some(Cow::Owned(literal(l))),
    }
}

fn literal(l: &Literal) -> Value {
    match l {
        Literal::String(s) => Value::String(s.clone()),
        Literal::Number(n) => Value::Number(n.clone()),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Null => Value::Null,
    }
}

fn compare(l: &Value, op: CmpOp, r: &Value) -> Option<bool> {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?)?,
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => {
            return equality(op, a == b);
        }
        (Value::Null, Value::Null) => return equality(op, true),
        _ => return None,
    };
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn equality(op: CmpOp, equal: bool) -> Option<bool> {
    match op {
        CmpOp::Eq => Some(equal),
        CmpOp::Ne => Some(!equal),
        _ => None,
    }
}

/// A projected row: one member per column whose value is defined.
pub(crate) fn project(cols: &[Column], row: &dyn Row) -> Value {
    let mut out = JsonObject::new();
    for c in cols {
        if let ColumnValue::Path(p) = &c.value
            && let Some(v) = row.resolve(p)
        {
            out.insert(output_name(c).to_owned(), v.into_owned());
        }
    }
    Value::Object(out)
}

/// Counts per group, in the order groups first appear (device id order), so pages are stable.
pub(crate) struct Groups {
    by: Option<Path>,
    groups: Vec<(Option<Value>, u64)>,
    index: HashMap<String, usize>,
}

impl Groups {
    /// Groups by `by`, or one group for everything.
    pub(crate) fn new(by: Option<Path>) -> Groups {
        let mut g = Groups {
            by,
            groups: Vec::new(),
            index: HashMap::new(),
        };
        if g.by.is_none() {
            // A count over no rows is still one row with 0.
            g.groups.push((None, 0));
        }
        g
    }

    /// Counts a row into its group.
    pub(crate) fn add(&mut self, row: &dyn Row) {
        let Some(by) = &self.by else {
            self.groups[0].1 += 1;
            return;
        };
        let v = row.resolve(by).map(Cow::into_owned);
        // Undefined gets a key no JSON text has.
        let key = v
            .as_ref()
            .map_or_else(|| "\u{0}undefined".to_owned(), Value::to_string);
        match self.index.get(&key) {
            Some(&i) => self.groups[i].1 += 1,
            None => {
                self.index.insert(key, self.groups.len());
                self.groups.push((v, 1));
            }
        }
    }

    /// One row per group.
    pub(crate) fn rows(self, cols: &[Column]) -> Vec<Value> {
        self.groups
            .into_iter()
            .map(|(v, n)| {
                let mut out = JsonObject::new();
                for c in cols {
                    let value = match &c.value {
                        ColumnValue::Count => Some(json!(n)),
                        ColumnValue::Path(_) => v.clone(),
                    };
                    if let Some(value) = value {
                        out.insert(output_name(c).to_owned(), value);
                    }
                }
                Value::Object(out)
            })
            .collect()
    }
}
