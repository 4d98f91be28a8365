//! The one check every record passes before any node stores it: encoding, signature
//! (`verify_strict` over the exact bytes received), canonical body, payload schema, and
//! the query columns extracted from a valid finding.
//!
//! Canonicality is judged here, at the door, and not in [`record::verify`]: a body padded
//! with unknown fields is signed and verifies, so it would cost every node that stores
//! and serves it up to 1 MiB; new records are refused, while records already stored (or
//! in bundles written before) stay readable by `record::verify`. Judging the author against the membership is the
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
    /// The body is not the canonical encoding of its fields (unknown fields used as
    /// padding, repeated or default-valued fields, fields out of order).
    #[error(
        "record body is not canonically encoded: {signed} bytes signed where its fields encode \
         to {canonical} (unknown, repeated or out-of-order protobuf fields); have the author's \
         software sign the canonical protobuf encoding of the body"
    )]
    NonCanonical {
        /// Body bytes as signed.
        signed: usize,
        /// Bytes of the canonical encoding of the same fields.
        canonical: usize,
    },
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

/// Verifies `bytes` (encoding, signature, canonical body, schema) and extracts its query
/// columns.
pub fn prepare(bytes: &[u8]) -> Result<Prepared, IngestError> {
    let record = record::verify(bytes)?;
    if let Some((signed, canonical)) = record::noncanonical_body(bytes) {
        return Err(IngestError::NonCanonical { signed, canonical });
    }
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

#[cfg(test)]
mod tests {
    use coalition_proto::v1::{RecordBody, SignedRecord};
    use prost::Message;

    use super::*;
    use crate::identity::Identity;
    use crate::record::{signing_message, Audience, Draft};

    /// A record signed by `id` over `body` exactly as given.
    fn signed(id: &Identity, body: Vec<u8>) -> Vec<u8> {
        let signature = id.sign(&signing_message(&body));
        SignedRecord {
            body: body.into(),
            signature: signature.to_vec().into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_body_padded_with_unknown_fields_is_refused_though_signed() {
        let id = Identity::from_seed(&[7; 32]);
        let good = record::sign(
            &id,
            1,
            None,
            Draft {
                schema: "grant/v1".into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: None,
                payload: br#"{"record":"00"}"#.to_vec(),
                created_at_ms: 1_700_000_000_000,
            },
        );
        let env = SignedRecord::decode(good.bytes.as_slice()).unwrap();
        // The same body again, signed as is: still canonical.
        assert!(record::noncanonical_body(&signed(&id, env.body.to_vec())).is_none());
        // Field 99, length-delimited, 512 KiB of padding: prost skips it when decoding.
        let mut padded = env.body.to_vec();
        prost::encoding::bytes::encode(99, &vec![0u8; 512 << 10], &mut padded);
        let padded = signed(&id, padded);
        assert!(
            record::verify(&padded).is_ok(),
            "the padded record verifies"
        );
        match prepare(&padded) {
            Err(e @ IngestError::NonCanonical { signed, canonical }) => {
                assert!(signed > canonical + (512 << 10), "{e}");
                assert!(e.to_string().contains("canonical"), "{e}");
            }
            other => panic!("padded record not refused as non-canonical: {other:?}"),
        }
        // A field written out at its default value (an empty `supersedes`) is not
        // canonical either.
        let mut body = RecordBody::decode(env.body.as_ref())
            .unwrap()
            .encode_to_vec();
        prost::encoding::bytes::encode(8, &Vec::<u8>::new(), &mut body);
        assert!(matches!(
            prepare(&signed(&id, body)),
            Err(IngestError::NonCanonical { .. })
        ));
    }
}
