//! The one check every record passes before any node stores it: encoding, signature
//! (`verify_strict` over the exact bytes received), payload schema, and the query columns
//! extracted from a valid finding. Judging the author against the membership is the
//! caller's second step ([`crate::charter::Membership::judge`]), because it needs the
//! membership the caller holds.

use crate::finding::{subject_of, FindingIndex, FINDING_SCHEMA};
use crate::record::{self, Record, RecordError, RecordId};
use crate::schema::{schemas, SchemaError};

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Bad encoding or signature.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Payload does not match its schema.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// A record checked and ready to insert: verified, schema-valid, columns extracted.
/// Checking is CPU-bound and independent per record, so callers run it in parallel.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The verified record.
    pub record: Record,
    /// Record it refers to (annex → finding, grant → record).
    pub subject: Option<RecordId>,
    /// Query columns, for findings.
    pub finding: Option<FindingIndex>,
}

/// Verifies `bytes` (encoding, signature, schema) and extracts its query columns.
pub fn prepare(bytes: &[u8]) -> Result<Prepared, IngestError> {
    let record = record::verify(bytes)?;
    prepare_verified(record)
}

/// As [`prepare`], for a record whose signature was already checked (own new records).
pub fn prepare_verified(record: Record) -> Result<Prepared, IngestError> {
    let value = schemas().check_payload(&record.schema, &record.payload, &record.id.to_hex())?;
    let finding = (record.schema == FINDING_SCHEMA).then(|| FindingIndex::extract(&value));
    Ok(Prepared {
        subject: subject_of(&record.schema, &value),
        record,
        finding,
    })
}
