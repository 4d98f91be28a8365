//! Offline verification: what an auditor runs on a bundle, with no store, no network and
//! no trust in the node that produced it. Every record's encoding, signature and schema
//! are checked ([`crate::check::prepare`]); every author's chain is checked ([`crate::chain`]:
//! forks, broken `prev` links and gaps are reported); when the records carry a charter,
//! every author is judged against the membership at the epoch its record names.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::bundle;
use crate::chain::{AuthorChain, ChainReport, Evidence, Link};
use crate::charter::{Membership, MEMBERSHIP_SCHEMAS};
use crate::check::{self, Prepared};
use crate::record::{self, Record, RecordId};

/// Why a bundle could not be read at all (damaged records inside it are failures in the
/// report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The bundle.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a bundle, or its header is damaged.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

/// A record that failed verification, with its position and reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// 1-based position in the bundle (or store row order).
    pub index: u64,
    /// Record id, when the bytes could be hashed.
    pub id: Option<String>,
    /// Why it failed.
    pub reason: String,
}

/// Outcome of verifying a bundle or the store.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Records examined.
    pub checked: u64,
    /// Records that verified.
    pub valid: u64,
    /// Records that did not, and why.
    pub failures: Vec<Failure>,
    /// Signed evidence that an author did not keep one history: two records with one
    /// seq (a fork), or a record whose `prev` names none of the author's records held at
    /// the seq before it.
    pub evidence: Vec<Evidence>,
    /// Each author's chain as held: records, highest seq and the seqs missing below it.
    pub chains: Vec<AuthorChain>,
    /// Records per author (hex key → count) among the valid ones.
    pub authors: std::collections::BTreeMap<String, u64>,
    /// Coalition whose membership the records were judged against, if a charter was present.
    pub coalition: Option<String>,
    /// Charter id (hex) of that coalition.
    pub charter: Option<String>,
    /// Current membership epoch (hex) of that coalition.
    pub epoch: Option<String>,
    /// Members that approved two different proposals for one epoch.
    pub equivocations: Vec<String>,
}

impl VerifyReport {
    /// True when every record verified.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Whether `bytes` name a membership schema (read before verification, to order them).
pub fn is_membership(bytes: &[u8]) -> bool {
    record::schema_of(bytes).is_some_and(|s| MEMBERSHIP_SCHEMAS.contains(&s.as_str()))
}

/// Verifies a bundle offline: every record's encoding, signature and schema, and, when
/// the bundle carries a charter, that every author was a member under the epoch its
/// record names and that every membership change had enough approvals.
pub fn verify_bundle(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_bundle_for(path, None)
}

/// As [`verify_bundle`], judging membership by the charter with id `charter` (hex as
/// `coalition charter show` prints it) instead of the one the bundle carries: an auditor
/// who knows the coalition's charter id is not fooled by a bundle with a charter of its own.
pub fn verify_bundle_for(
    path: &Path,
    charter: Option<[u8; 32]>,
) -> Result<VerifyReport, VerifyError> {
    verify_bundle_observed(path, charter, &|_, _| {})
}

/// As [`verify_bundle_for`], telling `progress(verified, total)` as records are verified
/// (`total` is the count the bundle declares), for a progress bar.
pub fn verify_bundle_observed(
    path: &Path,
    charter: Option<[u8; 32]>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport, VerifyError> {
    let file = std::fs::File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = bundle::Reader::new(std::io::BufReader::with_capacity(1 << 20, file))?;
    let total = reader.header().record_count;
    let done = std::sync::atomic::AtomicU64::new(0);
    let mut report = VerifyReport::default();
    let mut frames = Vec::new();
    let entries: Vec<_> = reader
        .filter_map(|e| match e {
            Ok(e) => Some(e),
            Err(f) => {
                frames.push(Failure {
                    index: f.index,
                    id: None,
                    reason: format!("at byte {}: {}", f.offset, f.reason),
                });
                None
            }
        })
        .collect();
    let checked: Vec<(u64, Option<String>, Result<Prepared, String>)> = entries
        .par_iter()
        .map(|e| {
            let checked = (
                e.index,
                Some(RecordId::of(&e.bytes).to_hex()),
                check::prepare(&e.bytes).map_err(|err| err.to_string()),
            );
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            checked
        })
        .collect();
    judge_all(&mut report, checked, charter);
    // Completeness: a bundle must hold every record an author's checkpoint says every
    // member receives (records outside that audience are accounted for by its cover).
    for c in &report.chains {
        let Some(cp) = c.checkpoint.as_ref().filter(|cp| !cp.missing.is_empty()) else {
            continue;
        };
        report.failures.push(Failure {
            index: 0,
            id: Some(cp.record.to_hex()),
            reason: format!(
                "incomplete: author {}'s checkpoint (its first {} records) commits to seq {}, \
                 which every member receives, and the bundle does not hold them",
                c.author,
                cp.size,
                crate::chain::seqs(&cp.missing)
            ),
        });
    }
    // A record lost to truncation or a broken length prefix counts as checked and failed.
    report.checked += frames.len() as u64;
    if let (Some(expected), None) = (charter, &report.coalition) {
        report.failures.push(Failure {
            index: 0,
            id: None,
            reason: format!(
                "the bundle does not carry the expected charter {}",
                hex::encode(expected)
            ),
        });
    }
    report.failures.extend(frames);
    report.failures.sort_by_key(|f| f.index);
    Ok(report)
}

/// Tallies checked records (position, id, outcome of [`check::prepare`]), then judges the valid ones against the membership their
/// own membership records define.
pub fn judge_all(
    report: &mut VerifyReport,
    checked: Vec<(u64, Option<String>, Result<Prepared, String>)>,
    chosen: Option<[u8; 32]>,
) {
    let mut valid: Vec<(u64, Record)> = Vec::new();
    for (index, id, r) in checked {
        report.checked += 1;
        match r {
            Ok(p) => valid.push((index, p.record)),
            Err(reason) => report.failures.push(Failure { index, id, reason }),
        }
    }
    let records: Vec<Record> = valid.iter().map(|(_, r)| r.clone()).collect();
    let membership = match Membership::fold(&records, chosen) {
        Ok(m) => m,
        Err(e) => {
            report.failures.push(Failure {
                index: 0,
                id: None,
                reason: e.to_string(),
            });
            None
        }
    };
    // Every correctly signed record is evidence of what its author signed, whether or not
    // the membership accepts it; witnesses are counted by organisation.
    let orgs = membership
        .as_ref()
        .map(Membership::organisations)
        .unwrap_or_default();
    let chains = ChainReport::check_with(valid.iter().map(|(_, r)| Link::from(r)), &orgs);
    report.evidence = chains.evidence;
    report.chains = chains.authors;
    if let Some(m) = &membership {
        report.coalition = Some(m.name.clone());
        report.charter = Some(hex::encode(m.charter_id));
        report.epoch = Some(hex::encode(m.current().epoch));
        report.equivocations = m
            .equivocations
            .iter()
            .map(|e| {
                format!(
                    "member {} supported {} different proposals for epoch {} (evidence: {})",
                    e.member,
                    e.proposals.len(),
                    &hex::encode(e.epoch)[..12],
                    e.evidence
                        .iter()
                        .map(|r| r.short())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
    }
    for (index, r) in valid {
        let verdict = membership.as_ref().map_or(Ok(()), |m| m.judge(&r));
        match verdict {
            Ok(()) => {
                report.valid += 1;
                *report.authors.entry(r.author.to_hex()).or_default() += 1;
            }
            Err(reason) => report.failures.push(Failure {
                index,
                id: Some(r.id.to_hex()),
                reason,
            }),
        }
    }
    report.failures.sort_by_key(|f| f.index);
}
