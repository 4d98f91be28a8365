//! One finding in detail, for the dashboard: the record as `finding show` presents it,
//! whether it counts, and every version by its author, oldest first.

use serde::Serialize;

use super::error::{invalid, QueryError};
use crate::finding::{FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::node::{Node, NodeError, RecordView};
use crate::record::Record;
use crate::record::RecordId;
use crate::store::{Store, StoreError};

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
