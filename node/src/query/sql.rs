//! The SQL of counting: the `WHERE` clause every query shares (what counts, then each
//! filter), the SQL expressions of the grouping dimensions, and aggregates, totals and
//! matching ids, answered from the rollup when it holds what is asked.
//!
//! SQL is built with [`QueryBuilder`] and every value is a bound parameter; the only
//! text pasted into SQL comes from the fixed expressions of [`Dimension`].

use sqlx::{QueryBuilder, Row, Sqlite};

use super::error::QueryError;
use super::model::{
    days_from_date, fts_expression, Aggregate, AggregateRow, Dimension, Measures, Query,
};
use crate::record::RecordId;
use crate::store::Reader;

const DAY_MS: i64 = 86_400_000;

impl Dimension {
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
pub(super) fn push_where<'a>(qb: &mut QueryBuilder<'a, Sqlite>, q: &'a Query) {
    push_where_excluding(qb, q, None);
}

/// As [`push_where`], leaving out the findings whose `rowid` is in `excluded` (a JSON
/// array of integers, bound as one parameter).
pub(super) fn push_where_excluding<'a>(
    qb: &mut QueryBuilder<'a, Sqlite>,
    q: &'a Query,
    excluded: Option<&'a str>,
) {
    qb.push(" WHERE f.is_head = 1 AND f.retracted = 0");
    if let Some(rows) = excluded {
        qb.push(" AND f.rowid NOT IN (SELECT value FROM json_each(")
            .push_bind(rows)
            .push("))");
    }
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

/// Counts findings matching `q`, grouped by `group_by`.
///
/// Answered from `finding_rollup` (counts kept by the store, migrations 0005 and 0006) when the
/// filters are on country and category only and every grouping is one of country,
/// category, month, quarter and year; from `findings` otherwise. Both give the same result.
pub async fn aggregate(
    reader: &Reader,
    q: &Query,
    group_by: &[Dimension],
) -> Result<Aggregate, QueryError> {
    aggregate_from(reader, q, group_by, Source::for_query(q, group_by), None).await
}

/// Where an aggregate is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The per-finding rows.
    Findings,
    /// The country x category x month counts.
    Rollup,
}

impl Source {
    /// The rollup when it holds everything `q` grouped by `group_by` needs.
    pub(super) fn for_query(q: &Query, group_by: &[Dimension]) -> Self {
        if rollup_answers(q, group_by) {
            Self::Rollup
        } else {
            Self::Findings
        }
    }
}

/// Whether `finding_rollup` holds everything an aggregate of `q` by `group_by` needs.
pub(super) fn rollup_answers(q: &Query, group_by: &[Dimension]) -> bool {
    let rollup_filters = Query {
        country: q.country.clone(),
        category: q.category.clone(),
        ..Query::default()
    };
    *q == rollup_filters && group_by.iter().all(|d| d.rollup_sql().is_some())
}

/// An aggregate read from `source`, leaving out the findings whose rowid is in
/// `excluded` (a JSON array; only with [`Source::Findings`]: the rollup cannot).
pub(super) async fn aggregate_from(
    reader: &Reader,
    q: &Query,
    group_by: &[Dimension],
    source: Source,
    excluded: Option<&str>,
) -> Result<Aggregate, QueryError> {
    debug_assert!(excluded.is_none() || source == Source::Findings);
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
                push_where_excluding(&mut qb, q, excluded);
            }
        }
        let cols = (1..=group_by.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        qb.push(format_args!(" GROUP BY {cols} ORDER BY {cols}"));
        let n = group_by.len();
        for r in qb.build().fetch_all(reader.pool()).await? {
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
        totals_from(reader, q, source, excluded).await?
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
pub async fn totals(reader: &Reader, q: &Query) -> Result<Measures, QueryError> {
    totals_from(reader, q, Source::for_query(q, &[]), None).await
}

/// Measures read from `source`, leaving out the findings whose rowid is in `excluded`.
pub(super) async fn totals_from(
    reader: &Reader,
    q: &Query,
    source: Source,
    excluded: Option<&str>,
) -> Result<Measures, QueryError> {
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
            push_where_excluding(&mut qb, q, excluded);
            qb
        }
    };
    let r = qb.build().fetch_one(reader.pool()).await?;
    Ok(Measures {
        findings: r.get(0),
        affected: r.get(1),
    })
}

/// Ids of every finding matching `q`, sorted.
pub async fn matching_ids(reader: &Reader, q: &Query) -> Result<Vec<RecordId>, QueryError> {
    matching_ids_in(reader, q, None).await
}

/// As [`matching_ids`], leaving out the findings whose rowid is in `excluded`.
pub(super) async fn matching_ids_in(
    reader: &Reader,
    q: &Query,
    excluded: Option<&str>,
) -> Result<Vec<RecordId>, QueryError> {
    let mut qb = QueryBuilder::new("SELECT f.id FROM findings f");
    push_where_excluding(&mut qb, q, excluded);
    qb.push(" ORDER BY f.id");
    let ids: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(reader.pool()).await?;
    Ok(ids.iter().filter_map(|b| RecordId::from_slice(b)).collect())
}
