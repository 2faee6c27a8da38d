//! Twin queries: `POST /devices/query` (iothub-beyond-c2d.md 1.7).
//!
//! The subset people use in tests and samples: `SELECT *` or a list of fields, `COUNT()` with
//! an optional `GROUP BY` field, `FROM devices` or `FROM devices.modules`, and `WHERE` with
//! comparisons, `AND`/`OR`/`NOT`, `IN`/`NIN` and `IS_DEFINED`. A hand-written lexer and
//! recursive-descent parser ([`parse`]) give errors that name the unsupported part and the
//! character where it starts; no parser crate would make the grammar shorter, and this way the
//! error texts and the nesting bound stay ours.
//!
//! Results come in device id order. `SELECT *` pages hold twins (`x-ms-item-type: twin`),
//! everything else plain objects (`raw`). Paging is stateless: the continuation token is an
//! opaque encoding of the query's fingerprint and of where the next page starts (the last
//! device id returned, or the number of grouped rows already sent), so a page costs a range
//! scan from that point and a whole query over n twins costs O(n log n), however it is paged.
//! The token is present only when more rows follow.

mod ast;
mod eval;
mod lexer;
mod parser;

#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iothub_protocol::HubError;
use iothub_protocol::query::{MAX_PAGE_SIZE, QueryItemType, QueryPage};
use serde::{Deserialize, Serialize};

pub use ast::{
    CmpOp, Collection, Column, ColumnValue, Expr, Literal, Operand, Path, Query, Select,
};
pub use parser::{MAX_NESTING, parse};

use super::Hub;
use super::store::{DeviceEntry, Store};
use eval::{DeviceRow, Groups, ModuleRow, Row, matches, project};

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 256 * 1024;

/// How many devices a page scan reads from the store at a time.
const SCAN_CHUNK: usize = 256;

/// Why a query text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// What is wrong.
    pub message: String,
    /// Character position (from 1) where it is, when there is one.
    pub position: Option<usize>,
    /// True when the text is fine SQL but outside the emulator's subset.
    pub unsupported: bool,
}

impl QueryError {
    pub(crate) fn at(pos: usize, message: String) -> Self {
        QueryError {
            message,
            position: Some(pos),
            unsupported: false,
        }
    }

    pub(crate) fn unsupported(pos: usize, message: String) -> Self {
        QueryError {
            message,
            position: Some(pos),
            unsupported: true,
        }
    }

    pub(crate) fn general(message: String) -> Self {
        QueryError {
            message,
            position: None,
            unsupported: false,
        }
    }
}

impl From<QueryError> for HubError {
    fn from(e: QueryError) -> HubError {
        let at = e
            .position
            .map(|p| format!(" (at character {p})"))
            .unwrap_or_default();
        let lead = if e.unsupported {
            "The query uses a part the emulator does not support"
        } else {
            "The query is invalid"
        };
        HubError::argument(format!("{lead}: {}{at}", e.message))
    }
}

/// Where the next page starts, as carried in the continuation token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// Fingerprint of the query text: a token only continues the query that made it.
    q: String,
    /// Rows of a scan: the last key returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// Grouped rows: how many were returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skip: Option<usize>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str, fingerprint: &str) -> Result<Cursor, HubError> {
        let bad = || {
            HubError::argument(
                "the continuation token is not valid for this query; send the query again without x-ms-continuation",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&raw).map_err(|_| bad())?;
        if c.q != fingerprint {
            return Err(bad());
        }
        Ok(c)
    }
}

/// Where the next page starts.
enum Resume {
    /// After this key.
    After(String),
    /// After this many grouped rows.
    Skip(usize),
}

/// FNV-1a: a stable fingerprint (not a secret) of the query text.
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl<S: Store> Hub<S> {
    /// Runs one page of a twin query (`POST /devices/query`).
    ///
    /// `page_size` is the `x-ms-max-item-count` (see
    /// [`iothub_protocol::query::page_size`]; kept within 1 to 1000 here too), `continuation`
    /// the `x-ms-continuation` of the previous page. A query outside the subset, or a token
    /// that does not belong to it, is `ArgumentInvalid` (400) with a message naming the part.
    ///
    /// ```
    /// use iothub_emulator::hub::{Hub, HubSettings};
    /// use iothub_protocol::registry::Device;
    ///
    /// let now = time::OffsetDateTime::UNIX_EPOCH;
    /// let mut hub = Hub::new(HubSettings::default(), 1);
    /// for id in ["a", "b", "c"] {
    ///     hub.create_device(Device::new(id), now).unwrap();
    /// }
    /// let q = "SELECT deviceId FROM devices WHERE deviceId != 'b'";
    /// let first = hub.query_twins(q, 1, None).unwrap();
    /// assert_eq!(first.items, [serde_json::json!({"deviceId": "a"})]);
    /// let token = first.continuation_token.unwrap();
    /// let last = hub.query_twins(q, 1, Some(&token)).unwrap();
    /// assert_eq!(last.items, [serde_json::json!({"deviceId": "c"})]);
    /// assert_eq!(last.continuation_token, None);
    /// ```
    pub fn query_twins(
        &self,
        text: &str,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<QueryPage, HubError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(HubError::argument(format!(
                "the query is {} bytes long; the emulator accepts at most {MAX_QUERY_BYTES}",
                text.len()
            )));
        }
        let query = parse(text)?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let fp = fingerprint(text);
        let cursor = continuation
            .filter(|t| !t.trim().is_empty())
            .map(|t| Cursor::decode(t, &fp))
            .transpose()?;
        let item_type = match query.select {
            Select::All => QueryItemType::Twin,
            Select::Columns(_) => QueryItemType::Raw,
        };
        let aggregate = query.group_by.is_some()
            || matches!(&query.select, Select::Columns(c) if c.iter().any(|c| c.value == ColumnValue::Count));
        let (items, next) = if aggregate {
            self.grouped_page(&query, page_size, cursor.and_then(|c| c.skip).unwrap_or(0))
        } else {
            self.scan_page(&query, page_size, cursor.and_then(|c| c.after))
        };
        Ok(QueryPage {
            items,
            item_type,
            continuation_token: next.map(|r| {
                let (after, skip) = match r {
                    Resume::After(k) => (Some(k), None),
                    Resume::Skip(n) => (None, Some(n)),
                };
                Cursor { q: fp, after, skip }.encode()
            }),
        })
    }

    /// Rows from the one after `after`, plus where the next page starts if another row matches.
    fn scan_page(
        &self,
        q: &Query,
        page_size: usize,
        after: Option<String>,
    ) -> (Vec<serde_json::Value>, Option<Resume>) {
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        self.for_each_row(q.from, after, |key, row| {
            if let Some(f) = &q.filter
                && !matches(f, row)
            {
                return ControlFlow::Continue(());
            }
            if items.len() == page_size {
                more = true;
                return ControlFlow::Break(());
            }
            items.push(match &q.select {
                Select::All => row.twin(),
                Select::Columns(cols) => project(cols, row),
            });
            last = Some(key.to_owned());
            ControlFlow::Continue(())
        });
        (items, if more { last.map(Resume::After) } else { None })
    }

    /// Grouped or counted rows, `skip` of them already sent.
    fn grouped_page(
        &self,
        q: &Query,
        page_size: usize,
        skip: usize,
    ) -> (Vec<serde_json::Value>, Option<Resume>) {
        let Select::Columns(cols) = &q.select else {
            return (Vec::new(), None);
        };
        let mut groups = Groups::new(q.group_by.clone());
        self.for_each_row(q.from, None, |_, row| {
            if q.filter.as_ref().is_none_or(|f| matches(f, row)) {
                groups.add(row);
            }
            ControlFlow::Continue(())
        });
        let rows = groups.rows(cols);
        let end = skip.saturating_add(page_size).min(rows.len());
        let page = rows.get(skip.min(end)..end).unwrap_or_default().to_vec();
        let next = (end < rows.len()).then_some(Resume::Skip(end));
        (page, next)
    }

    /// Calls `f` with every module twin keyed after `after` (`deviceId/moduleId`, ordered by
    /// device, then module), until it breaks.
    fn for_each_module_row(
        &self,
        after: Option<String>,
        mut f: impl FnMut(&str, &dyn Row) -> ControlFlow<()>,
    ) {
        let mut visit = |e: &DeviceEntry, after_module: Option<&str>| {
            for (mid, m) in &e.modules {
                if after_module.is_some_and(|a| mid.as_str() <= a) {
                    continue;
                }
                let key = format!("{}/{mid}", e.device.device_id);
                f(&key, &ModuleRow(e, m))?;
            }
            ControlFlow::Continue(())
        };
        // A page that ended inside a device resumes after its last module.
        let mut cursor = match after.as_deref().and_then(|a| a.split_once('/')) {
            Some((d, m)) => {
                if let Some(e) = self.store.get(d)
                    && visit(e, Some(m)).is_break()
                {
                    return;
                }
                Some(d.to_owned())
            }
            None => None,
        };
        loop {
            let batch = self.store.list(cursor.as_deref(), SCAN_CHUNK);
            for e in &batch {
                if visit(e, None).is_break() {
                    return;
                }
            }
            if batch.len() < SCAN_CHUNK {
                return;
            }
            cursor = batch.last().map(|e| e.device.device_id.clone());
        }
    }

    /// Calls `f` with every twin of the collection after `after`, in key order, until it
    /// breaks.
    fn for_each_row(
        &self,
        from: Collection,
        after: Option<String>,
        mut f: impl FnMut(&str, &dyn Row) -> ControlFlow<()>,
    ) {
        match from {
            Collection::Modules => self.for_each_module_row(after, f),
            Collection::Devices => {
                let mut cursor = after;
                loop {
                    let batch = self.store.list(cursor.as_deref(), SCAN_CHUNK);
                    for e in &batch {
                        if f(&e.device.device_id, &DeviceRow(e)).is_break() {
                            return;
                        }
                    }
                    if batch.len() < SCAN_CHUNK {
                        return;
                    }
                    cursor = batch.last().map(|e| e.device.device_id.clone());
                }
            }
        }
    }
}
