//! One finding in detail, for the dashboard: the record as `finding show` presents it
//! (built by the node, which the caller asks), whether it counts, and every version by its
//! author, oldest first, read through the store's [`Reader`].

use serde::Serialize;
use sqlx::Row;

use super::error::QueryError;
use crate::finding::{FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::node::RecordView;
use crate::record::{self, Record, RecordId};
use crate::store::{Reader, StoreError};

/// Longest supersession chain followed when listing a finding's versions.
const MAX_VERSIONS: usize = 1000;

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

/// The stored record with `id`, `None` if this node does not hold it.
async fn stored(reader: &Reader, id: &RecordId) -> Result<Option<Record>, QueryError> {
    let row = sqlx::query("SELECT id, bytes FROM records WHERE id = ?")
        .bind(id.0.as_slice())
        .fetch_optional(reader.pool())
        .await?;
    row.map(|r| verified(&r)).transpose()
}

/// Records by `author` that supersede `id` (corrections and retractions), in `seq` order.
async fn superseding(
    reader: &Reader,
    id: &RecordId,
    author: &OrgKey,
) -> Result<Vec<Record>, QueryError> {
    let rows = sqlx::query(
        "SELECT id, bytes FROM records WHERE supersedes = ? AND author = ? ORDER BY seq",
    )
    .bind(id.0.as_slice())
    .bind(author.as_bytes().as_slice())
    .fetch_all(reader.pool())
    .await?;
    rows.iter().map(verified).collect()
}

/// The record of an `(id, bytes)` row, re-verified from its bytes, as the store reads
/// records: bytes that do not verify or hash to another id are a corrupt store.
fn verified(row: &sqlx::sqlite::SqliteRow) -> Result<Record, QueryError> {
    let id: Vec<u8> = row.get(0);
    let bytes: Vec<u8> = row.get(1);
    let corrupt = |reason: String| StoreError::Corrupt {
        id: hex::encode(&id),
        reason,
    };
    let r = record::verify(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if r.id.0.as_slice() != id.as_slice() {
        return Err(corrupt("stored bytes hash to a different id".into()).into());
    }
    Ok(r)
}

/// The versions of the finding `rec` belongs to, oldest first.
pub async fn history(reader: &Reader, rec: &Record) -> Result<Vec<Version>, QueryError> {
    let mut back = Vec::new();
    let mut cur = rec.clone();
    while let Some(prev) = cur.supersedes {
        if back.len() >= MAX_VERSIONS {
            break;
        }
        let Some(p) = stored(reader, &prev).await? else {
            break;
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
        let later = superseding(reader, &cur.id, &cur.author).await?;
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

/// The detail of the finding `view` shows (the caller gets it from `Node::show`), with
/// its versions read through `reader`. A view of a record that is not a finding, or of
/// one no longer held, is [`QueryError::NotFound`].
pub async fn finding_detail(
    reader: &Reader,
    view: RecordView,
) -> Result<FindingDetail, QueryError> {
    let not_found = || QueryError::NotFound(view.id.to_hex());
    if view.schema != FINDING_SCHEMA {
        return Err(not_found());
    }
    let rec = stored(reader, &view.id).await?.ok_or_else(not_found)?;
    let versions = history(reader, &rec).await?;
    Ok(FindingDetail {
        current: view.superseded_by.is_empty() && view.retracted.is_none(),
        record: view,
        versions,
    })
}
