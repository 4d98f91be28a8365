//! Ingest: records from elsewhere (a bundle, a peer) are verified in parallel off the
//! async threads, judged against the membership, and stored in batches, one transaction
//! each. Membership records come first, so everything after them can be judged.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::{io_err, Node, NodeError};
use crate::bundle;
use crate::charter::Membership;
use crate::check::{self, Prepared};
use crate::record::RecordId;
use crate::verify::{is_membership, Failure};

/// Records handled per parallel verify + insert step of an import.
const IMPORT_BATCH: usize = 8192;

/// Records in the first batch of an import (see `Node::import`).
const IMPORT_FIRST_BATCH: usize = 256;

/// Records from a peer that passed every check, waiting to be stored
/// ([`Node::check_from_peer`], then [`Node::store_from_peer`]).
#[derive(Debug, Default)]
pub struct CheckedRecords {
    ok: Vec<Prepared>,
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

    /// Whether no record passed.
    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }

    /// Adds `other` (checked after `self`), so that both are stored in one transaction.
    /// Failure indexes of `other` are shifted past the records of `self`.
    pub fn append(&mut self, other: CheckedRecords) {
        let shift = self.report.read;
        self.ok.extend(other.ok);
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
        self.ingest(&governance, None, &mut report).await?;
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
            size = (size * 2).min(IMPORT_BATCH);
            let checking = check_on_pool(batch, membership.clone());
            if let Some(ok) = writing.take() {
                self.store_checked(&ok, &mut report).await?;
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
        let checked = self.check_from_peer(records, &held).await?;
        self.store_from_peer(checked).await
    }

    /// The first half of [`Node::ingest_from_peer`]: skips records in `held` (the caller
    /// knows them to be stored already), stores membership records at once (later
    /// records are judged by them), and verifies the rest against the membership, on the
    /// verification threads (one core fewer than the machine), so that a sync can store
    /// one page while it checks the next. `records` come with their ids
    /// ([`RecordId::of`] of the bytes). A record held but not listed in `held` is
    /// verified and then counted as a duplicate by the store.
    pub async fn check_from_peer(
        &self,
        records: Vec<(RecordId, Vec<u8>)>,
        held: &HashSet<RecordId>,
    ) -> Result<CheckedRecords, NodeError> {
        let read = records.len() as u64;
        let (governance, data): (Vec<_>, Vec<_>) = records
            .into_iter()
            .enumerate()
            .filter(|(_, (id, _))| !held.contains(id))
            .map(|(i, (_, bytes))| bundle::Entry {
                index: i as u64 + 1,
                offset: 0,
                bytes,
            })
            .partition(|e| is_membership(&e.bytes));
        let mut report = ImportReport {
            read,
            duplicates: read - (governance.len() + data.len()) as u64,
            ..Default::default()
        };
        self.ingest(&governance, None, &mut report).await?;
        if data.is_empty() {
            return Ok(CheckedRecords {
                ok: Vec::new(),
                report,
            });
        }
        let membership = self.membership().await?.map(Arc::new);
        let (ok, failures) = check_on_pool(data, membership).await;
        report.failures.extend(failures);
        Ok(CheckedRecords { ok, report })
    }

    /// The second half of [`Node::ingest_from_peer`]: stores what passed, in one
    /// transaction (committed with `synchronous=FULL`, like every write).
    pub async fn store_from_peer(
        &self,
        checked: CheckedRecords,
    ) -> Result<ImportReport, NodeError> {
        let mut report = checked.report;
        self.store_checked(&checked.ok, &mut report).await?;
        Ok(report)
    }

    /// Verifies `batch` in parallel, judges authors against `membership` (if any), and
    /// stores what passes in one transaction.
    async fn ingest(
        &self,
        batch: &[bundle::Entry],
        membership: Option<&Membership>,
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (ok, failures) = tokio::task::block_in_place(|| check_batch(batch, membership));
        report.failures.extend(failures);
        self.store_checked(&ok, report).await
    }

    /// Stores checked records in one transaction and counts what was new.
    async fn store_checked(
        &self,
        ok: &[Prepared],
        report: &mut ImportReport,
    ) -> Result<(), NodeError> {
        let new = self.store.insert(ok).await?;
        report.stored += new.len() as u64;
        report.duplicates += (ok.len() - new.len()) as u64;
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
            .build()
            .expect("verification threads start")
    })
}

/// Starts [`check_batch`] on the verification threads at once (not when awaited, so the
/// caller can write the previous batch meanwhile); the result when awaited.
fn check_on_pool(
    batch: Vec<bundle::Entry>,
    membership: Option<Arc<Membership>>,
) -> impl Future<Output = (Vec<Prepared>, Vec<Failure>)> {
    let checking = tokio::task::spawn_blocking(move || {
        check_pool().install(|| check_batch(&batch, membership.as_deref()))
    });
    // A panic in verification is a bug: surface it as one, not as a bad record.
    async move {
        checking
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Verifies every entry (signature, schema) in parallel on every core and judges its
/// author against `membership` (if given): the records that pass, and why the others fail.
fn check_batch(
    batch: &[bundle::Entry],
    membership: Option<&Membership>,
) -> (Vec<Prepared>, Vec<Failure>) {
    let results: Vec<(u64, &[u8], Result<Prepared, String>)> = batch
        .par_iter()
        .map(|e| {
            let r = check::prepare(&e.bytes)
                .map_err(|err| err.to_string())
                .and_then(|p| match membership {
                    Some(m) => m.judge(&p.record).map(|()| p),
                    None => Ok(p),
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
