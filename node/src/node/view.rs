//! Presenting a record: what `finding show` prints, and a record's audience as widened
//! by the grants its author signed.

use serde_json::Value;

use super::{Node, NodeError};
use crate::audience;
use crate::finding::{ANNEX_SCHEMA, FINDING_SCHEMA, GRANT_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::record::{Audience, Record, RecordId};

/// A record as `finding show` presents it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordView {
    /// Record id.
    pub id: RecordId,
    /// Author key.
    pub author: OrgKey,
    /// Whether the author is this node's organisation.
    pub own: bool,
    /// Signature status (re-checked now).
    pub signature: String,
    /// Schema id.
    pub schema: String,
    /// Author's sequence number.
    pub seq: u64,
    /// Creation time claimed by the author, ms.
    pub created_at_ms: i64,
    /// Audience including grants.
    pub audience: Value,
    /// Record this one supersedes.
    pub supersedes: Option<RecordId>,
    /// Later versions by the same author.
    pub superseded_by: Vec<RecordId>,
    /// Retraction reason, if the finding was retracted.
    pub retracted: Option<String>,
    /// Private annexes held on this node.
    pub annexes: Vec<RecordId>,
    /// The payload.
    pub payload: Value,
}

impl Node {
    /// A record's audience including the grants its author signed for it.
    pub async fn effective_audience(&self, rec: &Record) -> Result<Audience, NodeError> {
        let grants = self.store.about(&rec.id, GRANT_SCHEMA).await?;
        Ok(audience::effective(rec, &grants))
    }

    /// Everything `finding show` presents about a record.
    pub async fn show(&self, target: &str) -> Result<RecordView, NodeError> {
        let id = self.store.resolve(target).await?;
        let (rec, signature) = match self.store.record(&id).await {
            Ok(r) => (r, "valid (ed25519 verify_strict)".to_string()),
            Err(e) => return Err(e.into()),
        };
        let later = self.store.superseded_by(&id, &rec.author).await?;
        let retracted = later
            .iter()
            .find(|r| r.schema == RETRACTION_SCHEMA)
            .and_then(|r| serde_json::from_slice::<Value>(&r.payload).ok())
            .map(|v| v["reason"].as_str().unwrap_or_default().to_string());
        let annexes = self.store.about(&id, ANNEX_SCHEMA).await?;
        Ok(RecordView {
            id,
            author: rec.author,
            own: rec.author == self.key(),
            signature,
            schema: rec.schema.clone(),
            seq: rec.seq,
            created_at_ms: rec.created_at_ms,
            audience: self.effective_audience(&rec).await?.to_json(),
            supersedes: rec.supersedes,
            superseded_by: later
                .iter()
                .filter(|r| r.schema == FINDING_SCHEMA)
                .map(|r| r.id)
                .collect(),
            retracted,
            annexes: annexes
                .iter()
                .filter(|a| a.author == rec.author)
                .map(|a| a.id)
                .collect(),
            payload: serde_json::from_slice(&rec.payload).unwrap_or(Value::Null),
        })
    }
}
