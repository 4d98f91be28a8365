//! One query model for everything analysts see: the `coalition query` command, the HTTP
//! API, the dashboard, exports and signed reports all filter and group findings through
//! [`Query`] and the functions here, so a number on the dashboard, in a CSV and in a
//! report is computed by the same SQL.
//!
//! What counts: only the latest version of each finding (`is_head = 1`), never a retracted
//! one (`retracted = 0`); records are stored once by id, so a record received twice counts
//! once. SQL is built with [`QueryBuilder`] and every value is a bound parameter; the only
//! text pasted into SQL comes from the fixed expressions of [`Dimension`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::finding::{FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::node::{Node, NodeError, RecordView};
use crate::record::{Record, RecordId};
use crate::schema::schemas;
use crate::store::{Store, StoreError};

/// Most findings one page returns.
pub const MAX_LIMIT: u32 = 500;
/// Findings per page when no limit is given.
pub const DEFAULT_LIMIT: u32 = 50;
/// Most grouping dimensions in one aggregate.
pub const MAX_GROUP_BY: usize = 4;
/// Most values one filter may list.
pub const MAX_VALUES: usize = 100;
/// Longest full-text search, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Most terms of a full-text search.
const MAX_SEARCH_TERMS: usize = 16;
/// Longest supersession chain followed when listing a finding's versions.
const MAX_VERSIONS: usize = 1000;
/// Separator of multi-valued columns in one SQL result cell (ASCII unit separator).
const UNIT_SEP: char = '\u{1f}';

/// Errors from queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query itself is wrong (unknown code, bad date, too many values …).
    #[error("{0}")]
    Invalid(String),
    /// No such finding.
    #[error("no finding with id {0} on this node")]
    NotFound(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

/// Filters on findings. Empty lists and `None` do not filter; values within one list are
/// alternatives (OR); different filters must all hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Country codes (ISO 3166-1 alpha-2, Kosovo XK).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    /// Regions, as written in the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    /// Municipalities, as written in the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub municipality: Vec<String>,
    /// Category codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    /// Security actor type codes (a finding matches if any of its actors does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_type: Vec<String>,
    /// Affected group codes (a finding matches if any of its groups does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_group: Vec<String>,
    /// Author organisation keys (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<OrgKey>,
    /// Confidence codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confidence: Vec<String>,
    /// Tags (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    /// Incident start date on or after (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Incident start date on or before (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Recorded (author's creation time) on or after this UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<String>,
    /// Recorded on or before this UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_to: Option<String>,
    /// Full-text search over title and summary, any language and script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

/// What findings can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Country code.
    Country,
    /// Region as written.
    Region,
    /// Municipality as written.
    Municipality,
    /// Category code.
    Category,
    /// Security actor type (a finding with two actor types counts in both groups).
    ActorType,
    /// Affected group (a finding counts in each of its groups).
    AffectedGroup,
    /// Author organisation key.
    Author,
    /// Confidence code.
    Confidence,
    /// Week of the incident start date, named by its Monday.
    Week,
    /// `YYYY-MM` of the incident start date.
    Month,
    /// `YYYY-Qn` of the incident start date.
    Quarter,
    /// `YYYY` of the incident start date.
    Year,
}

impl Dimension {
    /// Every dimension, in documentation order.
    pub const ALL: [Dimension; 12] = [
        Self::Country,
        Self::Region,
        Self::Municipality,
        Self::Category,
        Self::ActorType,
        Self::AffectedGroup,
        Self::Author,
        Self::Confidence,
        Self::Week,
        Self::Month,
        Self::Quarter,
        Self::Year,
    ];

    /// The name used on the command line, in URLs and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Country => "country",
            Self::Region => "region",
            Self::Municipality => "municipality",
            Self::Category => "category",
            Self::ActorType => "actor_type",
            Self::AffectedGroup => "affected_group",
            Self::Author => "author",
            Self::Confidence => "confidence",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// Parses a name (`actor-type` and `actor_type` both work).
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        let s = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                invalid(format!(
                    "cannot group by {s:?}; choose from {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }

    /// The SQL expression of this dimension over `finding_rollup r`, if the rollup has it.
    fn rollup_sql(self) -> Option<&'static str> {
        Some(match self {
            Self::Country => "r.country",
            Self::Category => "r.category",
            Self::Month => "r.month",
            Self::Quarter => {
                "substr(r.month, 1, 4) || '-Q' || ((CAST(substr(r.month, 6, 2) AS INTEGER) + 2) / 3)"
            }
            Self::Year => "substr(r.month, 1, 4)",
            _ => return None,
        })
    }

    /// The SQL expression of this dimension over `findings f`, `finding_actors a` and
    /// `finding_groups g`. Fixed text, never user input.
    fn sql(self) -> &'static str {
        match self {
            Self::Country => "f.country",
            Self::Region => "f.region",
            Self::Municipality => "f.municipality",
            Self::Category => "f.category",
            Self::ActorType => "a.actor_type",
            Self::AffectedGroup => "g.grp",
            Self::Author => "lower(hex(f.author))",
            Self::Confidence => "f.confidence",
            Self::Week => "date(f.occurred_start, 'weekday 0', '-6 days')",
            Self::Month => "substr(f.occurred_start, 1, 7)",
            Self::Quarter => {
                "substr(f.occurred_start, 1, 4) || '-Q' || \
                 ((CAST(substr(f.occurred_start, 6, 2) AS INTEGER) + 2) / 3)"
            }
            Self::Year => "substr(f.occurred_start, 1, 4)",
        }
    }
}

/// Parses a comma-separated list of dimensions.
pub fn parse_group_by(list: &[String]) -> Result<Vec<Dimension>, QueryError> {
    let mut dims = Vec::new();
    for part in list.iter().flat_map(|s| s.split(',')) {
        if part.trim().is_empty() {
            continue;
        }
        let d = Dimension::parse(part)?;
        if !dims.contains(&d) {
            dims.push(d);
        }
    }
    if dims.len() > MAX_GROUP_BY {
        return Err(invalid(format!(
            "group by at most {MAX_GROUP_BY} dimensions at once"
        )));
    }
    Ok(dims)
}

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

/// A query string split into its parts.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Filters.
    pub query: Query,
    /// Grouping.
    pub group_by: Vec<Dimension>,
    /// Paging.
    pub page: Page,
}

impl Request {
    /// Parses `key=value` pairs as found in a URL query string. Repeated keys and
    /// comma-separated codes both list alternatives. Unknown keys are refused.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut q = Query::default();
        let mut group_by = Vec::new();
        let mut limit = None;
        let mut cursor = None;
        let mut with_total = false;
        let codes = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "country" => q.country.extend(codes(v)),
                "region" => q.region.push(v.clone()),
                "municipality" => q.municipality.push(v.clone()),
                "category" => q.category.extend(codes(v)),
                "actor_type" => q.actor_type.extend(codes(v)),
                "affected_group" => q.affected_group.extend(codes(v)),
                "confidence" => q.confidence.extend(codes(v)),
                "tag" => q.tag.push(v.clone()),
                "author" => {
                    for c in codes(v) {
                        q.author.push(parse_key(&c)?);
                    }
                }
                "from" => q.from = non_empty(v),
                "to" => q.to = non_empty(v),
                "recorded_from" => q.recorded_from = non_empty(v),
                "recorded_to" => q.recorded_to = non_empty(v),
                "q" => q.q = non_empty(v),
                "group_by" => group_by.push(v.clone()),
                "limit" => {
                    limit = Some(v.trim().parse::<u32>().map_err(|_| {
                        invalid(format!("limit must be a number from 1 to {MAX_LIMIT}"))
                    })?)
                }
                "cursor" => cursor = non_empty(v),
                "total" => {
                    with_total = match v.trim() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(invalid("total must be true or false")),
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter {other:?} (see the OpenAPI description at /api/v1/openapi.yaml)"
                    )))
                }
            }
        }
        let query = q.normalised()?;
        Ok(Self {
            query,
            group_by: parse_group_by(&group_by)?,
            page: Page {
                with_total,
                ..page(limit, cursor)?
            },
        })
    }
}

fn non_empty(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn parse_key(s: &str) -> Result<OrgKey, QueryError> {
    s.parse().map_err(|_| {
        invalid(format!(
            "author {s:?} is not an organisation key (64 hex characters)"
        ))
    })
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

/// Filter flags shared by `coalition query`, `report` and `export`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// Country code(s), e.g. RS,XK.
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub country: Vec<String>,
    /// Region, as written in the findings (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub region: Vec<String>,
    /// Municipality, as written in the findings (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub municipality: Vec<String>,
    /// Category code(s).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub category: Vec<String>,
    /// Security actor type code(s).
    #[arg(long = "actor-type", value_delimiter = ',', value_name = "CODE")]
    pub actor_type: Vec<String>,
    /// Affected group code(s).
    #[arg(long = "affected-group", value_delimiter = ',', value_name = "CODE")]
    pub affected_group: Vec<String>,
    /// Author organisation key(s).
    #[arg(long, value_delimiter = ',', value_name = "KEY")]
    pub author: Vec<String>,
    /// Confidence code(s).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub confidence: Vec<String>,
    /// Tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Incident on or after this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Incident on or before this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Recorded on or after this UTC day (YYYY-MM-DD).
    #[arg(long = "recorded-from", value_name = "DATE")]
    pub recorded_from: Option<String>,
    /// Recorded on or before this UTC day (YYYY-MM-DD).
    #[arg(long = "recorded-to", value_name = "DATE")]
    pub recorded_to: Option<String>,
    /// Full-text search in titles and summaries (any language; words are prefixes).
    #[arg(long = "search", value_name = "WORDS")]
    pub search: Option<String>,
}

impl QueryArgs {
    /// The checked query these flags describe.
    pub fn to_query(&self) -> Result<Query, QueryError> {
        let mut author = Vec::new();
        for a in &self.author {
            author.push(parse_key(a)?);
        }
        Query {
            country: self.country.clone(),
            region: self.region.clone(),
            municipality: self.municipality.clone(),
            category: self.category.clone(),
            actor_type: self.actor_type.clone(),
            affected_group: self.affected_group.clone(),
            author,
            confidence: self.confidence.clone(),
            tag: self.tag.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            recorded_from: self.recorded_from.clone(),
            recorded_to: self.recorded_to.clone(),
            q: self.search.clone(),
        }
        .normalised()
    }
}

impl Query {
    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks codes against the vocabularies, dates and sizes; upper-cases country codes.
    pub fn normalised(mut self) -> Result<Self, QueryError> {
        for c in &mut self.country {
            *c = c.trim().to_ascii_uppercase();
        }
        let vocab_checks: [(&str, &str, &Vec<String>); 5] = [
            ("country", "country", &self.country),
            ("category", "category", &self.category),
            ("actor_type", "actor_type", &self.actor_type),
            ("affected_group", "affected_group", &self.affected_group),
            ("confidence", "confidence", &self.confidence),
        ];
        for (param, vocab, values) in vocab_checks {
            let known = schemas().vocabulary(vocab);
            if let Some(bad) = values.iter().find(|v| !known.contains(v)) {
                let hint = if known.len() > 20 {
                    String::new()
                } else {
                    format!("; known codes: {}", known.join(", "))
                };
                return Err(invalid(format!("unknown {param} code {bad:?}{hint}")));
            }
        }
        let lists = [
            self.country.len(),
            self.region.len(),
            self.municipality.len(),
            self.category.len(),
            self.actor_type.len(),
            self.affected_group.len(),
            self.author.len(),
            self.confidence.len(),
            self.tag.len(),
        ];
        if lists.iter().any(|&n| n > MAX_VALUES) {
            return Err(invalid(format!(
                "a filter may list at most {MAX_VALUES} values"
            )));
        }
        for (name, d) in [
            ("from", &self.from),
            ("to", &self.to),
            ("recorded_from", &self.recorded_from),
            ("recorded_to", &self.recorded_to),
        ] {
            if let Some(d) = d {
                days_from_date(d).ok_or_else(|| {
                    invalid(format!("{name} must be a date as YYYY-MM-DD, not {d:?}"))
                })?;
            }
        }
        if let Some(q) = &self.q {
            if q.chars().count() > MAX_SEARCH_CHARS {
                return Err(invalid(format!(
                    "search text is limited to {MAX_SEARCH_CHARS} characters"
                )));
            }
            if fts_expression(q).is_none() {
                self.q = None;
            }
        }
        Ok(self)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is a real date.
fn days_from_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

const DAY_MS: i64 = 86_400_000;

/// An FTS5 expression matching every word of `text` as a prefix, or `None` if `text`
/// has no words. Each word is quoted, so FTS5 operators in user input are just text.
fn fts_expression(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .take(MAX_SEARCH_TERMS)
        .map(|t| format!("\"{t}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

fn push_in<'a>(qb: &mut QueryBuilder<'a, Sqlite>, column: &str, values: &'a [String]) {
    if values.is_empty() {
        return;
    }
    qb.push(format_args!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.as_str());
    }
    qb.push(")");
}

fn push_exists<'a>(
    qb: &mut QueryBuilder<'a, Sqlite>,
    table: &str,
    column: &str,
    values: &'a [String],
) {
    if values.is_empty() {
        return;
    }
    qb.push(format_args!(
        " AND EXISTS (SELECT 1 FROM {table} x WHERE x.finding = f.rowid AND x.{column} IN ("
    ));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.as_str());
    }
    qb.push("))");
}

/// Appends `WHERE …` for `q` over `findings f`: current, not retracted, and every filter.
fn push_where<'a>(qb: &mut QueryBuilder<'a, Sqlite>, q: &'a Query) {
    qb.push(" WHERE f.is_head = 1 AND f.retracted = 0");
    push_in(qb, "f.country", &q.country);
    push_in(qb, "f.region", &q.region);
    push_in(qb, "f.municipality", &q.municipality);
    push_in(qb, "f.category", &q.category);
    push_in(qb, "f.confidence", &q.confidence);
    push_exists(qb, "finding_actors", "actor_type", &q.actor_type);
    push_exists(qb, "finding_groups", "grp", &q.affected_group);
    push_exists(qb, "finding_tags", "tag", &q.tag);
    if !q.author.is_empty() {
        qb.push(" AND f.author IN (");
        let mut sep = qb.separated(", ");
        for a in &q.author {
            sep.push_bind(a.as_bytes().as_slice());
        }
        qb.push(")");
    }
    if let Some(d) = &q.from {
        qb.push(" AND f.occurred_start >= ").push_bind(d.as_str());
    }
    if let Some(d) = &q.to {
        qb.push(" AND f.occurred_start <= ").push_bind(d.as_str());
    }
    if let Some(days) = q.recorded_from.as_deref().and_then(days_from_date) {
        qb.push(" AND f.created_at >= ").push_bind(days * DAY_MS);
    }
    if let Some(days) = q.recorded_to.as_deref().and_then(days_from_date) {
        qb.push(" AND f.created_at < ")
            .push_bind((days + 1) * DAY_MS);
    }
    if let Some(expr) = q.q.as_deref().and_then(fts_expression) {
        qb.push(" AND f.rowid IN (SELECT rowid FROM finding_fts WHERE finding_fts MATCH ")
            .push_bind(expr)
            .push(")");
    }
}

/// Number of findings and of people affected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    /// Findings counted.
    pub findings: i64,
    /// Sum of `affected.count` over them (findings without a count add 0).
    pub affected: i64,
}

/// One group of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// Values of the grouping dimensions, in `group_by` order (`null`: not given).
    pub keys: Vec<Option<String>>,
    /// Measures of the group.
    #[serde(flatten)]
    pub measures: Measures,
}

/// Grouped counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The dimensions, in order.
    pub group_by: Vec<Dimension>,
    /// Groups, ordered by their keys.
    pub rows: Vec<AggregateRow>,
    /// Distinct findings matching the filters, whatever the grouping.
    pub total: Measures,
}

/// Counts findings matching `q`, grouped by `group_by`.
///
/// Answered from `finding_rollup` (counts kept by the store, migrations 0005 and 0006) when the
/// filters are on country and category only and every grouping is one of country,
/// category, month, quarter and year; from `findings` otherwise. Both give the same result.
pub async fn aggregate(
    pool: &SqlitePool,
    q: &Query,
    group_by: &[Dimension],
) -> Result<Aggregate, QueryError> {
    aggregate_from(pool, q, group_by, Source::for_query(q, group_by)).await
}

/// Where an aggregate is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The per-finding rows.
    Findings,
    /// The country x category x month counts.
    Rollup,
}

impl Source {
    /// The rollup when it holds everything `q` grouped by `group_by` needs.
    fn for_query(q: &Query, group_by: &[Dimension]) -> Self {
        if rollup_answers(q, group_by) {
            Self::Rollup
        } else {
            Self::Findings
        }
    }
}

/// Whether `finding_rollup` holds everything an aggregate of `q` by `group_by` needs.
fn rollup_answers(q: &Query, group_by: &[Dimension]) -> bool {
    let rollup_filters = Query {
        country: q.country.clone(),
        category: q.category.clone(),
        ..Query::default()
    };
    *q == rollup_filters && group_by.iter().all(|d| d.rollup_sql().is_some())
}

async fn aggregate_from(
    pool: &SqlitePool,
    q: &Query,
    group_by: &[Dimension],
    source: Source,
) -> Result<Aggregate, QueryError> {
    let mut rows = Vec::new();
    if !group_by.is_empty() {
        let mut qb = QueryBuilder::new("SELECT ");
        match source {
            Source::Rollup => {
                for d in group_by {
                    qb.push(d.rollup_sql().expect("checked by rollup_answers"))
                        .push(", ");
                }
                qb.push("SUM(r.findings), SUM(r.affected) FROM finding_rollup r");
                push_rollup_where(&mut qb, q);
            }
            Source::Findings => {
                for d in group_by {
                    qb.push(d.sql()).push(", ");
                }
                qb.push("COUNT(*), COALESCE(SUM(f.affected_count), 0) FROM findings f");
                if group_by.contains(&Dimension::ActorType) {
                    qb.push(" JOIN finding_actors a ON a.finding = f.rowid");
                }
                if group_by.contains(&Dimension::AffectedGroup) {
                    qb.push(" LEFT JOIN finding_groups g ON g.finding = f.rowid");
                }
                push_where(&mut qb, q);
            }
        }
        let cols = (1..=group_by.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        qb.push(format_args!(" GROUP BY {cols} ORDER BY {cols}"));
        let n = group_by.len();
        for r in qb.build().fetch_all(pool).await? {
            rows.push(AggregateRow {
                keys: (0..n).map(|i| r.get::<Option<String>, _>(i)).collect(),
                measures: Measures {
                    findings: r.get(n),
                    affected: r.get(n + 1),
                },
            });
        }
    }
    // With single-valued dimensions every finding is in exactly one group, so the total
    // is the sum of the groups and needs no second scan.
    let single_valued = !group_by
        .iter()
        .any(|d| matches!(d, Dimension::ActorType | Dimension::AffectedGroup));
    let total = if !group_by.is_empty() && single_valued {
        rows.iter().fold(Measures::default(), |t, r| Measures {
            findings: t.findings + r.measures.findings,
            affected: t.affected + r.measures.affected,
        })
    } else {
        totals_from(pool, q, source).await?
    };
    Ok(Aggregate {
        group_by: group_by.to_vec(),
        rows,
        total,
    })
}

/// Appends `WHERE …` for the filters the rollup can apply (country and category).
fn push_rollup_where<'a>(qb: &mut QueryBuilder<'a, Sqlite>, q: &'a Query) {
    qb.push(" WHERE 1 = 1");
    push_in(qb, "r.country", &q.country);
    push_in(qb, "r.category", &q.category);
}

/// Measures over every finding matching `q`.
pub async fn totals(pool: &SqlitePool, q: &Query) -> Result<Measures, QueryError> {
    totals_from(pool, q, Source::for_query(q, &[])).await
}

async fn totals_from(pool: &SqlitePool, q: &Query, source: Source) -> Result<Measures, QueryError> {
    let mut qb = match source {
        Source::Rollup => {
            let mut qb = QueryBuilder::new(
                "SELECT COALESCE(SUM(r.findings), 0), COALESCE(SUM(r.affected), 0) \
                 FROM finding_rollup r",
            );
            push_rollup_where(&mut qb, q);
            qb
        }
        Source::Findings => {
            let mut qb = QueryBuilder::new(
                "SELECT COUNT(*), COALESCE(SUM(f.affected_count), 0) FROM findings f",
            );
            push_where(&mut qb, q);
            qb
        }
    };
    let r = qb.build().fetch_one(pool).await?;
    Ok(Measures {
        findings: r.get(0),
        affected: r.get(1),
    })
}

/// Ids of every finding matching `q`, sorted.
pub async fn matching_ids(pool: &SqlitePool, q: &Query) -> Result<Vec<RecordId>, QueryError> {
    let mut qb = QueryBuilder::new("SELECT f.id FROM findings f");
    push_where(&mut qb, q);
    qb.push(" ORDER BY f.id");
    let ids: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(pool).await?;
    Ok(ids.iter().filter_map(|b| RecordId::from_slice(b)).collect())
}

/// A finding as listed by queries and the API.
#[derive(Debug, Clone, Serialize)]
pub struct FindingSummary {
    /// Record id of the current version.
    pub id: RecordId,
    /// Author organisation.
    pub author: OrgKey,
    /// Title.
    pub title: String,
    /// Language of title and summary.
    pub language: String,
    /// Country code.
    pub country: String,
    /// Region.
    pub region: Option<String>,
    /// Municipality.
    pub municipality: Option<String>,
    /// Category code.
    pub category: String,
    /// Confidence code.
    pub confidence: String,
    /// Incident start date.
    pub occurred_start: String,
    /// Incident end date.
    pub occurred_end: Option<String>,
    /// Date precision code.
    pub date_precision: String,
    /// People affected.
    pub affected_count: Option<i64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Security actor types.
    pub actor_types: Vec<String>,
    /// Affected groups.
    pub affected_groups: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Author's creation time, ms.
    pub created_at_ms: i64,
    /// Audience code as signed (0 private, 1 coalition, 2 members), before grants.
    pub audience: i64,
}

/// One page of findings, newest incident first.
#[derive(Debug, Clone, Serialize)]
pub struct FindingsPage {
    /// The findings.
    pub items: Vec<FindingSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Measures over every finding matching the filters, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Measures>,
}

fn encode_cursor(date: &str, id: &RecordId) -> String {
    format!("{date}~{}", id.to_hex())
}

fn decode_cursor(c: &str) -> Result<(String, Vec<u8>), QueryError> {
    let bad = || invalid("cursor is not one this node issued; start again without it");
    let (date, id) = c.split_once('~').ok_or_else(bad)?;
    days_from_date(date).ok_or_else(bad)?;
    let id: RecordId = id.parse().map_err(|_| bad())?;
    Ok((date.to_string(), id.0.to_vec()))
}

fn split_list(s: Option<String>) -> Vec<String> {
    s.map(|s| {
        s.split(UNIT_SEP)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Matches below which a search drives the page itself (look up each match, sort).
const FEW_MATCHES: i64 = 2_000;

/// Whether a page of `q` should walk `findings_current_by_date` newest first: every
/// filter is one the index holds (country, category, confidence, incident dates), so no
/// row is read until the page is full; and a search, if any, matches enough findings
/// that the walk meets a page of them soon.
async fn walk_by_date(pool: &SqlitePool, q: &Query) -> Result<bool, QueryError> {
    let in_index = Query {
        country: q.country.clone(),
        category: q.category.clone(),
        confidence: q.confidence.clone(),
        from: q.from.clone(),
        to: q.to.clone(),
        q: q.q.clone(),
        ..Query::default()
    };
    if *q != in_index {
        return Ok(false);
    }
    let Some(expr) = q.q.as_deref().and_then(fts_expression) else {
        return Ok(true);
    };
    let matches: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT rowid FROM finding_fts WHERE finding_fts MATCH ? LIMIT ?)",
    )
    .bind(expr)
    .bind(FEW_MATCHES)
    .fetch_one(pool)
    .await?;
    Ok(matches >= FEW_MATCHES)
}

/// A page of findings matching `q`, ordered by incident date then id, newest first.
pub async fn findings(
    pool: &SqlitePool,
    q: &Query,
    page: &Page,
) -> Result<FindingsPage, QueryError> {
    let cursor = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let sep = UNIT_SEP.to_string();
    let mut qb = QueryBuilder::new(
        "SELECT f.id, f.author, f.title, f.language, f.country, f.region, f.municipality, \
         f.category, f.confidence, f.occurred_start, f.occurred_end, f.date_precision, \
         f.affected_count, f.lat, f.lon, f.created_at, \
         (SELECT audience FROM records r WHERE r.id = f.id), \
         (SELECT group_concat(actor_type, ",
    );
    qb.push_bind(sep.clone())
        .push(") FROM finding_actors x WHERE x.finding = f.rowid), (SELECT group_concat(grp, ")
        .push_bind(sep.clone())
        .push(") FROM finding_groups x WHERE x.finding = f.rowid), (SELECT group_concat(tag, ")
        .push_bind(sep)
        .push(") FROM finding_tags x WHERE x.finding = f.rowid) FROM findings f");
    // Two steps: pick the page's rows by key first (from an index, no table reads), then
    // read only those rows. With the filters `findings_current_by_date` holds, or a
    // search with many matches, walking that index newest first and stopping after the
    // page is far cheaper than what SQLite's planner picks on its own (reading every
    // match, then sorting): at a million findings, 1-60 ms instead of 0.4-0.8 s.
    qb.push(" WHERE f.rowid IN (SELECT f.rowid FROM findings f");
    if walk_by_date(pool, q).await? {
        qb.push(" INDEXED BY findings_current_by_date");
    }
    push_where(&mut qb, q);
    if let Some((date, id)) = &cursor {
        qb.push(" AND (f.occurred_start, f.id) < (")
            .push_bind(date.as_str())
            .push(", ")
            .push_bind(id.as_slice())
            .push(")");
    }
    qb.push(" ORDER BY f.occurred_start DESC, f.id DESC LIMIT ")
        .push_bind(i64::from(page.limit) + 1)
        .push(") ORDER BY f.occurred_start DESC, f.id DESC");
    let rows = qb.build().fetch_all(pool).await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows.iter().take(page.limit as usize) {
        let id: Vec<u8> = r.get(0);
        let author: Vec<u8> = r.get(1);
        let corrupt = |what: &str| {
            QueryError::Store(StoreError::Corrupt {
                id: hex::encode(&id),
                reason: format!("bad {what} column"),
            })
        };
        items.push(FindingSummary {
            id: RecordId::from_slice(&id).ok_or_else(|| corrupt("id"))?,
            author: OrgKey::from_bytes(&author).map_err(|_| corrupt("author"))?,
            title: r.get(2),
            language: r.get(3),
            country: r.get(4),
            region: r.get(5),
            municipality: r.get(6),
            category: r.get(7),
            confidence: r.get(8),
            occurred_start: r.get(9),
            occurred_end: r.get(10),
            date_precision: r.get(11),
            affected_count: r.get(12),
            lat: r.get(13),
            lon: r.get(14),
            created_at_ms: r.get(15),
            audience: r.get::<Option<i64>, _>(16).unwrap_or(0),
            actor_types: split_list(r.get(17)),
            affected_groups: split_list(r.get(18)),
            tags: split_list(r.get(19)),
        });
    }
    let next_cursor = (rows.len() > page.limit as usize)
        .then(|| {
            items
                .last()
                .map(|f| encode_cursor(&f.occurred_start, &f.id))
        })
        .flatten();
    Ok(FindingsPage {
        items,
        next_cursor,
        total: if page.with_total {
            Some(totals(pool, q).await?)
        } else {
            None
        },
    })
}

/// One version in a finding's history.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Record id.
    pub id: RecordId,
    /// `finding/v1` or `retraction/v1`.
    pub schema: String,
    /// Author's sequence number.
    pub seq: u64,
    /// Author's creation time, ms.
    pub created_at_ms: i64,
    /// Title of a finding version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Reason of a retraction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Everything the dashboard shows about one finding.
#[derive(Debug, Clone, Serialize)]
pub struct FindingDetail {
    /// The record as `finding show` presents it (author, signature status, audience …).
    #[serde(flatten)]
    pub record: RecordView,
    /// Whether this version counts in aggregates (latest, not retracted).
    pub current: bool,
    /// Every version by the same author, oldest first, including a retraction.
    pub versions: Vec<Version>,
}

fn version(r: &Record) -> Version {
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
    Version {
        id: r.id,
        schema: r.schema.clone(),
        seq: r.seq,
        created_at_ms: r.created_at_ms,
        title: v["title"].as_str().map(String::from),
        reason: (r.schema == RETRACTION_SCHEMA)
            .then(|| v["reason"].as_str().map(String::from))
            .flatten(),
    }
}

/// The versions of the finding `rec` belongs to, oldest first.
pub async fn history(store: &Store, rec: &Record) -> Result<Vec<Version>, QueryError> {
    let mut back = Vec::new();
    let mut cur = rec.clone();
    while let Some(prev) = cur.supersedes {
        if back.len() >= MAX_VERSIONS {
            break;
        }
        let p = match store.record(&prev).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => break,
            Err(e) => return Err(e.into()),
        };
        if p.author != cur.author || p.schema != FINDING_SCHEMA {
            break;
        }
        back.push(version(&p));
        cur = p;
    }
    back.reverse();
    back.push(version(rec));
    let mut cur = rec.clone();
    while back.len() < MAX_VERSIONS {
        let later = store.superseded_by(&cur.id, &cur.author).await?;
        for r in later.iter().filter(|r| r.schema == RETRACTION_SCHEMA) {
            back.push(version(r));
        }
        match later.into_iter().find(|r| r.schema == FINDING_SCHEMA) {
            Some(next) => {
                back.push(version(&next));
                cur = next;
            }
            None => break,
        }
    }
    Ok(back)
}

/// The detail of finding `id` (full hex or unique prefix) on `node`.
pub async fn finding_detail(node: &Node, id: &str) -> Result<FindingDetail, QueryError> {
    let view = match node.show(id).await {
        Ok(v) => v,
        Err(NodeError::Store(StoreError::NotFound(_) | StoreError::Ambiguous(_))) => {
            return Err(QueryError::NotFound(id.to_string()))
        }
        Err(NodeError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(invalid(e.to_string())),
    };
    if view.schema != FINDING_SCHEMA {
        return Err(QueryError::NotFound(id.to_string()));
    }
    let rec = node.store().record(&view.id).await?;
    let versions = history(node.store(), &rec).await?;
    Ok(FindingDetail {
        current: view.superseded_by.is_empty() && view.retracted.is_none(),
        record: view,
        versions,
    })
}

/// Labels of an aggregate's keys in `lang`, for tables a person reads.
pub fn key_label(dim: Dimension, key: Option<&str>, lang: &str) -> String {
    let Some(key) = key else {
        return "—".into();
    };
    let vocab = match dim {
        Dimension::Country => "country",
        Dimension::Category => "category",
        Dimension::ActorType => "actor_type",
        Dimension::AffectedGroup => "affected_group",
        Dimension::Confidence => "confidence",
        _ => return key.to_string(),
    };
    schemas().label(vocab, key, lang)
}

/// Aggregate rows keyed by their key tuple, for comparisons.
pub fn rows_by_key(a: &Aggregate) -> BTreeMap<Vec<Option<String>>, Measures> {
    a.rows
        .iter()
        .map(|r| (r.keys.clone(), r.measures))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{to_payload, FINDING_SCHEMA, RETRACTION_SCHEMA};
    use crate::identity::Identity;
    use crate::record::{sign, Audience, Draft, Record};
    use crate::store::{prepare, Store};
    use proptest::prelude::*;

    const COUNTRIES: [&str; 3] = ["RS", "XK", "GE"];
    const CATEGORIES: [&str; 3] = ["excessive_force", "corruption", "other"];

    /// A finding payload from a few small choices, so groups collide.
    fn payload(country: usize, category: usize, month: usize, affected: Option<u8>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "title": format!("Finding {country}-{category}-{month}"),
            "summary": "A summary long enough to pass the schema.",
            "language": "en",
            "occurred": {"start": format!("2024-{:02}-15", month + 1), "precision": "day"},
            "location": {"country": COUNTRIES[country]},
            "category": CATEGORIES[category],
            "actors": [{"type": "police"}],
            "sources": [{"type": "own_observation"}],
            "confidence": "high"
        });
        if let Some(n) = affected {
            v["affected"] = serde_json::json!({"count": n});
        }
        to_payload(&v)
    }

    /// Signs a chain of findings, corrections (which may move a finding to another
    /// group) and retractions from `ops`, for two authors.
    fn chains(ops: &[(u8, usize, usize, usize, Option<u8>)]) -> Vec<Record> {
        let authors = [
            Identity::from_seed(&[21; 32]),
            Identity::from_seed(&[22; 32]),
        ];
        let mut out = Vec::new();
        let mut state: Vec<(u64, Option<RecordId>, Vec<RecordId>)> =
            vec![(0, None, Vec::new()); authors.len()];
        for (i, &(op, country, category, month, affected)) in ops.iter().enumerate() {
            let a = i % authors.len();
            let (seq, prev, heads) = &mut state[a];
            let target = (!heads.is_empty()).then(|| heads[i % heads.len()]);
            let (schema, body, supersedes) = match (op % 4, target) {
                (2, Some(t)) => (
                    FINDING_SCHEMA,
                    payload(country, category, month, affected),
                    Some(t),
                ),
                (3, Some(t)) => (
                    RETRACTION_SCHEMA,
                    to_payload(&serde_json::json!({"reason": "test"})),
                    Some(t),
                ),
                _ => (
                    FINDING_SCHEMA,
                    payload(country, category, month, affected),
                    None,
                ),
            };
            *seq += 1;
            let r = sign(
                &authors[a],
                *seq,
                *prev,
                Draft {
                    schema: schema.into(),
                    audience: Audience::Coalition,
                    supersedes,
                    epoch: None,
                    payload: body,
                    created_at_ms: 1,
                },
            );
            *prev = Some(r.id);
            if let Some(t) = supersedes {
                heads.retain(|h| *h != t);
            }
            if schema == FINDING_SCHEMA {
                heads.push(r.id);
            }
            out.push(r);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The rollup the store maintains gives exactly what counting the finding rows
        /// gives, whatever order versions arrive in and however they are batched.
        #[test]
        fn rollup_matches_counting_the_rows(
            ops in prop::collection::vec(
                (any::<u8>(), 0usize..3, 0usize..3, 0usize..4, prop::option::of(0u8..50)),
                1..40,
            ),
            order_seed in any::<u64>(),
            batch in 1usize..8,
        ) {
            let mut records = chains(&ops);
            // Shuffle arrival order deterministically, and deliver one record twice.
            let mut seed = order_seed | 1;
            for i in (1..records.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                records.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            records.push(records[0].clone());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::create(&dir.path().join("s.db")).await.unwrap();
                for chunk in records.chunks(batch) {
                    let prepared: Vec<_> =
                        chunk.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
                    store.insert(&prepared).await.unwrap();
                }
                let pool = store.pool();
                let groupings: [&[Dimension]; 5] = [
                    &[],
                    &[Dimension::Country, Dimension::Category, Dimension::Month],
                    &[Dimension::Category],
                    &[Dimension::Year, Dimension::Country],
                    &[Dimension::Quarter],
                ];
                let filters = [
                    Query::default(),
                    Query { country: vec!["RS".into(), "GE".into()], ..Query::default() },
                    Query { category: vec!["corruption".into()], ..Query::default() },
                ];
                for q in &filters {
                    for g in groupings {
                        assert!(rollup_answers(q, g));
                        let fast = aggregate_from(pool, q, g, Source::Rollup).await.unwrap();
                        let slow = aggregate_from(pool, q, g, Source::Findings).await.unwrap();
                        assert_eq!(&fast, &slow, "query {q:?} grouped by {g:?}");
                        assert_eq!(
                            totals_from(pool, q, Source::Rollup).await.unwrap(),
                            totals_from(pool, q, Source::Findings).await.unwrap()
                        );
                    }
                }
            });
        }
    }

    #[test]
    fn rollup_is_used_only_for_what_it_holds() {
        let by = [Dimension::Country, Dimension::Month];
        assert!(rollup_answers(&Query::default(), &by));
        assert!(!rollup_answers(&Query::default(), &[Dimension::Region]));
        assert!(!rollup_answers(&Query::default(), &[Dimension::Week]));
        let searched = Query {
            q: Some("police".into()),
            ..Query::default()
        };
        assert!(!rollup_answers(&searched, &by));
        let dated = Query {
            from: Some("2024-01-01".into()),
            ..Query::default()
        };
        assert!(!rollup_answers(&dated, &by));
    }

    #[test]
    fn dates_are_checked_and_converted() {
        assert_eq!(days_from_date("1970-01-01"), Some(0));
        assert_eq!(days_from_date("2000-03-01"), Some(11_017));
        assert_eq!(days_from_date("2024-02-29"), Some(19_782));
        assert_eq!(days_from_date("2023-02-29"), None);
        assert_eq!(days_from_date("2023-13-01"), None);
        assert_eq!(days_from_date("23-1-1"), None);
    }

    #[test]
    fn search_text_cannot_inject_fts_syntax() {
        assert_eq!(
            fts_expression("police NEAR(\"x\" OR y) *").as_deref(),
            Some("\"police\"* \"NEAR(\"* \"x\"* \"OR\"* \"y)\"*")
        );
        assert_eq!(fts_expression("  * - "), None);
        assert_eq!(
            fts_expression("წყლის ჭავლი").as_deref(),
            Some("\"წყლის\"* \"ჭავლი\"*")
        );
    }

    #[test]
    fn query_strings_parse_and_unknown_codes_are_refused() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let r = Request::from_pairs(&pairs(&[
            ("country", "rs,XK"),
            ("country", "GE"),
            ("group_by", "country,month"),
            ("limit", "10"),
        ]))
        .unwrap();
        assert_eq!(r.query.country, ["RS", "XK", "GE"]);
        assert_eq!(r.group_by, [Dimension::Country, Dimension::Month]);
        assert_eq!(r.page.limit, 10);
        let err = Request::from_pairs(&pairs(&[("category", "bogus")])).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(Request::from_pairs(&pairs(&[("limit", "501")])).is_err());
        assert!(Request::from_pairs(&pairs(&[("colour", "red")])).is_err());
        assert!(Request::from_pairs(&pairs(&[("from", "2025-02-30")])).is_err());
        assert!(Request::from_pairs(&pairs(&[("group_by", "weather")])).is_err());
    }

    #[test]
    fn queries_round_trip_through_json() {
        let q = Query {
            country: vec!["RS".into()],
            q: Some("batons".into()),
            ..Default::default()
        };
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(text, r#"{"country":["RS"],"q":"batons"}"#);
        assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q);
    }
}
