//! Verifying the store itself: the database file, every stored record and its id, and
//! every author's membership. Bundles are verified by the core crate ([`crate::verify`]),
//! which needs no store.

use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Node, NodeError};
use crate::chain::{ChainReport, Link};
use crate::check::{self, Prepared};
use crate::merkle::{Checkpoint, CHECKPOINT_SCHEMA};
use crate::record::RecordId;
use crate::verify::{judge_all, Failure, VerifyReport};

impl Node {
    /// Every author's chain as this node holds it, and the evidence of any fork or broken
    /// `prev` link among its records (see [`crate::chain`]). Reads ids and links only.
    pub async fn chains(&self) -> Result<ChainReport, NodeError> {
        let links = self.store.chain_links().await?;
        Ok(ChainReport::check(links))
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
        let checkpoint = Checkpoint::of(&ids, &|i| own[i as usize].to_everyone);
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
