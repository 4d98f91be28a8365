//! Paging through findings: page size limits and the opaque cursor a page hands to the
//! next (the last finding's incident date and id, the order pages are read in).

use super::error::{invalid, QueryError};
use super::model::days_from_date;
use crate::record::RecordId;

/// Most findings one page returns.
pub const MAX_LIMIT: u32 = 500;
/// Findings per page when no limit is given.
pub const DEFAULT_LIMIT: u32 = 50;

/// Where a page of findings starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Findings per page (1..=[`MAX_LIMIT`]).
    pub limit: u32,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Also count every matching finding (`total`). Off by default: a page is found by
    /// reading about `limit` index entries, a total by visiting every match (a search
    /// matching a large share of a million findings takes most of a second).
    pub with_total: bool,
}

/// A page request, checked.
pub fn page(limit: Option<u32>, cursor: Option<String>) -> Result<Page, QueryError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!("limit must be from 1 to {MAX_LIMIT}")));
    }
    if let Some(c) = &cursor {
        decode_cursor(c)?;
    }
    Ok(Page {
        limit,
        cursor,
        with_total: false,
    })
}

pub(super) fn encode_cursor(date: &str, id: &RecordId) -> String {
    format!("{date}~{}", id.to_hex())
}

pub(super) fn decode_cursor(c: &str) -> Result<(String, Vec<u8>), QueryError> {
    let bad = || invalid("cursor is not one this node issued; start again without it");
    let (date, id) = c.split_once('~').ok_or_else(bad)?;
    days_from_date(date).ok_or_else(bad)?;
    let id: RecordId = id.parse().map_err(|_| bad())?;
    Ok((date.to_string(), id.0.to_vec()))
}
