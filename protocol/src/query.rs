//! Twin queries on the wire: `POST /devices/query` (iothub-beyond-c2d.md 1.7).
//!
//! The request body is a [`QuerySpecification`]; paging travels in headers: the client sends
//! [`MAX_ITEM_COUNT_HEADER`] and, after the first page, [`CONTINUATION_HEADER`]; the hub answers
//! a JSON array with [`ITEM_TYPE_HEADER`] and, only when more pages follow,
//! [`CONTINUATION_HEADER`]. Node loops while the header is present, so the last page must not
//! carry it at all (an empty value would restart the query).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Request header: the continuation token from the previous page.
pub const CONTINUATION_HEADER: &str = "x-ms-continuation";
/// Request header: the most items the client wants in this page.
pub const MAX_ITEM_COUNT_HEADER: &str = "x-ms-max-item-count";
/// Response header: what the items are ([`QueryItemType`]).
pub const ITEM_TYPE_HEADER: &str = "x-ms-item-type";

/// Page size when the client does not ask for one.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page the hub returns; larger requests are served with this size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The body of `POST /devices/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySpecification {
    /// The query text, e.g. `SELECT * FROM devices WHERE tags.floor = 3`.
    pub query: String,
}

/// What a page's items are (`x-ms-item-type`; swagger values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryItemType {
    /// Whole twins (`SELECT *`).
    Twin,
    /// Projections and aggregates: objects built from the select list.
    Raw,
}

impl QueryItemType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryItemType::Twin => "twin",
            QueryItemType::Raw => "raw",
        }
    }

    /// Reads a header value (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "twin" => Some(QueryItemType::Twin),
            "raw" => Some(QueryItemType::Raw),
            _ => None,
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The items: twins in the service view, or projected objects.
    pub items: Vec<Value>,
    /// What the items are.
    pub item_type: QueryItemType,
    /// The token for the next page; `None` on the last page.
    pub continuation_token: Option<String>,
}

/// The page size to use for a `x-ms-max-item-count` value: absent or unreadable gives the
/// default, and values are kept within 1 to [`MAX_PAGE_SIZE`] ("the service may use a
/// different value if the value specified is not acceptable").
pub fn page_size(header: Option<&str>) -> usize {
    match header.map(str::trim).map(str::parse::<i64>) {
        Some(Ok(n)) if n >= 1 => usize::try_from(n).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)),
        Some(Ok(_)) => 1,
        _ => DEFAULT_PAGE_SIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_clamped() {
        assert_eq!(page_size(None), 100);
        assert_eq!(page_size(Some("4")), 4);
        assert_eq!(page_size(Some("5000")), 1000);
        assert_eq!(page_size(Some("0")), 1);
        assert_eq!(page_size(Some("x")), 100);
    }

    #[test]
    fn item_types_round_trip() {
        for t in [QueryItemType::Twin, QueryItemType::Raw] {
            assert_eq!(QueryItemType::parse(t.as_str()), Some(t));
        }
        let spec: QuerySpecification =
            serde_json::from_str(r#"{"query":"SELECT * FROM devices"}"#).unwrap();
        assert_eq!(spec.query, "SELECT * FROM devices");
    }
}
