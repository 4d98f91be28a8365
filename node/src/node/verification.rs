//! Verifying the store itself: the database file, every stored record and its id, and
//! every author's membership. Bundles are verified by the core crate ([`crate::verify`]),
//! which needs no store.

use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Node, NodeError};
use crate::chain::ChainReport;
use crate::check::{self, Prepared};
use crate::verify::{judge_all, Failure, VerifyReport};

impl Node {
    /// Every author's chain as this node holds it, and the evidence of any fork or broken
    /// `prev` link among its records (see [`crate::chain`]). Reads ids and links only.
    pub async fn chains(&self) -> Result<ChainReport, NodeError> {
        let links = self.store.chain_links().await?;
        Ok(ChainReport::check(links))
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
