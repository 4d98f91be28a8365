//! Counting for publication: the aggregate and the ids of the current findings matching a
//! query that may be shown to a chosen audience (the whole coalition, or one member).
//!
//! A signed report is made to be published, so it must not count, nor name by id, a
//! finding the organisation kept private or shared only with chosen members. Which
//! findings may be shown is not decided here: each matching finding's effective audience
//! (its signed audience widened by its author's grants) is asked of
//! [`crate::audience::shareable_with`], the one home of that rule; this module only reads
//! the audiences and grants from the store and leaves the rest out of the SQL.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::error::QueryError;
use super::model::{Aggregate, Dimension, Query};
use super::sql::{aggregate_from, matching_ids_in, push_where, Source};
use crate::audience;
use crate::finding::GRANT_SCHEMA;
use crate::identity::OrgKey;
use crate::record::{Audience, RecordId};
use crate::store::{self, Reader};

/// What a published count may include, and what it left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publishable {
    /// Grouped counts over the findings the audience may see.
    pub aggregate: Aggregate,
    /// Ids of every finding counted, sorted.
    pub counted: Vec<RecordId>,
    /// Ids of the current findings matching the query that were left out because the
    /// audience may not see them, sorted. For the producer's eyes only: never publish.
    pub withheld: Vec<RecordId>,
}

/// Counts the current findings matching `q`, grouped by `group_by`, that may be shown to
/// `recipient` (`None`: every member of the coalition).
pub async fn publishable(
    reader: &Reader,
    q: &Query,
    group_by: &[Dimension],
    recipient: Option<&OrgKey>,
) -> Result<Publishable, QueryError> {
    let candidates = audiences(reader, q).await?;
    let grants = grants(reader).await?;
    let mut withheld_rows = Vec::new();
    let mut withheld = Vec::new();
    for c in candidates {
        let effective = audience::widened(
            &c.audience,
            grants.get(&(c.id, c.author)).into_iter().flatten(),
        );
        if !audience::shareable_with(&effective, recipient) {
            withheld_rows.push(c.rowid);
            withheld.push(c.id);
        }
    }
    withheld.sort();
    // The rowids of the left-out findings, as one bound JSON array (`json_each`), so a
    // store with many private findings needs no statement with thousands of parameters.
    let excluded = (!withheld_rows.is_empty())
        .then(|| serde_json::to_string(&withheld_rows).expect("integers serialise"));
    let source = if excluded.is_some() {
        // The rollup counts every current finding, private ones included.
        Source::Findings
    } else {
        Source::for_query(q, group_by)
    };
    let aggregate = aggregate_from(reader, q, group_by, source, excluded.as_deref()).await?;
    let counted = matching_ids_in(reader, q, excluded.as_deref()).await?;
    Ok(Publishable {
        aggregate,
        counted,
        withheld,
    })
}

/// A current finding matching a query, with its audience as signed.
struct Candidate {
    rowid: i64,
    id: RecordId,
    author: OrgKey,
    audience: Audience,
}

/// Every current finding matching `q` with its signed audience (before grants).
async fn audiences(reader: &Reader, q: &Query) -> Result<Vec<Candidate>, QueryError> {
    let mut qb = QueryBuilder::new(
        "SELECT f.rowid, f.id, f.author, r.audience, \
         CASE WHEN r.audience = 2 THEN \
           (SELECT group_concat(hex(m.member)) FROM audience_members m WHERE m.record = f.id) \
         END \
         FROM findings f JOIN records r ON r.id = f.id",
    );
    push_where(&mut qb, q);
    let rows = qb.build().fetch_all(reader.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id_bytes: Vec<u8> = r.get(1);
        let author_bytes: Vec<u8> = r.get(2);
        let (Some(id), Ok(author)) = (
            RecordId::from_slice(&id_bytes),
            OrgKey::from_bytes(&author_bytes),
        ) else {
            // A row the store could not have written; leaving it out of a published
            // count is the safe side.
            continue;
        };
        let members: Option<String> = r.get(4);
        // The store's audience codes (`Audience::kind_code`); anything else is treated
        // as private, which no report counts.
        let audience = match r.get::<i64, _>(3) {
            1 => Audience::Coalition,
            2 => Audience::members(crate::store::member_keys(members)),
            _ => Audience::Private,
        };
        out.push(Candidate {
            rowid: r.get(0),
            id,
            author,
            audience,
        });
    }
    Ok(out)
}

/// Audiences added by grants, by (granted record, grant author).
async fn grants(reader: &Reader) -> Result<HashMap<(RecordId, OrgKey), Vec<Audience>>, QueryError> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT id, bytes FROM records WHERE schema = ?")
            .bind(GRANT_SCHEMA)
            .fetch_all(reader.pool())
            .await?;
    let mut out: HashMap<(RecordId, OrgKey), Vec<Audience>> = HashMap::new();
    for (id, bytes) in rows {
        let Some(id) = RecordId::from_slice(&id) else {
            continue;
        };
        let grant = store::reread(&id, &bytes)?;
        if let Some((target, a)) = audience::grant_target(&grant) {
            out.entry((target, grant.author)).or_default().push(a);
        }
    }
    Ok(out)
}
