//! Checking a report against a bundle, as an auditor does: the producer's signature;
//! the producer and the author of every counted record judged against the coalition's
//! membership (the charter fold of `coalition-core`, over the membership records the
//! bundle carries, or the charter the auditor names); and the aggregate recomputed from
//! the bundle's records with the same code, and for the same audience, the producer used.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::{io_err, ReportAudience, ReportError, SignedReport};
use crate::bundle;
use crate::charter::Membership;
use crate::identity::OrgKey;
use crate::query::{self, Measures};
use crate::record::{Record, RecordId};
use crate::store::{Store, StoreError, StoreKey};
use crate::verify::is_membership;

/// Records verified and inserted per step when loading a bundle.
const LOAD_BATCH: usize = 8192;

/// A group whose numbers differ between the report and the recomputation.
#[derive(Debug, Clone, Serialize)]
pub struct RowDiff {
    /// The group's keys.
    pub keys: Vec<Option<String>>,
    /// What the report says (`null`: group absent).
    pub reported: Option<Measures>,
    /// What the bundle gives (`null`: group absent).
    pub recomputed: Option<Measures>,
}

/// A counted record whose author was not a member under the epoch the record names.
#[derive(Debug, Clone, Serialize)]
pub struct Unentitled {
    /// Record id (hex).
    pub id: String,
    /// Why the membership does not accept its author.
    pub reason: String,
}

/// Outcome of checking a report against a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct ReportCheck {
    /// Producer key.
    pub producer: OrgKey,
    /// Producer name as claimed in the report.
    pub producer_name: String,
    /// Why the signature does not verify, if it does not.
    pub signature_error: Option<String>,
    /// The audience the report was checked for (the whole coalition for a format 1
    /// report, which does not state one).
    pub audience: ReportAudience,
    /// Whether the report states its audience (format 2 and later).
    pub audience_stated: bool,
    /// Coalition whose membership the producer and authors were judged against.
    pub coalition: Option<String>,
    /// Its charter id (hex).
    pub charter: Option<String>,
    /// Its current epoch (hex) as the bundle shows it.
    pub current_epoch: Option<String>,
    /// Why the producer is not accepted as a member, if it is not.
    pub producer_error: Option<String>,
    /// Records in the bundle that verified.
    pub bundle_records: u64,
    /// Records in the bundle that did not verify (ignored for the recomputation).
    pub bundle_invalid: u64,
    /// Totals the report states.
    pub reported_total: Measures,
    /// Totals recomputed from the bundle.
    pub recomputed_total: Measures,
    /// Counted records the bundle does not contain.
    pub missing: Vec<String>,
    /// Counted records the bundle holds that the report's audience may not see (a
    /// private finding, or one shared only with other members): a report must not count
    /// or name them.
    pub not_shareable: Vec<String>,
    /// Counted records the bundle contains but that do not count there (a later
    /// version or a retraction is in the bundle, or the record does not match).
    pub not_counted: Vec<String>,
    /// Records that count in the bundle but that the report did not count.
    pub extra: Vec<String>,
    /// Counted records (by the report or the recomputation) whose author was not a
    /// member under the epoch the record names.
    pub unentitled: Vec<Unentitled>,
    /// Groups whose numbers differ.
    pub rows_differ: Vec<RowDiff>,
    /// Whether the counted records come from a complete, witnessed history: per author,
    /// the latest checkpoint other members cosigned, and what the bundle lacks of what the
    /// author's checkpoints commit to.
    pub history: crate::chain::History,
}

impl ReportCheck {
    /// True when the signature verifies, the producer and every counted author are
    /// members, and the bundle reproduces the report exactly.
    pub fn ok(&self) -> bool {
        self.signature_error.is_none()
            && self.producer_error.is_none()
            && self.unentitled.is_empty()
            && self.missing.is_empty()
            && self.not_shareable.is_empty()
            && self.not_counted.is_empty()
            && self.extra.is_empty()
            && self.rows_differ.is_empty()
            && self.reported_total == self.recomputed_total
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "coalition-verify-report-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn open_bundle(
    path: &Path,
) -> Result<bundle::Reader<std::io::BufReader<std::fs::File>>, ReportError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    Ok(bundle::Reader::new(std::io::BufReader::with_capacity(
        1 << 20,
        file,
    ))?)
}

/// The membership the bundle's membership records define (`chosen`: the charter id the
/// auditor expects), or why there is none to judge by.
fn membership_of(
    path: &Path,
    chosen: Option<[u8; 32]>,
) -> Result<Result<Membership, String>, ReportError> {
    let records: Vec<Record> = open_bundle(path)?
        .filter_map(Result::ok)
        .filter(|e| is_membership(&e.bytes))
        .filter_map(|e| crate::check::prepare(&e.bytes).ok().map(|p| p.record))
        .collect();
    Ok(match Membership::fold(&records, chosen) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(match chosen {
            Some(c) => format!(
                "the bundle does not carry the expected charter {}",
                hex::encode(c)
            ),
            None => "the bundle carries no charter, so the producer and the authors cannot be \
                     judged against a coalition's membership (export the bundle from a \
                     member's node: it includes the charter and membership records)"
                .into(),
        }),
        Err(e) => Err(e.to_string()),
    })
}

/// Loads every valid record of a bundle into `store`, judging each against `membership`.
/// Returns the (valid, invalid) counts and why the authors of the records the membership
/// does not accept were refused, by record id.
async fn load_bundle(
    store: &Store,
    path: &Path,
    membership: Option<&Membership>,
) -> Result<(u64, u64, HashMap<RecordId, String>), ReportError> {
    let reader = open_bundle(path)?;
    let (mut valid, mut invalid) = (0u64, 0u64);
    let mut refused = HashMap::new();
    let mut entries = reader.peekable();
    loop {
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        for e in entries.by_ref().take(LOAD_BATCH) {
            match e {
                Ok(e) => batch.push(e),
                Err(_) => invalid += 1,
            }
        }
        if batch.is_empty() {
            break;
        }
        let prepared: Vec<_> = tokio::task::block_in_place(|| {
            batch
                .par_iter()
                .map(|e| crate::check::prepare(&e.bytes))
                .collect::<Vec<_>>()
        });
        let ok: Vec<_> = prepared
            .into_iter()
            .filter_map(|p| {
                if p.is_err() {
                    invalid += 1;
                }
                p.ok()
            })
            .collect();
        if let Some(m) = membership {
            for p in &ok {
                if let Err(reason) = m.judge(&p.record) {
                    refused.insert(p.record.id, reason);
                }
            }
        }
        valid += ok.len() as u64;
        store.insert(&ok).await?;
    }
    Ok((valid, invalid, refused))
}

/// Why `producer` may not sign a report made under `epoch` (hex), by `membership`.
///
/// The producer must have been a member under the epoch the report names, and must
/// still be one at the latest epoch the bundle shows: an organisation removed (or a key
/// rotated away) could otherwise date a report back to when it was a member.
fn judge_producer(
    membership: &Membership,
    producer: &OrgKey,
    epoch: Option<&str>,
) -> Option<String> {
    let Some(epoch_hex) = epoch else {
        return Some(
            "the report names no membership epoch (it was made on a node that belonged to no \
             coalition), so its producer cannot be judged a member"
                .into(),
        );
    };
    let Some(state) = hex::decode(epoch_hex)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|e| membership.state_at(&e))
    else {
        return Some(format!(
            "the report names membership epoch {} which is not in the history of coalition {:?} \
             in the bundle (a fork, or a bundle older than the report: export a newer one)",
            epoch_hex.get(..12).unwrap_or(epoch_hex),
            membership.name
        ));
    };
    let current = membership.current();
    if !state.is_member(producer) {
        Some(format!(
            "producer {producer} was not a member of {:?} under the epoch the report names \
             ({}): the report is not from a member",
            membership.name,
            &epoch_hex[..12]
        ))
    } else if !current.is_member(producer) {
        Some(format!(
            "producer {producer} is no longer a member of {:?} at its current epoch ({}; removed \
             or its key rotated away since the report's epoch {}): a removed organisation could \
             date a report back, so ask a current member to reproduce it",
            membership.name,
            &hex::encode(current.epoch)[..12],
            &epoch_hex[..12]
        ))
    } else {
        None
    }
}

/// Checks `report` against the records of the bundle at `bundle_path`, judging
/// membership by the charter with id `charter` when given (else the one the bundle
/// carries).
pub async fn verify(
    report: &SignedReport,
    bundle_path: &Path,
    charter: Option<[u8; 32]>,
) -> Result<ReportCheck, ReportError> {
    let signature_error = report.check_signature().err();
    let body = &report.report;
    let audience = body.audience.clone().unwrap_or(ReportAudience::Coalition);
    let membership = membership_of(bundle_path, charter)?;
    let producer_error = match &membership {
        Ok(m) => judge_producer(m, &body.producer, body.epoch.as_deref()),
        Err(why) => Some(why.clone()),
    };
    let tmp = TempDir::new().map_err(io_err(&std::env::temp_dir()))?;
    // A scratch store nobody opens again: a key of its own, forgotten afterwards.
    let store = Store::create(&tmp.0.join("verify.db"), &StoreKey::random()).await?;
    let (bundle_records, bundle_invalid, refused) =
        load_bundle(&store, bundle_path, membership.as_ref().ok()).await?;
    let reader = store.reader();
    let recomputed =
        query::publishable(&reader, &body.query, &body.group_by, audience.recipient()).await?;
    let counted: BTreeSet<String> = recomputed.counted.iter().map(|i| i.to_hex()).collect();
    let withheld: BTreeSet<String> = recomputed.withheld.iter().map(|i| i.to_hex()).collect();
    let reported: BTreeSet<String> = body.records.iter().cloned().collect();
    let (mut missing, mut not_shareable, mut not_counted) = (Vec::new(), Vec::new(), Vec::new());
    for id in reported.difference(&counted) {
        if withheld.contains(id) {
            not_shareable.push(id.clone());
            continue;
        }
        let held = match id.parse() {
            Ok(rid) => match store.record(&rid).await {
                Ok(_) => true,
                Err(StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            },
            Err(_) => false,
        };
        if held {
            not_counted.push(id.clone());
        } else {
            missing.push(id.clone());
        }
    }
    let extra = counted.difference(&reported).cloned().collect();
    let unentitled = counted
        .union(&reported)
        .filter_map(|hex_id| {
            let id: RecordId = hex_id.parse().ok()?;
            refused.get(&id).map(|reason| Unentitled {
                id: hex_id.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    let mine = query::rows_by_key(&recomputed.aggregate);
    let theirs: BTreeMap<_, _> = body
        .rows
        .iter()
        .map(|r| (r.keys.clone(), r.measures))
        .collect();
    let keys: BTreeSet<_> = mine.keys().chain(theirs.keys()).cloned().collect();
    let rows_differ = keys
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (theirs.get(&k).copied(), mine.get(&k).copied());
            (a != b).then_some(RowDiff {
                keys: k,
                reported: a,
                recomputed: b,
            })
        })
        .collect();
    // Records of authors the membership refuses (throwaway keys, say) count for nothing
    // here either: not as records, not as witnesses; witnesses count by organisation.
    let orgs = membership
        .as_ref()
        .map(|m| m.organisations())
        .unwrap_or_default();
    let chains = crate::chain::ChainReport::check_with(
        store
            .chain_links()
            .await?
            .into_iter()
            .filter(|l| !refused.contains_key(&l.id)),
        &orgs,
    );
    let places: HashMap<RecordId, (OrgKey, u64)> = chains_places(&store).await?;
    let history = chains.history(
        counted
            .iter()
            .filter_map(|h| places.get(&h.parse::<RecordId>().ok()?).copied()),
    );
    store.close().await;
    let m = membership.as_ref().ok();
    Ok(ReportCheck {
        producer: body.producer,
        producer_name: body.producer_name.clone(),
        signature_error,
        audience_stated: body.audience.is_some(),
        audience,
        coalition: m.map(|m| m.name.clone()),
        charter: m.map(|m| hex::encode(m.charter_id)),
        current_epoch: m.map(|m| hex::encode(m.current().epoch)),
        producer_error,
        bundle_records,
        bundle_invalid,
        reported_total: body.total,
        recomputed_total: recomputed.aggregate.total,
        missing,
        not_shareable,
        not_counted,
        extra,
        unentitled,
        rows_differ,
        history,
    })
}

/// Each held record's author and seq.
async fn chains_places(store: &Store) -> Result<HashMap<RecordId, (OrgKey, u64)>, StoreError> {
    Ok(store
        .chain_links()
        .await?
        .into_iter()
        .map(|l| (l.id, (l.author, l.seq)))
        .collect())
}
