//! Verifiable reports: an aggregate an organisation publishes, with everything an auditor
//! needs to check it against the signed records.
//!
//! A report names the query and grouping, the resulting rows, the id of every record it
//! counted, the membership epoch and the producing organisation, and carries that
//! organisation's ed25519 signature over `"coalition/v1/report\0"` followed by the
//! compact JSON of the `report` object. [`verify`] checks the signature, loads a bundle
//! into a throw-away store, recomputes the aggregate with the same code the node uses,
//! and lists which records are missing or differ.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signature;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::identity::{Identity, OrgKey};
use crate::now_ms;
use crate::query::{self, AggregateRow, Dimension, Measures, Query, QueryError};
use crate::store::{Reader, Store, StoreError};

/// Format name inside every report.
pub const REPORT_FORMAT: &str = "coalition-report/1";
/// Domain-separation prefix of report signatures.
pub const REPORT_SIGNING_PREFIX: &[u8] = b"coalition/v1/report\0";
/// Largest report file read.
pub const MAX_REPORT_BYTES: u64 = 256 << 20;
/// Records verified and inserted per step when loading a bundle.
const LOAD_BATCH: usize = 8192;

/// Errors producing or reading reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Query failure.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Store failure (the temporary store of a verification).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Unreadable bundle.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// Not a report file.
    #[error("{path} is not a Coalition report: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the producer signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Always [`REPORT_FORMAT`].
    pub format: String,
    /// Producing organisation's key.
    pub producer: OrgKey,
    /// Producing organisation's name, as configured on its node.
    pub producer_name: String,
    /// When the report was made, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Membership epoch the producer's node was in (`null` until the node has a charter).
    pub epoch: Option<String>,
    /// Filters.
    pub query: Query,
    /// Grouping.
    pub group_by: Vec<Dimension>,
    /// Grouped counts.
    pub rows: Vec<AggregateRow>,
    /// Measures over every counted finding.
    pub total: Measures,
    /// Hex ids of every finding record counted, sorted.
    pub records: Vec<String>,
}

/// A report file: the body and the producer's signature over it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    /// The signed content.
    pub report: ReportBody,
    /// Hex ed25519 signature by `report.producer`.
    pub signature: String,
}

fn signing_bytes(body: &ReportBody) -> Vec<u8> {
    let mut msg = REPORT_SIGNING_PREFIX.to_vec();
    msg.extend(serde_json::to_vec(body).expect("report bodies serialise"));
    msg
}

/// Computes and signs a report of `q` grouped by `group_by`, read through `reader`.
/// `producer_name` is the organisation's name as configured on its node; `epoch` the
/// membership epoch (hex) the node is in, `None` until it has a charter.
pub async fn produce(
    reader: &Reader,
    identity: &Identity,
    producer_name: &str,
    epoch: Option<String>,
    q: &Query,
    group_by: &[Dimension],
) -> Result<SignedReport, ReportError> {
    let agg = query::aggregate(reader, q, group_by).await?;
    let ids = query::matching_ids(reader, q).await?;
    let body = ReportBody {
        format: REPORT_FORMAT.into(),
        producer: identity.key(),
        producer_name: producer_name.to_string(),
        created_at_ms: now_ms(),
        epoch,
        query: q.clone(),
        group_by: agg.group_by,
        rows: agg.rows,
        total: agg.total,
        records: ids.iter().map(|i| i.to_hex()).collect(),
    };
    let signature = hex::encode(identity.sign(&signing_bytes(&body)));
    Ok(SignedReport {
        report: body,
        signature,
    })
}

/// Reads a report file.
pub fn read(path: &Path) -> Result<SignedReport, ReportError> {
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    let malformed = |reason: String| ReportError::Malformed {
        path: path.display().to_string(),
        reason,
    };
    if len > MAX_REPORT_BYTES {
        return Err(malformed(format!(
            "{len} bytes is larger than the {MAX_REPORT_BYTES}-byte limit"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let r: SignedReport = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    if r.report.format != REPORT_FORMAT {
        return Err(malformed(format!(
            "format {:?}, this version reads {REPORT_FORMAT:?}",
            r.report.format
        )));
    }
    Ok(r)
}

impl SignedReport {
    /// Checks the producer's signature (ed25519 `verify_strict`).
    pub fn check_signature(&self) -> Result<(), String> {
        let sig = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or("the signature is not 64 hex-encoded bytes")?;
        self.report
            .producer
            .verifying_key()
            .verify_strict(
                &signing_bytes(&self.report),
                &Signature::from_bytes(&sig),
            )
            .map_err(|_| {
                format!(
                    "the signature does not verify with producer key {}: the report was altered or not signed by that organisation",
                    self.report.producer
                )
            })
    }
}

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

/// Outcome of checking a report against a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct ReportCheck {
    /// Producer key.
    pub producer: OrgKey,
    /// Producer name as claimed in the report.
    pub producer_name: String,
    /// Why the signature does not verify, if it does not.
    pub signature_error: Option<String>,
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
    /// Counted records the bundle contains but that do not count there (a later
    /// version or a retraction is in the bundle, or the record does not match).
    pub not_counted: Vec<String>,
    /// Records that count in the bundle but that the report did not count.
    pub extra: Vec<String>,
    /// Groups whose numbers differ.
    pub rows_differ: Vec<RowDiff>,
}

impl ReportCheck {
    /// True when the signature verifies and the bundle reproduces the report exactly.
    pub fn ok(&self) -> bool {
        self.signature_error.is_none()
            && self.missing.is_empty()
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

/// Loads every valid record of a bundle into `store`. Returns (valid, invalid) counts.
async fn load_bundle(store: &Store, path: &Path) -> Result<(u64, u64), ReportError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let reader = bundle::Reader::new(std::io::BufReader::with_capacity(1 << 20, file))?;
    let (mut valid, mut invalid) = (0u64, 0u64);
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
        valid += ok.len() as u64;
        store.insert(&ok).await?;
    }
    Ok((valid, invalid))
}

/// Checks `report` against the records of the bundle at `bundle_path`.
pub async fn verify(report: &SignedReport, bundle_path: &Path) -> Result<ReportCheck, ReportError> {
    let signature_error = report.check_signature().err();
    let tmp = TempDir::new().map_err(io_err(&std::env::temp_dir()))?;
    let store = Store::create(&tmp.0.join("verify.db")).await?;
    let (bundle_records, bundle_invalid) = load_bundle(&store, bundle_path).await?;
    let body = &report.report;
    let reader = store.reader();
    let agg = query::aggregate(&reader, &body.query, &body.group_by).await?;
    let counted: BTreeSet<String> = query::matching_ids(&reader, &body.query)
        .await?
        .iter()
        .map(|i| i.to_hex())
        .collect();
    let reported: BTreeSet<String> = body.records.iter().cloned().collect();
    let mut missing = Vec::new();
    let mut not_counted = Vec::new();
    for id in reported.difference(&counted) {
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
    let mine = query::rows_by_key(&agg);
    let theirs: std::collections::BTreeMap<_, _> = body
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
    store.close().await;
    Ok(ReportCheck {
        producer: body.producer,
        producer_name: body.producer_name.clone(),
        signature_error,
        bundle_records,
        bundle_invalid,
        reported_total: body.total,
        recomputed_total: agg.total,
        missing,
        not_counted,
        extra,
        rows_differ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> ReportBody {
        ReportBody {
            format: REPORT_FORMAT.into(),
            producer: Identity::from_seed(&[3; 32]).key(),
            producer_name: "Test Org".into(),
            created_at_ms: 1,
            epoch: None,
            query: Query {
                country: vec!["GE".into()],
                ..Default::default()
            },
            group_by: vec![Dimension::Category, Dimension::Month],
            rows: vec![AggregateRow {
                keys: vec![Some("excessive_force".into()), None],
                measures: Measures {
                    findings: 2,
                    affected: 30,
                },
            }],
            total: Measures {
                findings: 2,
                affected: 30,
            },
            records: vec!["ab".repeat(32)],
        }
    }

    #[test]
    fn signed_reports_survive_a_json_round_trip_and_tampering_is_caught() {
        let id = Identity::from_seed(&[3; 32]);
        let b = body();
        let signed = SignedReport {
            signature: hex::encode(id.sign(&signing_bytes(&b))),
            report: b,
        };
        let text = serde_json::to_string_pretty(&signed).unwrap();
        let back: SignedReport = serde_json::from_str(&text).unwrap();
        back.check_signature().unwrap();
        let tampered = text.replace("\"affected\": 30", "\"affected\": 31");
        assert_ne!(tampered, text);
        let t: SignedReport = serde_json::from_str(&tampered).unwrap();
        assert!(t.check_signature().is_err());
        let extra = text.replacen("\"format\"", "\"note\": \"x\",\n\"format\"", 1);
        assert!(serde_json::from_str::<SignedReport>(&extra).is_err());
    }
}
