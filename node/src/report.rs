//! Verifiable reports: an aggregate an organisation publishes, with everything an auditor
//! needs to check it against the signed records.
//!
//! A report names the query and grouping, the audience it was made for, the resulting
//! rows, the id of every record it counted, the membership epoch and the producing
//! organisation, and carries that organisation's ed25519 signature over
//! `"coalition/v1/report\0"` followed by the compact JSON of the `report` object.
//!
//! A report is made to be published: it counts, and names by id, only the findings its
//! audience may see (the whole coalition unless made `--for` one member), as
//! [`query::publishable`] decides with the audience rules. [`verify`] (in `verify`)
//! checks the signature, judges the producer and every counted record's author against
//! the coalition's membership, loads a bundle into a throw-away store, recomputes the
//! aggregate with the same code, and lists which records are missing or differ.

use std::path::Path;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::identity::{Identity, OrgKey};
use crate::now_ms;
use crate::query::{self, AggregateRow, Dimension, Measures, Query, QueryError};
use crate::store::{Reader, StoreError};

mod verify;

pub use verify::{verify, ReportCheck, RowDiff, Unentitled};

/// Format name inside every report this version writes.
pub const REPORT_FORMAT: &str = "coalition-report/2";
/// Format of reports made before reports honoured audiences (read, and verified as
/// reports for the whole coalition).
pub const REPORT_FORMAT_V1: &str = "coalition-report/1";
/// Domain-separation prefix of report signatures.
pub const REPORT_SIGNING_PREFIX: &[u8] = b"coalition/v1/report\0";
/// Largest report file read.
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

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
    /// Who the report was made for: only findings this audience may see are counted.
    /// Absent only in format 1 reports, made before reports honoured audiences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<ReportAudience>,
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

/// Who a report is for, stated in the signed report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReportAudience {
    /// Anyone in (or outside) the coalition: only findings shared with the whole
    /// coalition count.
    Coalition,
    /// One member organisation (`report --for KEY`): findings shared with the whole
    /// coalition or with that member count.
    Member {
        /// The member's organisation key.
        key: OrgKey,
    },
}

impl ReportAudience {
    /// The audience for `recipient` (`None`: the whole coalition).
    pub fn for_recipient(recipient: Option<OrgKey>) -> Self {
        match recipient {
            None => Self::Coalition,
            Some(key) => Self::Member { key },
        }
    }

    /// The recipient the audience rules are asked about (`None`: the whole coalition).
    pub fn recipient(&self) -> Option<&OrgKey> {
        match self {
            Self::Coalition => None,
            Self::Member { key } => Some(key),
        }
    }

    /// Words for people: `the whole coalition` or `member KEY`.
    pub fn describe(&self) -> String {
        match self {
            Self::Coalition => "the whole coalition".into(),
            Self::Member { key } => format!("member {key}"),
        }
    }
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

impl ReportBody {
    /// Signs this body as `identity` (its key should be `producer`).
    pub fn sign(self, identity: &Identity) -> SignedReport {
        let signature = hex::encode(identity.sign(&signing_bytes(&self)));
        SignedReport {
            report: self,
            signature,
        }
    }
}

/// A signed report and how many matching findings it left out because its audience may
/// not see them (that number is for the producer and is not in the report).
#[derive(Debug, Clone)]
pub struct Produced {
    /// The report.
    pub report: SignedReport,
    /// Current findings matching the query that the report does not count.
    pub withheld: usize,
}

/// Computes and signs a report of `q` grouped by `group_by` for `audience`, read through
/// `reader`. `producer_name` is the organisation's name as configured on its node;
/// `epoch` the membership epoch (hex) the node is in, `None` until it has a charter.
pub async fn produce(
    reader: &Reader,
    identity: &Identity,
    producer_name: &str,
    epoch: Option<String>,
    q: &Query,
    group_by: &[Dimension],
    audience: ReportAudience,
) -> Result<Produced, ReportError> {
    let p = query::publishable(reader, q, group_by, audience.recipient()).await?;
    let body = ReportBody {
        format: REPORT_FORMAT.into(),
        producer: identity.key(),
        producer_name: producer_name.to_string(),
        created_at_ms: now_ms(),
        epoch,
        audience: Some(audience),
        query: q.clone(),
        group_by: p.aggregate.group_by,
        rows: p.aggregate.rows,
        total: p.aggregate.total,
        records: p.counted.iter().map(|i| i.to_hex()).collect(),
    };
    Ok(Produced {
        report: body.sign(identity),
        withheld: p.withheld.len(),
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
    match (r.report.format.as_str(), &r.report.audience) {
        (REPORT_FORMAT, Some(_)) | (REPORT_FORMAT_V1, None) => Ok(r),
        (REPORT_FORMAT, None) => Err(malformed(format!(
            "a {REPORT_FORMAT} report must state its audience"
        ))),
        (REPORT_FORMAT_V1, Some(_)) => Err(malformed(format!(
            "a {REPORT_FORMAT_V1} report has no audience field"
        ))),
        (other, _) => Err(malformed(format!(
            "format {other:?}, this version reads {REPORT_FORMAT:?} and {REPORT_FORMAT_V1:?}"
        ))),
    }
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
            audience: Some(ReportAudience::Coalition),
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
        // The audience is signed: a report for the coalition cannot be relabelled.
        let relabelled = text.replace(
            "\"kind\": \"coalition\"",
            &format!("\"kind\": \"member\", \"key\": \"{}\"", id.key()),
        );
        assert_ne!(relabelled, text);
        let r: SignedReport = serde_json::from_str(&relabelled).unwrap();
        assert!(r.check_signature().is_err());
    }

    #[test]
    fn reports_state_their_audience_and_format_1_reports_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::from_seed(&[3; 32]);
        let path = dir.path().join("r.json");
        let write = |r: &SignedReport| std::fs::write(&path, serde_json::to_vec(r).unwrap());
        // A format 2 report without an audience is refused.
        let mut b = body();
        b.audience = None;
        write(&b.clone().sign(&id)).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("must state its audience"), "{err}");
        // A format 1 report (signed before the field existed) reads and its signature
        // still verifies: an absent audience is not serialised.
        b.format = REPORT_FORMAT_V1.into();
        let v1 = b.sign(&id);
        assert!(!serde_json::to_string(&v1).unwrap().contains("audience"));
        write(&v1).unwrap();
        read(&path).unwrap().check_signature().unwrap();
        let member = ReportAudience::for_recipient(Some(id.key()));
        assert_eq!(member.recipient(), Some(&id.key()));
        assert_eq!(
            serde_json::to_value(&member).unwrap(),
            serde_json::json!({"kind": "member", "key": id.key().to_hex()})
        );
    }
}
