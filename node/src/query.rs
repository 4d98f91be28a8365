//! One query model for everything analysts see: the `coalition query` command, the HTTP
//! API, the dashboard, exports and signed reports all filter and group findings through
//! [`Query`] and the functions here, so a number on the dashboard, in a CSV and in a
//! report is computed by the same SQL. Queries only read: they go through the store's
//! [`Reader`](crate::store::Reader), never through its write connection.
//!
//! # What counts, and where each rule lives
//!
//! A finding counts when it is the latest version by its author and not retracted;
//! a record received twice counts once. Each part of that rule has one home:
//!
//! - **Stored once.** `records.id` and `findings.id` are unique (migrations
//!   `0001_records.sql`, `0004_findings_in_arrival_order.sql`); inserting a held record is
//!   a no-op (`INSERT OR IGNORE` in `store::insert_chunk`, and only new records get
//!   finding rows).
//! - **Latest version, not retracted.** Two flags on each `findings` row, written by the
//!   store: `is_head` (no finding by the same author supersedes it) and `retracted` (a
//!   retraction by the same author supersedes it), recomputed for every finding a
//!   transaction touches by the flag `UPDATE` at the end of `store::insert_all`, whatever
//!   order versions arrive in. Queries read them in one place, `sql::push_where`
//!   (`is_head = 1 AND retracted = 0`); the partial indexes of migration 0004 hold only
//!   rows that satisfy it.
//! - **Rollup upkeep.** `finding_rollup` (current findings per country × category ×
//!   month, migration `0005_rollup.sql`) is counted once per transaction for the new rows
//!   by the grouped upsert in `store::insert_all` (which replaced 0005's insert trigger,
//!   migration `0006_index_per_transaction.sql`), and kept right when a flag changes by
//!   0005's two update triggers `findings_rollup_uncount` and `findings_rollup_recount`.
//!   [`aggregate`] reads it only when it holds everything asked (`sql::rollup_answers`);
//!   the property test in `query/tests.rs` checks that it always equals counting the rows.
//! - **Detail views.** Whether one finding counts (`FindingDetail::current`) is read from
//!   the record view the node builds (`Node::show`: no later finding and no retraction by
//!   the same author supersedes it), the rule the flags encode, checked from the records.
//!
//! # Layout
//!
//! `model`: filters, grouping and measures; `params`: URL query strings; `page`: limits
//! and cursors; `sql`: the shared `WHERE` clause, aggregates, totals and matching ids;
//! `publish`: the same counts restricted to what an audience may see (signed reports);
//! `list`: pages of findings; `detail`: one finding and its versions; `error`. The
//! command-line flags live in the CLI (`cli::analysis::QueryArgs`), which converts them
//! to a [`Query`].

mod detail;
mod error;
mod list;
mod model;
mod page;
mod params;
mod publish;
mod sql;

pub use detail::{finding_detail, history, FindingDetail, Version};
pub use error::QueryError;
pub use list::{findings, FindingSummary, FindingsPage};
pub use model::{
    key_label, parse_group_by, rows_by_key, Aggregate, AggregateRow, Dimension, Measures, Query,
    MAX_GROUP_BY, MAX_SEARCH_CHARS, MAX_VALUES,
};
pub use page::{page, Page, DEFAULT_LIMIT, MAX_LIMIT};
pub use params::{parse_author, Request};
pub use publish::{publishable, Publishable};
pub use sql::{aggregate, matching_ids, totals};

#[cfg(test)]
mod tests;
