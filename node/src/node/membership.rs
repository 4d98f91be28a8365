//! The coalition membership as this node sees it: folded from the membership records it
//! holds, under the charter it adopted (or, after joining by import, the first valid
//! charter that lists this organisation).
//!
//! The fold re-verifies every membership record, so it is cached: it is recomputed only
//! when the membership records stored (their count and highest row) or the chosen charter
//! changed, whoever stored them (this process, or the CLI in another one). Asking costs
//! two indexed queries otherwise; the daemon asks every second and on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Node, NodeError};
use crate::charter::{self, Member, Membership, SignedCharter, MEMBERSHIP_SCHEMAS};
use crate::identity::OrgKey;

/// Meta key naming the charter this node adopted.
pub(super) const CHARTER_META: &str = "charter";

/// What the stored membership records were when folded: their count, their highest
/// rowid, and the chosen charter. Records are never deleted, so any store changes it.
type FoldKey = (i64, i64, Option<[u8; 32]>);

/// A fold of the stored membership records.
#[derive(Debug)]
pub(super) struct Folded {
    key: FoldKey,
    /// The membership (`None` before a charter).
    pub(super) membership: Option<Membership>,
    /// Membership records held per (author, epoch they name), for the cap on them.
    pub(super) per_author_epoch: HashMap<(OrgKey, Option<[u8; 32]>), u32>,
}

/// The last fold, and how many folds were made (figures for tests and status).
#[derive(Debug, Default)]
pub(super) struct FoldCache {
    last: Mutex<Option<Arc<Folded>>>,
    folds: AtomicU64,
}

impl Node {
    /// The id of the charter this node belongs to, as its store's meta table records it.
    pub(super) async fn chosen_charter(&self) -> Result<Option<[u8; 32]>, NodeError> {
        Ok(self
            .store
            .meta(CHARTER_META)
            .await?
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok()))
    }

    /// The coalition membership folded from the records this node holds (`None` before
    /// a charter is adopted or received).
    pub async fn membership(&self) -> Result<Option<Membership>, NodeError> {
        Ok(self.folded().await?.membership.clone())
    }

    /// How many times this node folded its membership records since it was opened (the
    /// fold is cached; see the module header).
    pub fn membership_folds(&self) -> u64 {
        self.fold_cache.folds.load(Ordering::Relaxed)
    }

    /// The cached fold, refolded if membership records were stored since.
    pub(super) async fn folded(&self) -> Result<Arc<Folded>, NodeError> {
        let chosen = self.chosen_charter().await?;
        let key = self.fold_key(chosen).await?;
        if let Some(f) = self.cached(&key) {
            return Ok(f);
        }
        let recs = self.store.records_with_schemas(&MEMBERSHIP_SCHEMAS).await?;
        let chosen = match chosen {
            Some(c) => Some(c),
            None => {
                // A node that joined by import belongs to the first valid charter that
                // lists its organisation; remember it, so a later, different charter
                // (which any member could sign alone) cannot displace it.
                let mine = recs
                    .iter()
                    .filter(|r| r.schema == charter::CHARTER_SCHEMA)
                    .filter_map(|r| serde_json::from_slice::<SignedCharter>(&r.payload).ok())
                    .find(|c| {
                        c.check().is_ok() && c.charter.members.iter().any(|m| m.key == self.key())
                    })
                    .map(|c| c.charter.id());
                if let Some(id) = mine {
                    self.store.set_meta(CHARTER_META, &hex::encode(id)).await?;
                }
                mine
            }
        };
        let membership = Membership::fold(&recs, chosen)?;
        let mut per_author_epoch: HashMap<_, u32> = HashMap::new();
        for r in &recs {
            *per_author_epoch.entry((r.author, r.epoch)).or_default() += 1;
        }
        self.fold_cache.folds.fetch_add(1, Ordering::Relaxed);
        // The key was read before the records: if more arrived meanwhile, the next call
        // sees another key and folds again.
        let folded = Arc::new(Folded {
            key: (key.0, key.1, chosen),
            membership,
            per_author_epoch,
        });
        *self.fold_cache.last.lock().expect("fold cache lock") = Some(folded.clone());
        Ok(folded)
    }

    fn cached(&self, key: &FoldKey) -> Option<Arc<Folded>> {
        let last = self.fold_cache.last.lock().expect("fold cache lock");
        last.as_ref().filter(|f| f.key == *key).cloned()
    }

    /// The cache key of the membership records stored now (one query on the partial
    /// index `records_schema`).
    async fn fold_key(&self, chosen: Option<[u8; 32]>) -> Result<FoldKey, NodeError> {
        let (count, max): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM records \
             WHERE schema IN (?, ?, ?) AND schema <> 'finding/v1'",
        )
        .bind(MEMBERSHIP_SCHEMAS[0])
        .bind(MEMBERSHIP_SCHEMAS[1])
        .bind(MEMBERSHIP_SCHEMAS[2])
        .fetch_one(self.store.pool())
        .await
        .map_err(crate::store::StoreError::from)?;
        Ok((count, max, chosen))
    }

    /// The membership, or a refusal saying how to get a charter onto this node.
    pub(super) async fn require_membership(&self) -> Result<Membership, NodeError> {
        self.membership().await?.ok_or_else(|| {
            NodeError::Refused(
                "no coalition charter on this node yet: adopt one with `coalition charter adopt DRAFT` or import a bundle that carries it".into(),
            )
        })
    }

    /// This organisation's member card.
    pub fn member_card(&self) -> Member {
        Member {
            organisation: self.config.organisation.name.clone(),
            country: self.config.organisation.country.clone(),
            key: self.key(),
        }
    }
}
