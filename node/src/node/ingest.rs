//! Ingest: records from elsewhere (a bundle, a peer) are verified in parallel off the
//! async threads, judged against the membership, and stored in batches, one transaction
//! each. Membership records come first, so everything after them can be judged.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::sealing::Keyring;
use super::vouching::Vouched;
use super::{io_err, Node, NodeError};
use crate::bundle;
use crate::charter::Membership;
use crate::check::{self, GovernanceRefusal, Prepared};
use crate::finding::GRANT_SCHEMA;
use crate::identity::OrgKey;
use crate::record::RecordId;
use crate::verify::{is_membership, Failure};

/// Records handled per parallel verify + insert step of an import.
const IMPORT_BATCH: usize = 8192;

/// Records in the first batch of an import (see `Node::import`).
const IMPORT_FIRST_BATCH: usize = 256;

/// Membership records (charters, proposals, approvals) stored per author and epoch they
/// name. An honest member signs one proposal or approval per epoch (the CLI refuses a
/// second, which would be equivocation); a few more keep equivocation evidence. Without
/// a cap one member could sign millions at its epoch, each entitled, and every node
/// would store and re-fold them all.
pub const GOVERNANCE_CAP: u32 = 8;

/// How a refusal for [`GOVERNANCE_CAP`] ends: such a record is not the sender's fault
/// (honest nodes may have kept different ones), so sync does not count it against them.
pub const GOVERNANCE_CAP_REASON: &str =
    "the most a node stores; not stored (an honest member signs one per epoch)";

/// Records from a peer that passed every check, waiting to be stored
/// ([`Node::check_from_peer`], then [`Node::store_from_peer`]).
#[derive(Debug, Default)]
pub struct CheckedRecords {
    ok: Vec<Prepared>,
    /// Those of `ok` taken on their author's checkpoint, signatures not yet verified.
    unchecked: HashSet<RecordId>,
    report: ImportReport,
}

impl CheckedRecords {
    /// How many records passed the checks.
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    /// Records stored so far: the membership records that the check stores at once.
    pub fn stored(&self) -> u64 {
        self.report.stored
    }

    /// How many of the records that passed were taken on their author's checkpoint.
    pub fn unchecked_len(&self) -> usize {
        self.ok
            .iter()
            .filter(|p| self.unchecked.contains(&p.record.id))
            .count()
    }

    /// Whether no record passed.
    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }

    /// Adds `other` (checked after `self`), so that both are stored in one transaction.
    /// Failure indexes of `other` are shifted past the records of `self`.
    pub fn append(&mut self, other: CheckedRecords) {
        let shift = self.report.read;
        self.ok.extend(other.ok);
        self.unchecked.extend(other.unchecked);
        self.report.read += other.report.read;
        self.report.stored += other.report.stored;
        self.report.duplicates += other.report.duplicates;
        self.report
            .failures
            .extend(other.report.failures.into_iter().map(|mut f| {
                f.index += shift;
                f
            }));
    }
}

/// Outcome of an import.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Records read from the bundle.
    pub read: u64,
    /// Newly stored.
    pub stored: u64,
    /// Already held.
    pub duplicates: u64,
    /// Refused, with reasons.
    pub failures: Vec<Failure>,
}

impl Node {
    /// Imports a bundle: verifies every record (in parallel), stores the valid ones, and
    /// reports each invalid one. Importing the same bundle twice stores nothing new.
    ///
    /// Membership records (charter, proposals, approvals) are read and stored first, so
    /// that every other record can be judged against the membership they define: once a
    /// coalition charter is present, a record whose author was not a member under the
    /// epoch it names is refused.
    pub async fn import(&self, path: &Path) -> Result<ImportReport, NodeError> {
        self.import_observed(path, &|_, _| {}).await
    }

    /// As [`Node::import`], telling `progress(read, total)` after each batch is checked
    /// (`total` is the count the bundle declares), for a progress bar.
    pub async fn import_observed(
        &self,
        path: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<ImportReport, NodeError> {
        let open = || -> Result<_, NodeError> {
            let file = std::fs::File::open(path).map_err(io_err(path))?;
            Ok(bundle::Reader::new(std::io::BufReader::with_capacity(
                1 << 20,
                file,
            ))?)
        };
        let mut report = ImportReport::default();
        let governance: Vec<bundle::Entry> = open()?
            .filter_map(Result::ok)
            .filter(|e| is_membership(&e.bytes))
            .collect();
        report.read += governance.len() as u64;
        self.ingest_governance(&governance, &mut report).await?;
        let membership = self.membership().await?;

        // Pipelined: while one batch is written (SQLite, one core), the next is verified
        // on the others, so the two costs overlap instead of adding up.
        let membership = membership.map(Arc::new);
        let mut entries = open()?;
        let mut writing: Option<Vec<Prepared>> = None;
        // The first batch is verified while the writer has nothing to do, so batches
        // start small and double up to IMPORT_BATCH: the writer starts within
        // milliseconds instead of waiting for a whole batch.
        let mut size = IMPORT_FIRST_BATCH;
        loop {
            let mut batch = Vec::with_capacity(size);
            for e in entries.by_ref().take(size) {
                match e {
                    Ok(e) if is_membership(&e.bytes) => {}
                    Ok(e) => batch.push(e),
                    Err(f) => report.failures.push(Failure {
                        index: f.index,
                        id: None,
                        reason: format!("at byte {}: {}", f.offset, f.reason),
                    }),
                }
            }
            if batch.is_empty() && writing.is_none() {
                break;
            }
            report.read += batch.len() as u64;
            progress(report.read, entries.header().record_count);
            size = (size * 2).min(IMPORT_BATCH);
            let checking = check_on_pool(batch, Vec::new(), membership.clone(), self.keyring());
            if let Some(ok) = writing.take() {
                self.store_checked(ok.into(), HashSet::new(), &mut report)
                    .await?;
            }
            let (ok, failures) = checking.await;
            report.failures.extend(failures);
            writing = (!ok.is_empty()).then_some(ok);
        }
        report.failures.sort_by_key(|f| f.index);
        Ok(report)
    }

    /// Stores records received from a peer: membership records first, then the rest
    /// judged against the membership they define. Returns what was stored and refused.
    pub async fn ingest_from_peer(&self, records: Vec<Vec<u8>>) -> Result<ImportReport, NodeError> {
        let records: Vec<(RecordId, Vec<u8>)> =
            records.into_iter().map(|b| (RecordId::of(&b), b)).collect();
        let ids: Vec<RecordId> = records.iter().map(|(id, _)| *id).collect();
        let held = self.store.held(&ids).await?;
        let checked = self
            .check_from_peer(records, &held, &Vouched::new())
            .await?;
        self.store_from_peer(checked).await
    }

    /// The first half of [`Node::ingest_from_peer`]: skips records in `held` (the caller
    /// knows them to be stored already), stores membership records at once (later
    /// records are judged by them), and verifies the rest against the membership, on the
    /// verification threads (one core fewer than the machine), so that a sync can store
    /// one page while it checks the next. `records` come with their ids
    /// ([`RecordId::of`] of the bytes). A record held but not listed in `held` is
    /// verified and then counted as a duplicate by the store.
    ///
    /// A record in `vouched` (its id, with the author and seq at which a verified
    /// checkpoint of that author commits to it: `crate::merkle::vouched`) is checked like
    /// any other but for its signature ([`check::prepare_vouched`]); it is stored
    /// unchecked, and its signature verified after the sync ([`Node::check_unchecked`]).
    /// Membership records are always verified in full. A record this node took on a
    /// checkpoint before and removed because its signature failed
    /// ([`crate::store::Store::refused_signatures`]) is refused at once, as a record
    /// whose signature fails.
    pub async fn check_from_peer(
        &self,
        records: Vec<(RecordId, Vec<u8>)>,
        held: &HashSet<RecordId>,
        vouched: &Vouched,
    ) -> Result<CheckedRecords, NodeError> {
        let read = records.len() as u64;
        // Records taken on a checkpoint before whose signatures then failed are not
        // taken again, however often they are sent; sending one is sending a record
        // whose signature fails (no honest node serves it: it verifies every signature
        // before it serves a record), so it is refused as such, without verifying again.
        let ids: Vec<RecordId> = records.iter().map(|(id, _)| *id).collect();
        let refused = self.store.refused_signatures(&ids).await?;
        let refusals: Vec<Failure> = records
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| refused.contains(id) && !held.contains(id))
            .map(|(i, (id, _))| Failure {
                index: i as u64 + 1,
                id: Some(id.to_hex()),
                reason: "its signature does not verify (found when it was taken on its \
                         author's checkpoint before; removed then, and not taken again)"
                    .into(),
            })
            .collect();
        let mut unchecked: HashSet<RecordId> = HashSet::new();
        let (governance, data): (Vec<_>, Vec<_>) = records
            .into_iter()
            .enumerate()
            .filter(|(_, (id, _))| !held.contains(id) && !refused.contains(id))
            .map(|(i, (id, bytes))| {
                let membership = is_membership(&bytes);
                // Membership records are verified in full, vouched for or not.
                let vouch = vouched.get(&id).copied().filter(|_| !membership);
                if vouch.is_some() {
                    unchecked.insert(id);
                }
                let entry = bundle::Entry {
                    index: i as u64 + 1,
                    offset: 0,
                    bytes,
                };
                (entry, vouch, membership)
            })
            .partition(|(_, _, membership)| *membership);
        let governance: Vec<bundle::Entry> = governance.into_iter().map(|(e, _, _)| e).collect();
        let (data, vouch): (Vec<bundle::Entry>, Vec<Option<(OrgKey, u64)>>) =
            data.into_iter().map(|(e, v, _)| (e, v)).unzip();
        let mut report = ImportReport {
            read,
            duplicates: read - (governance.len() + data.len() + refusals.len()) as u64,
            failures: refusals,
            ..Default::default()
        };
        self.ingest_governance(&governance, &mut report).await?;
        if data.is_empty() {
            return Ok(CheckedRecords {
                report,
                ..Default::default()
            });
        }
        let membership = self.membership().await?.map(Arc::new);
        let (ok, failures) = check_on_pool(data, vouch, membership, self.keyring()).await;
        report.failures.extend(failures);
        Ok(CheckedRecords {
            ok,
            unchecked,
            report,
        })
    }

    /// The second half of [`Node::ingest_from_peer`]: stores what passed, in one
    /// transaction (committed with `synchronous=FULL`, like every write).
    pub async fn store_from_peer(
        &self,
        checked: CheckedRecords,
    ) -> Result<ImportReport, NodeError> {
        let mut report = checked.report;
        self.store_checked(checked.ok.into(), checked.unchecked, &mut report)
            .await?;
        Ok(report)
    }

    /// Stores the governance records (charter, proposals, approvals) of `batch` whose
    /// authors were entitled to sign them ([`check::governance_entitled`]), at most
    /// [`GOVERNANCE_CAP`] per author and epoch, and refuses the rest: a record from a
    /// throwaway key is never stored, so it is neither passed on nor re-verified by
    /// every later fold. A node with no charter yet also stores a charter that does not
    /// list it when the batch's proposals and approvals admit it
    /// ([`check::charters_admitting`]: a member admitted or rotated in after the
    /// founding joins by importing a bundle made after its admission). Records naming an epoch this node reaches only through other
    /// records of the batch are judged after those: rounds of judge, store, refold, until
    /// a round stores nothing.
    async fn ingest_governance(
        &self,
        batch: &[bundle::Entry],
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<RecordId> = batch.iter().map(|e| RecordId::of(&e.bytes)).collect();
        let held = self.store.held(&ids).await?;
        let fresh: Vec<&bundle::Entry> = batch
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !held.contains(id))
            .map(|(e, _)| e)
            .collect();
        report.duplicates += (batch.len() - fresh.len()) as u64;
        let checked: Vec<(u64, Result<Prepared, Failure>)> = tokio::task::block_in_place(|| {
            fresh
                .par_iter()
                .map(|e| {
                    let r = check::prepare(&e.bytes).map_err(|err| Failure {
                        index: e.index,
                        id: Some(RecordId::of(&e.bytes).to_hex()),
                        reason: err.to_string(),
                    });
                    (e.index, r)
                })
                .collect()
        });
        let mut waiting = Vec::with_capacity(checked.len());
        for (index, r) in checked {
            match r {
                Ok(p) => waiting.push((index, p)),
                Err(f) => report.failures.push(f),
            }
        }
        // The same records give the same outcome whatever order they came in.
        waiting.sort_by_key(|(_, p)| p.record.id);
        let me = self.key();
        while !waiting.is_empty() {
            let folded = self.folded().await?;
            let mut counts = folded.per_author_epoch.clone();
            let mut accept = Vec::new();
            let mut later = Vec::new();
            // Before any charter: one that admitted this organisation after the founding.
            let admitting = match folded.membership {
                None => check::charters_admitting(
                    &waiting.iter().map(|(_, p)| &p.record).collect::<Vec<_>>(),
                    &me,
                ),
                Some(_) => Vec::new(),
            };
            for (index, p) in waiting {
                let failure = |reason: String| Failure {
                    index,
                    id: Some(p.record.id.to_hex()),
                    reason,
                };
                let verdict =
                    match check::governance_entitled(&p.record, folded.membership.as_ref(), &me) {
                        Err(GovernanceRefusal::NotEntitled(_))
                            if admitting.contains(&p.record.id) =>
                        {
                            Ok(())
                        }
                        v => v,
                    };
                match verdict {
                    Ok(()) => {
                        let n = counts.entry((p.record.author, p.record.epoch)).or_default();
                        if *n >= GOVERNANCE_CAP {
                            report.failures.push(failure(format!(
                                "author {} already has {GOVERNANCE_CAP} membership records for this epoch, {GOVERNANCE_CAP_REASON}",
                                p.record.author.short()
                            )));
                        } else {
                            *n += 1;
                            accept.push(p);
                        }
                    }
                    Err(GovernanceRefusal::UnknownEpoch(reason)) => later.push((index, p, reason)),
                    Err(e) => report.failures.push(failure(e.to_string())),
                }
            }
            if accept.is_empty() {
                report
                    .failures
                    .extend(later.into_iter().map(|(index, p, reason)| Failure {
                        index,
                        id: Some(p.record.id.to_hex()),
                        reason,
                    }));
                break;
            }
            self.store_checked(accept.into(), HashSet::new(), report)
                .await?;
            waiting = later.into_iter().map(|(i, p, _)| (i, p)).collect();
        }
        Ok(())
    }

    /// Stores checked records in one transaction and counts what was new; those in
    /// `unchecked` are marked as taken on their author's checkpoint.
    async fn store_checked(
        &self,
        ok: Arc<[Prepared]>,
        unchecked: HashSet<RecordId>,
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        let new = self.store.insert_vouched(ok.clone(), unchecked).await?;
        report.stored += new.len() as u64;
        report.duplicates += (ok.len() - new.len()) as u64;
        // Sealed records held unread that a grant in this batch brings this organisation
        // a key for. (A grant has a higher seq than the record it widens, so a sync brings
        // the record first; one that arrived after its grant is opened when the node
        // starts, `Node::open_pending`.) Only grants are looked at: a relay stores
        // thousands of sealed records for others per batch, and a query for each would
        // cost every relay for a case this rare.
        if self.keyring().is_some() {
            let waiting: Vec<RecordId> = ok
                .iter()
                .filter(|p| p.record.schema == GRANT_SCHEMA)
                .filter_map(|p| p.subject)
                .collect();
            if !waiting.is_empty() {
                self.open_pending(Some(&waiting)).await?;
            }
        }
        Ok(())
    }
}

/// Threads that verify the next batch while SQLite writes the previous one: one core
/// fewer than the machine has (at least one), so the writer keeps a core to itself.
fn check_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("coalition-verify-{i}"))
            // Below the store's writer, whichever thread starts the pool (`priority`).
            .start_handler(|_| crate::priority::lower_this_thread())
            .build()
            .expect("verification threads start")
    })
}

/// Starts [`check_batch`] on the verification threads at once (not when awaited, so the
/// caller can write the previous batch meanwhile); the result when awaited.
fn check_on_pool(
    batch: Vec<bundle::Entry>,
    vouch: Vec<Option<(OrgKey, u64)>>,
    membership: Option<Arc<Membership>>,
    keys: Option<Arc<Keyring>>,
) -> impl Future<Output = (Vec<Prepared>, Vec<Failure>)> {
    on_check_pool(move || check_batch(&batch, &vouch, membership.as_deref(), keys.as_deref()))
}

/// Starts `work` on the verification threads at once (not when awaited); its result when
/// awaited. A panic in verification is a bug: it is surfaced as one, not as a bad record.
pub(super) fn on_check_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = T> {
    let running = tokio::task::spawn_blocking(move || check_pool().install(work));
    async move {
        running
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Verifies every entry (signature, schema) in parallel on every core and judges its
/// author against `membership` (if given): the records that pass, and why the others fail.
/// An entry whose `vouch` (same position; missing means none) names the author and seq
/// a verified checkpoint commits to it at is checked without its signature
/// ([`check::prepare_vouched`]). With `keys`, a sealed record that passed is opened if it
/// is sealed for this organisation ([`Keyring::open`]).
fn check_batch(
    batch: &[bundle::Entry],
    vouch: &[Option<(OrgKey, u64)>],
    membership: Option<&Membership>,
    keys: Option<&Keyring>,
) -> (Vec<Prepared>, Vec<Failure>) {
    let results: Vec<(u64, &[u8], Result<Prepared, String>)> = batch
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            let prepared = match vouch.get(i).copied().flatten() {
                Some((author, seq)) => check::prepare_vouched(&e.bytes, &author, seq),
                None => check::prepare(&e.bytes),
            };
            let r = prepared
                .map_err(|err| err.to_string())
                .and_then(|p| match membership {
                    Some(m) => m.judge(&p.record).map(|()| p),
                    None => Ok(p),
                })
                .map(|p| match keys {
                    Some(k) => k.open(p),
                    None => p,
                });
            (e.index, e.bytes.as_slice(), r)
        })
        .collect();
    let mut ok = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (index, bytes, r) in results {
        match r {
            Ok(p) => ok.push(p),
            Err(reason) => failures.push(Failure {
                index,
                id: Some(RecordId::of(bytes).to_hex()),
                reason,
            }),
        }
    }
    (ok, failures)
}

#[cfg(test)]
mod governance_tests {
    use serde_json::json;

    use super::*;
    use crate::charter::{APPROVAL_SCHEMA, PROPOSAL_SCHEMA};
    use crate::config::Home;
    use crate::finding::to_payload;
    use crate::identity::Identity;
    use crate::net::test_support::{two_members, TwoMembers};
    use crate::record::{self, Audience, Draft, Record};

    fn signed(
        who: &Identity,
        seq: u64,
        schema: &str,
        epoch: [u8; 32],
        payload: serde_json::Value,
    ) -> Record {
        record::sign(
            who,
            seq,
            (seq > 1).then_some(RecordId([seq as u8; 32])),
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: Some(epoch),
                payload: to_payload(&payload),
                created_at_ms: 1,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn approvals_from_throwaway_keys_are_refused_and_a_members_are_capped() {
        let TwoMembers {
            _dir,
            node,
            peer,
            epoch,
            ..
        } = two_members().await;
        let proposal = json!({ "proposal": "ab".repeat(32) });
        let junk: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                signed(
                    &Identity::from_seed(&seed),
                    1,
                    APPROVAL_SCHEMA,
                    epoch,
                    proposal.clone(),
                )
                .bytes
            })
            .collect();
        let before = node.store().count().await.unwrap();
        let report = node.ingest_from_peer(junk).await.unwrap();
        assert_eq!(
            report.stored, 0,
            "no approval from a throwaway key is stored"
        );
        assert_eq!(report.failures.len(), 200);
        for f in &report.failures {
            assert!(f.reason.contains("was not a member"), "{}", f.reason);
            // Counted against the sender at sync (net::error::names_unknown_epoch).
            assert!(!f.reason.contains("not in this coalition's history"));
            assert!(!f.reason.contains(GOVERNANCE_CAP_REASON));
        }
        assert_eq!(node.store().count().await.unwrap(), before);

        // A member may sign many; a node keeps GOVERNANCE_CAP per epoch.
        let many: Vec<Vec<u8>> = (1..=GOVERNANCE_CAP as u64 + 3)
            .map(|seq| signed(&peer, seq, APPROVAL_SCHEMA, epoch, proposal.clone()).bytes)
            .collect();
        let report = node.ingest_from_peer(many).await.unwrap();
        assert_eq!(report.stored, u64::from(GOVERNANCE_CAP), "{report:?}");
        assert_eq!(report.failures.len(), 3);
        assert!(report
            .failures
            .iter()
            .all(|f| f.reason.contains(GOVERNANCE_CAP_REASON)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fold_is_cached_until_a_membership_record_is_stored() {
        let TwoMembers {
            _dir: dir,
            node,
            me,
            peer,
            epoch,
        } = two_members().await;
        let folds = node.membership_folds();
        for _ in 0..5 {
            node.membership().await.unwrap().unwrap();
        }
        assert_eq!(node.membership_folds(), folds, "nothing stored: no refold");
        let add = json!({ "change": { "kind": "add", "member": {
            "organisation": "Org C", "country": "GE", "key": Identity::from_seed(&[5; 32]).key() } } });
        node.propose(
            &me,
            serde_json::from_value(add["change"].clone()).unwrap(),
            None,
        )
        .await
        .unwrap();
        let m = node.membership().await.unwrap().unwrap();
        assert_eq!(m.pending.len(), 1);
        assert!(node.membership_folds() > folds, "a stored proposal refolds");
        let folds = node.membership_folds();
        // A record stored by another process (the CLI) is seen too: a second handle.
        let other = Node::open(Home::new(Some(dir.path().join("h"))), &me)
            .await
            .unwrap();
        let approval = signed(
            &peer,
            1,
            APPROVAL_SCHEMA,
            epoch,
            json!({ "proposal": m.pending[0].proposal.to_hex() }),
        );
        other.ingest_from_peer(vec![approval.bytes]).await.unwrap();
        let m = node.membership().await.unwrap().unwrap();
        assert_eq!(m.applied.len(), 1, "the change took effect");
        assert_eq!(node.membership_folds(), folds + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_a_later_epoch_in_one_batch_are_judged_after_the_change() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            epoch,
            ..
        } = two_members().await;
        let c = Identity::from_seed(&[5; 32]);
        let change = json!({ "kind": "add", "member": {
            "organisation": "Org C", "country": "GE", "key": c.key() } });
        let p = signed(
            &peer,
            1,
            PROPOSAL_SCHEMA,
            epoch,
            json!({ "change": change }),
        );
        let a = signed(
            &me,
            1,
            APPROVAL_SCHEMA,
            epoch,
            json!({ "proposal": p.id.to_hex() }),
        );
        let m = Membership::fold(
            &[
                node.store()
                    .records_with_schemas(&crate::charter::MEMBERSHIP_SCHEMAS)
                    .await
                    .unwrap(),
                vec![p.clone(), a.clone()],
            ]
            .concat(),
            None,
        )
        .unwrap()
        .unwrap();
        let next = m.current().epoch;
        assert_ne!(next, epoch);
        // Org C, a member only from `next` on, approves something at `next`.
        let later = signed(
            &c,
            1,
            APPROVAL_SCHEMA,
            next,
            json!({ "proposal": "cd".repeat(32) }),
        );
        let report = node
            .ingest_from_peer(vec![later.bytes.clone(), a.bytes.clone(), p.bytes.clone()])
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.stored, 3);
    }
}
