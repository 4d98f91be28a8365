//! Sync from checkpoints (docs/PROTOCOL.md §4.3, docs/THREAT_MODEL.md "Sync from
//! checkpoints"): which records an author's verified checkpoints vouch for, so that a
//! sync checks them without their signatures; and the signatures of the records stored
//! that way, verified after the sync, before they are served to anyone.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::ingest::on_check_pool;
use super::{Node, NodeError};
use crate::check;
use crate::identity::OrgKey;
use crate::merkle::{self, Checkpoint, CHECKPOINT_SCHEMA};
use crate::record::{self, RecordId};

/// Records vouched for by verified checkpoints: each id with the author and seq at which
/// the author committed to it.
pub type Vouched = HashMap<RecordId, (OrgKey, u64)>;

/// Records whose signatures one round verifies.
const ROUND: usize = 4096;

/// What verifying the signatures of records taken on a checkpoint came to.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureCheck {
    /// Records whose signatures verified: served like any other from now on.
    pub verified: u64,
    /// Records whose signatures did not verify: removed.
    pub removed: u64,
    /// Their ids (kept in the store's `refused_signatures`, so no sync takes them again).
    #[serde(skip)]
    pub removed_ids: Vec<RecordId>,
}

impl Node {
    /// The records `author`'s checkpoints vouch for, given the ids a peer says `author`
    /// has at each seq (`leaves`) and the checkpoint records it sent. Each checkpoint is
    /// verified in full (signature, schema, author, membership) before its head is
    /// recomputed from the leaves ([`merkle::vouched`]); one that fails, or whose head the
    /// leaves do not give, vouches for nothing, and its records are verified one by one
    /// as ever. The reasons go to the debug log.
    pub async fn vouched(
        &self,
        author: OrgKey,
        checkpoints: Vec<Vec<u8>>,
        leaves: BTreeMap<u64, RecordId>,
    ) -> Result<Vouched, NodeError> {
        let membership = self.membership().await?;
        let work = move || {
            let mut out = Vouched::new();
            for bytes in &checkpoints {
                let checked = check::prepare(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|p| match &membership {
                        Some(m) => m.judge(&p.record).map(|()| p),
                        None => Ok(p),
                    })
                    .and_then(|p| {
                        if p.record.author != author || p.record.schema != CHECKPOINT_SCHEMA {
                            return Err(format!(
                                "not a checkpoint of {} (a {} of {})",
                                author.short(),
                                p.record.schema,
                                p.record.author.short()
                            ));
                        }
                        Checkpoint::of_record(&p.record.schema, &p.record.payload)
                            .ok_or_else(|| "its payload is no checkpoint".to_string())
                    })
                    .and_then(|c| merkle::vouched(&c, &leaves).map_err(|e| e.to_string()));
                match checked {
                    Ok(records) => {
                        out.extend(records.into_iter().map(|(seq, id)| (id, (author, seq))))
                    }
                    Err(reason) => tracing::debug!(
                        author = %author.short(),
                        checkpoint = %RecordId::of(bytes).short(),
                        %reason,
                        "a checkpoint vouches for nothing: its records are verified one by one"
                    ),
                }
            }
            out
        };
        Ok(on_check_pool(work).await)
    }

    /// Verifies (`verify_strict`, on the verification threads) the signatures of every
    /// record a sync stored on its author's checkpoint word, in rounds of 4 096 until none
    /// is left. A record whose signature does not verify is removed with everything the
    /// store derived from it, and logged as an error: its author signed a checkpoint over
    /// bytes that are no valid record. One caller at a time; another waits for it and
    /// then finds nothing left.
    pub async fn check_unchecked(&self) -> Result<SignatureCheck, NodeError> {
        let _one = self.unchecked.lock().await;
        let mut done = SignatureCheck::default();
        loop {
            let round = self.store.unchecked(ROUND).await?;
            if round.is_empty() {
                return Ok(done);
            }
            let results: Vec<(RecordId, Result<(), record::RecordError>)> =
                on_check_pool(move || {
                    round
                        .par_iter()
                        .map(|(id, bytes)| (*id, record::verify(bytes).map(|_| ())))
                        .collect()
                })
                .await;
            let mut verified = Vec::new();
            let mut failed = Vec::new();
            for (id, r) in results {
                match r {
                    Ok(()) => verified.push(id),
                    Err(e) => {
                        tracing::error!(
                            record = %id.to_hex(),
                            error = %e,
                            "a record taken on its author's checkpoint does not verify: removed (the author signed a checkpoint over it)"
                        );
                        failed.push(id);
                    }
                }
            }
            let removed = self.store.settle_unchecked(&verified, &failed).await?;
            done.verified += verified.len() as u64;
            done.removed += removed.len() as u64;
            done.removed_ids.extend(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::identity::Identity;
    use crate::net::test_support::{draft, two_members, with_ids, TwoMembers};
    use crate::record::{Audience, Draft};

    /// `author`'s chain of `n` findings (the one at seq 3 corrects the one at seq 2; the
    /// one at seq `bad`, if any, with its signature altered after signing) and a
    /// checkpoint of all of them at seq `n + 1`: every record's bytes, in seq order.
    fn chain(author: &Identity, epoch: [u8; 32], n: u64, bad: Option<u64>) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut prev = None;
        for seq in 1..=n {
            let mut d = draft(epoch);
            if seq == 3 {
                d.supersedes = Some(RecordId::of(&out[1]));
            }
            let mut bytes = record::sign(author, seq, prev, d).bytes;
            if Some(seq) == bad {
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
            }
            prev = Some(RecordId::of(&bytes));
            out.push(bytes);
        }
        let ids: Vec<RecordId> = out.iter().map(|b| RecordId::of(b)).collect();
        let checkpoint = Draft {
            schema: CHECKPOINT_SCHEMA.into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: Some(epoch),
            payload: Checkpoint::of(&ids, &|_| true).payload(),
            created_at_ms: 0,
        };
        out.push(record::sign(author, n + 1, prev, checkpoint).bytes);
        out
    }

    fn leaves(records: &[Vec<u8>]) -> BTreeMap<u64, RecordId> {
        (1..).zip(records.iter().map(|b| RecordId::of(b))).collect()
    }

    async fn heads(node: &Node) -> Vec<RecordId> {
        let mut v: Vec<RecordId> = node
            .store()
            .findings(true)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        v.sort();
        v
    }

    async fn rollup_total(node: &Node) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(SUM(findings), 0) FROM finding_rollup")
            .fetch_one(node.store().pool())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_with_a_bad_signature_under_a_checkpoint_is_never_served_and_removed() {
        let TwoMembers {
            _dir,
            node,
            peer,
            epoch,
            ..
        } = two_members().await;
        // The author signs a checkpoint over a record whose signature does not verify
        // (the correction at seq 3).
        let records = chain(&peer, epoch, 10, Some(3));
        let ids: Vec<RecordId> = records.iter().map(|b| RecordId::of(b)).collect();
        let cp = records[10].clone();
        let vouched = node
            .vouched(peer.key(), vec![cp], leaves(&records))
            .await
            .unwrap();
        assert_eq!(
            vouched.len(),
            10,
            "the ten records, not the checkpoint itself"
        );
        assert_eq!(vouched[&ids[2]], (peer.key(), 3));
        let checked = node
            .check_from_peer(
                with_ids(&records.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                &HashSet::new(),
                &vouched,
            )
            .await
            .unwrap();
        assert_eq!(checked.len(), 11);
        assert_eq!(checked.unchecked_len(), 10);
        let report = node.store_from_peer(checked).await.unwrap();
        assert_eq!(report.stored, 11);
        let store = node.store();
        assert_eq!(store.count_unchecked().await.unwrap(), 10);
        // Read like any other meanwhile, served to no peer.
        assert_eq!(store.record(&ids[2]).await.unwrap().seq, 3);
        assert!(!heads(&node).await.contains(&ids[1]), "corrected by seq 3");
        let rows: Vec<(i64, RecordId)> = {
            let mut ix = crate::net::index::Index::default();
            ix.refresh(store).await.unwrap();
            ids.iter().map(|id| (ix.rowid(id).unwrap(), *id)).collect()
        };
        let served = store.bytes_at(&rows).await.unwrap();
        assert_eq!(
            served.len(),
            1,
            "only the checkpoint, verified in full: {:?}",
            served.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );

        let done = node.check_unchecked().await.unwrap();
        assert_eq!(
            done,
            SignatureCheck {
                verified: 9,
                removed: 1,
                removed_ids: vec![ids[2]],
            }
        );
        assert_eq!(store.count_unchecked().await.unwrap(), 0);
        assert!(matches!(
            store.record(&ids[2]).await,
            Err(crate::store::StoreError::NotFound(_))
        ));
        // As if it had never arrived: seq 2 is current again, counted once.
        let mut expected: Vec<RecordId> = ids[..10]
            .iter()
            .copied()
            .filter(|id| *id != ids[2])
            .collect();
        expected.sort();
        assert_eq!(heads(&node).await, expected);
        assert_eq!(rollup_total(&node).await, 9);
        assert_eq!(store.bytes_at(&rows).await.unwrap().len(), 10);
        // The store verifies in full, and a second check finds nothing to do.
        let report = node.verify_store().await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(
            node.check_unchecked().await.unwrap(),
            SignatureCheck::default()
        );

        // The lying peer sends the whole chain again at its next sync, vouched for by the
        // same checkpoint: the removed record is not taken again but refused as a record
        // whose signature fails (a violation by the sender: no honest node serves it),
        // and nothing else changes.
        let held: HashSet<RecordId> = ids.iter().copied().filter(|id| *id != ids[2]).collect();
        let again = node
            .check_from_peer(
                with_ids(&records.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                &held,
                &vouched,
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 0, "nothing to store");
        assert_eq!(again.unchecked_len(), 0);
        let report = node.store_from_peer(again).await.unwrap();
        assert_eq!(report.stored, 0);
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert_eq!(report.failures[0].id, Some(ids[2].to_hex()));
        assert!(report.failures[0].reason.contains("does not verify"));
        assert!(matches!(
            store.record(&ids[2]).await,
            Err(crate::store::StoreError::NotFound(_))
        ));
        assert_eq!(heads(&node).await, expected);
        // The refusal is in the store, not only in this process's memory.
        assert_eq!(
            store.refused_signatures(&ids).await.unwrap(),
            HashSet::from([ids[2]])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_leaves_and_checkpoints_vouch_for_nothing() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            epoch,
        } = two_members().await;
        let records = chain(&peer, epoch, 10, None);
        let cp = records[10].clone();
        let good = leaves(&records);
        let vouched = |cps: Vec<Vec<u8>>, leaves: BTreeMap<u64, RecordId>, author: OrgKey| {
            let node = &node;
            async move { node.vouched(author, cps, leaves).await.unwrap().len() }
        };
        assert_eq!(
            vouched(vec![cp.clone()], good.clone(), peer.key()).await,
            10
        );
        // A peer that lists another id at one seq, or leaves one out.
        let mut forged = good.clone();
        forged.insert(5, RecordId([7; 32]));
        assert_eq!(vouched(vec![cp.clone()], forged, peer.key()).await, 0);
        let mut short = good.clone();
        short.remove(&5);
        assert_eq!(vouched(vec![cp.clone()], short, peer.key()).await, 0);
        // A checkpoint whose signature was altered.
        let mut bad = cp.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(vouched(vec![bad], good.clone(), peer.key()).await, 0);
        // Another member's checkpoint over the same ids does not vouch for the author's.
        let mine = chain(&me, epoch, 10, None);
        assert_eq!(
            vouched(vec![mine[10].clone()], good.clone(), peer.key()).await,
            0
        );
        // A non-member's checkpoint, for its own records.
        let outsider = Identity::from_seed(&[9; 32]);
        let junk = chain(&outsider, epoch, 10, None);
        assert_eq!(
            vouched(vec![junk[10].clone()], leaves(&junk), outsider.key()).await,
            0
        );
        // A record the checkpoint vouches for presented at another seq is refused.
        let shifted: Vouched = [(RecordId::of(&records[0]), (peer.key(), 2))].into();
        let checked = node
            .check_from_peer(with_ids(&[&records[0]]), &HashSet::new(), &shifted)
            .await
            .unwrap();
        assert_eq!(checked.len(), 0);
    }
}
