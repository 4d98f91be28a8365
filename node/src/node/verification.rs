//! Verifying the store itself: the database file, every stored record and its id, and
//! every author's membership. Bundles are verified by the core crate ([`crate::verify`]),
//! which needs no store.

use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Node, NodeError};
use crate::chain::{ChainReport, Link, Organisations};
use crate::charter::Membership;
use crate::check::{self, Prepared};
use crate::merkle::{Checkpoint, CHECKPOINT_SCHEMA};
use crate::record::RecordId;
use crate::verify::{judge_all, Failure, VerifyReport};

/// What [`Node::witness`] did about one author's latest checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Witnessed {
    /// The checkpoint's author.
    pub author: crate::identity::OrgKey,
    /// The checkpoint record.
    pub checkpoint: RecordId,
    /// Its seq.
    pub seq: u64,
    /// Records it covers.
    pub size: u64,
    /// The cosignature record signed, if any.
    pub cosignature: Option<RecordId>,
    /// Why it was not cosigned.
    pub refused: Option<String>,
}

impl Node {
    /// Every author's chain as this node holds it, and the evidence of any fork or broken
    /// `prev` link among its records (see [`crate::chain`]). Reads ids and links only.
    pub async fn chains(&self) -> Result<ChainReport, NodeError> {
        let orgs = self.organisations().await?;
        self.chains_counted_by(&orgs).await
    }

    /// [`Node::chains`], witnesses counted by the organisations `orgs`.
    async fn chains_counted_by(&self, orgs: &Organisations) -> Result<ChainReport, NodeError> {
        let links = self.store.chain_links().await?;
        Ok(ChainReport::check_with(links, orgs))
    }

    /// Which keys belong to one organisation, from the membership's rotations (every key
    /// its own before a charter): witnesses are counted by organisation.
    pub async fn organisations(&self) -> Result<Organisations, NodeError> {
        Ok(self
            .folded()
            .await?
            .membership
            .as_ref()
            .map(Membership::organisations)
            .unwrap_or_default())
    }

    /// Signs a checkpoint of this organisation's own log (a `checkpoint/v1` record for the
    /// whole coalition): the RFC 6962 head over the ids of all its records so far, in seq
    /// order, private and sealed ones included, so that members can later hold it to what
    /// they were shown. Refuses if this node does not hold its own chain whole (a home
    /// restored from an old backup, say): a checkpoint must commit to the real history.
    pub async fn checkpoint(
        &self,
        identity: &crate::identity::Identity,
    ) -> Result<(crate::record::Record, Checkpoint), NodeError> {
        let me = identity.key();
        let mut own: Vec<Link> = self
            .store
            .chain_links()
            .await?
            .into_iter()
            .filter(|l| l.author == me)
            .collect();
        own.sort_by_key(|l| (l.seq, l.id));
        if own.is_empty() {
            return Err(NodeError::Refused(
                "this organisation has no records yet; a checkpoint commits to at least one".into(),
            ));
        }
        if let Some((expect, l)) = (1..).zip(&own).find(|(expect, l)| l.seq != *expect) {
            return Err(NodeError::Refused(format!(
                "this node does not hold its own chain whole (record {} has seq {}, expected {expect}); \
                 restore the latest backup before signing a checkpoint",
                l.id.short(),
                l.seq
            )));
        }
        let ids: Vec<RecordId> = own.iter().map(|l| l.id).collect();
        let to_everyone = |i: u64| own[i as usize].to_everyone;
        // Each checkpoint extends the one before, so that members can hold the two to one
        // history, and covers only the records since.
        let checkpoint = match own
            .iter()
            .rev()
            .find_map(|l| Some((l.seq, l.checkpoint.as_ref()?)))
        {
            Some((seq, before)) => Checkpoint::after(&ids, &to_everyone, seq, before.size),
            None => Checkpoint::of(&ids, &to_everyone),
        };
        let made = self
            .append(identity, 1, |_| crate::record::Draft {
                schema: CHECKPOINT_SCHEMA.into(),
                audience: crate::record::Audience::Coalition,
                supersedes: None,
                epoch: None,
                payload: checkpoint.payload(),
                created_at_ms: crate::now_ms(),
            })
            .await?;
        let record = made.into_iter().next().expect("append made one record");
        Ok((record, checkpoint))
    }

    /// Whether this organisation wrote records since its latest checkpoint, other than
    /// cosignatures of other members' checkpoints (which would otherwise call for a
    /// checkpoint, which calls for cosignatures, every interval for ever).
    pub async fn checkpoint_due(&self, me: &crate::identity::OrgKey) -> Result<bool, NodeError> {
        let own: Vec<Link> = self
            .store
            .chain_links()
            .await?
            .into_iter()
            .filter(|l| l.author == *me)
            .collect();
        let last = own
            .iter()
            .filter(|l| l.checkpoint.is_some())
            .map(|l| l.seq)
            .max()
            .unwrap_or(0);
        Ok(own
            .iter()
            .any(|l| l.seq > last && l.cosignature.is_none() && l.checkpoint.is_none()))
    }

    /// Witnesses other members' checkpoints: for each author's latest checkpoint that this
    /// organisation has not cosigned, signs a `cosignature/v1` record when the records held
    /// verify it (every record it commits to that every member receives is held, and with
    /// its cover and frontier they give its head, and it extends every checkpoint of the
    /// author before it) and no evidence against the author is held. Otherwise it says
    /// why not. Since every checkpoint the node cosigned is held and each later checkpoint
    /// must extend it, the node never cosigns two checkpoints of one author that are not
    /// one history.
    pub async fn witness(
        &self,
        identity: &crate::identity::Identity,
    ) -> Result<Vec<Witnessed>, NodeError> {
        let me = identity.key();
        let orgs = self.organisations().await?;
        let chains = self.chains_counted_by(&orgs).await?;
        let mut out = Vec::new();
        for chain in chains.authors.iter().filter(|c| c.author != me) {
            let Some(cp) = &chain.checkpoint else {
                continue;
            };
            // Cosigned already, with this key or one this organisation rotated away from.
            if cp.witnesses.iter().any(|w| orgs.of(w) == orgs.of(&me)) {
                continue;
            }
            let against: Vec<String> = chains
                .evidence
                .iter()
                .filter(|e| e.author() == chain.author)
                .map(ToString::to_string)
                .collect();
            let refused = if let Some(e) = against.first() {
                Some(format!("evidence against the author is held: {e}"))
            } else if let Some(p) = &cp.problem {
                Some(format!("it cannot be checked: {p}"))
            } else if !cp.missing.is_empty() {
                Some(format!(
                    "it commits to seq {}, which every member receives, and this node was never given them: withheld, or not synced yet",
                    crate::chain::seqs(&cp.missing)
                ))
            } else if cp.matches != Some(true) {
                Some("the records held do not give its head".to_string())
            } else {
                None
            };
            let signed = match &refused {
                Some(_) => None,
                None => {
                    let statement = self.cosign_statement(cp, chain.author).await?;
                    let made = self
                        .append(identity, 1, |_| crate::record::Draft {
                            schema: crate::merkle::COSIGNATURE_SCHEMA.into(),
                            audience: crate::record::Audience::Coalition,
                            supersedes: None,
                            epoch: None,
                            payload: statement.payload(),
                            created_at_ms: crate::now_ms(),
                        })
                        .await?;
                    made.into_iter().next().map(|r| r.id)
                }
            };
            out.push(Witnessed {
                author: chain.author,
                checkpoint: cp.record,
                seq: cp.seq,
                size: cp.size,
                cosignature: signed,
                refused,
            });
        }
        Ok(out)
    }

    /// What a cosignature of the checkpoint `cp` of `author` states: its size and head,
    /// read from the checkpoint record itself.
    async fn cosign_statement(
        &self,
        cp: &crate::chain::CheckpointSeen,
        author: crate::identity::OrgKey,
    ) -> Result<crate::merkle::Cosignature, NodeError> {
        let record = self.store.record(&cp.record).await?;
        let c = Checkpoint::of_record(&record.schema, &record.payload).ok_or_else(|| {
            NodeError::Refused(format!("record {} is no checkpoint", cp.record.short()))
        })?;
        Ok(crate::merkle::Cosignature {
            author,
            checkpoint: cp.record,
            size: c.size,
            head: c.head,
        })
    }

    /// Re-verifies every stored record, its author's membership, and the database file.
    pub async fn verify_store(&self) -> Result<VerifyReport, NodeError> {
        self.verify_store_observed(&|_, _| {}).await
    }

    /// As [`Node::verify_store`], telling `progress(verified, total)` as records are
    /// verified, for a progress bar.
    pub async fn verify_store_observed(
        &self,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<VerifyReport, NodeError> {
        let mut report = VerifyReport::default();
        // Records a sync took on a checkpoint have their signatures verified first, as
        // the running node does after each sync; one that fails is removed.
        self.check_unchecked().await?;
        for problem in self.store.integrity_check().await? {
            report.failures.push(Failure {
                index: 0,
                id: None,
                reason: format!("database integrity: {problem}"),
            });
        }
        let all = self.store.all_records().await?;
        let (done, total) = (std::sync::atomic::AtomicU64::new(0), all.len() as u64);
        let checked: Vec<(u64, Option<String>, Result<Prepared, String>)> =
            tokio::task::block_in_place(|| {
                all.par_iter()
                    .enumerate()
                    .map(|(i, (id, bytes))| {
                        let r = check::prepare(bytes)
                            .map_err(|e| e.to_string())
                            .and_then(|p| {
                                if p.record.id == *id {
                                    Ok(p)
                                } else {
                                    Err("stored bytes hash to a different id than the one stored"
                                        .into())
                                }
                            });
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                        (i as u64 + 1, Some(id.to_hex()), r)
                    })
                    .collect()
            });
        let chosen = self.chosen_charter().await?;
        judge_all(&mut report, checked, chosen);
        Ok(report)
    }
}
