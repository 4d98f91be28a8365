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

use crate::finding::{subject_of, FindingIndex, FINDING_SCHEMA, GRANT_SCHEMA};
use crate::identity::OrgKey;
use crate::merkle::{Checkpoint, Cosignature, CHECKPOINT_SCHEMA, COSIGNATURE_SCHEMA};
use crate::record::{self, Audience, Record, RecordError, RecordId};
use crate::schema::{schemas, SchemaError};
use crate::sealed::{self, SealError, ENCRYPTION_KEY_SCHEMA, SEALED_SCHEMA};

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
    /// A sealed envelope (or a grant's wrapped keys) is malformed.
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// A sealed record's audience breaks the rule: audience MEMBERS, and a wrapped key
    /// only for the author or a listed member.
    #[error("sealed record refused: {0}")]
    SealedAudience(String),
    /// An `encryption-key/v1` record that cannot serve as a key: not for the whole
    /// coalition, or a key nothing can be encrypted to.
    #[error("encryption-key record refused: {0}")]
    EncryptionKey(String),
    /// A `checkpoint/v1` record that cannot be one: not for the whole coalition, or
    /// covering records at or after its own seq.
    #[error("checkpoint record refused: {0}")]
    Checkpoint(String),
    /// A `cosignature/v1` record that cannot be one: not for the whole coalition, or by
    /// the author of the checkpoint it names.
    #[error("cosignature record refused: {0}")]
    Cosignature(String),
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
    /// For a `sealed/v1` record this node opened: what it says. The store keeps the
    /// sealed bytes as they are and this beside them ([`prepare_opened`]).
    pub content: Option<Content>,
}

/// The content of an opened sealed record: its inner schema and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Inner schema id (one of [`sealed::SEALABLE_SCHEMAS`]).
    pub schema: String,
    /// Inner payload, checked against `schema`.
    pub payload: Vec<u8>,
}

impl Prepared {
    /// The schema the record's content has: the inner one of an opened sealed record.
    pub fn schema(&self) -> &str {
        self.content
            .as_ref()
            .map_or(self.record.schema.as_str(), |c| c.schema.as_str())
    }
}

/// Verifies `bytes` (encoding, signature, canonical body, schema) and extracts its query
/// columns.
pub fn prepare(bytes: &[u8]) -> Result<Prepared, IngestError> {
    let (record, noncanonical) = record::verify_noting_body(bytes)?;
    if let Some((signed, canonical)) = noncanonical {
        return Err(IngestError::NonCanonical { signed, canonical });
    }
    prepare_verified(record)
}

/// As [`prepare`], every check but the signature, for a record of `author` at `seq`
/// whose id a verified checkpoint of `author` commits to at that seq
/// ([`crate::merkle::vouched`]; [`record::decode_vouched`] says why that authenticates
/// it). Refused if the record names another author or seq.
pub fn prepare_vouched(bytes: &[u8], author: &OrgKey, seq: u64) -> Result<Prepared, IngestError> {
    let (record, noncanonical) = record::decode_vouched(bytes, author)?;
    if record.seq != seq {
        return Err(IngestError::Record(RecordError::BadField {
            field: "seq",
            reason: format!(
                "{}, where the checkpoint of {} that vouches for this id puts it at {seq}",
                record.seq,
                author.short()
            ),
        }));
    }
    if let Some((signed, canonical)) = noncanonical {
        return Err(IngestError::NonCanonical { signed, canonical });
    }
    prepare_verified(record)
}

/// As [`prepare`], for a record whose signature was already checked (own new records).
///
/// A `sealed/v1` record is checked without any key: its envelope must parse
/// ([`sealed::parse`]), its audience must be MEMBERS and every wrapped key must be for
/// the author or a listed member (listed members without a wrap are allowed: a grant may
/// bring them a key later). It gets no subject and no finding columns: those come from
/// [`prepare_opened`] on a node that can open it.
pub fn prepare_verified(record: Record) -> Result<Prepared, IngestError> {
    if record.schema == SEALED_SCHEMA {
        check_sealed(&record)?;
        return Ok(Prepared {
            record,
            subject: None,
            finding: None,
            content: None,
        });
    }
    let value = schemas().check_payload(&record.schema, &record.payload, &record.id)?;
    match record.schema.as_str() {
        ENCRYPTION_KEY_SCHEMA => check_encryption_key(&record)?,
        CHECKPOINT_SCHEMA => check_checkpoint(&record)?,
        COSIGNATURE_SCHEMA => check_cosignature(&record)?,
        GRANT_SCHEMA => check_grant_keys(&value)?,
        _ => {}
    }
    Ok(prepared(record, &value))
}

/// The check of a sealed record's content, for a node that opened it
/// ([`sealed::open`]): the inner `payload` must be valid JSON against the inner `schema`
/// (one of [`sealed::SEALABLE_SCHEMAS`]); subject and finding columns are extracted from
/// it exactly as for a clear record. `record` itself must already have passed
/// [`prepare`]; its `schema` stays `sealed/v1` (store the inner schema beside it).
pub fn prepare_opened(
    record: Record,
    schema: &str,
    payload: &[u8],
) -> Result<Prepared, IngestError> {
    if record.schema != SEALED_SCHEMA {
        return Err(SealError::Malformed(format!(
            "record {} has schema {:?}, not {SEALED_SCHEMA}; check it with prepare",
            record.id.short(),
            record.schema
        ))
        .into());
    }
    if !sealed::is_sealable(schema) {
        return Err(SealError::NotSealable {
            schema: schema.to_string(),
        }
        .into());
    }
    let value = schemas().check_payload(schema, payload, &record.id)?;
    let finding = (schema == FINDING_SCHEMA).then(|| FindingIndex::extract(&value));
    Ok(Prepared {
        subject: subject_of(schema, &value),
        record,
        finding,
        content: Some(Content {
            schema: schema.to_string(),
            payload: payload.to_vec(),
        }),
    })
}

fn prepared(record: Record, value: &serde_json::Value) -> Prepared {
    let finding = (record.schema == FINDING_SCHEMA).then(|| FindingIndex::extract(value));
    Prepared {
        subject: subject_of(&record.schema, value),
        record,
        finding,
        content: None,
    }
}

/// A sealed record's envelope parses, its audience is MEMBERS, and it wraps keys only for
/// its author and listed members.
fn check_sealed(record: &Record) -> Result<(), IngestError> {
    let view = sealed::parse(&record.payload)?;
    let Audience::Members(members) = &record.audience else {
        return Err(IngestError::SealedAudience(format!(
            "its audience is {}, but a sealed record is for listed members only (audience MEMBERS)",
            record.audience.label()
        )));
    };
    if let Some(outsider) = view
        .recipients()
        .find(|r| **r != record.author && !members.contains(r))
    {
        return Err(IngestError::SealedAudience(format!(
            "it holds a wrapped key for {}, who is neither its author nor in its audience",
            outsider.short()
        )));
    }
    Ok(())
}

/// An encryption key is published to the whole coalition and can be encrypted to.
fn check_encryption_key(record: &Record) -> Result<(), IngestError> {
    if record.audience != Audience::Coalition {
        return Err(IngestError::EncryptionKey(format!(
            "its audience is {}; an encryption key is published to the whole coalition",
            record.audience.label()
        )));
    }
    let key = sealed::encryption_key_of(record)
        .ok_or_else(|| IngestError::EncryptionKey("its `x25519` key does not parse".into()))?;
    if !key.check_usable() {
        return Err(IngestError::EncryptionKey(format!(
            "key {} is a small-order X25519 point nothing can be encrypted to; publish a key made from a real secret",
            key.short()
        )));
    }
    Ok(())
}

/// A checkpoint is published to the whole coalition (every member witnesses it) and
/// covers only records before it in its author's chain.
fn check_checkpoint(record: &Record) -> Result<(), IngestError> {
    if record.audience != Audience::Coalition {
        return Err(IngestError::Checkpoint(format!(
            "its audience is {}; a checkpoint is published to the whole coalition",
            record.audience.label()
        )));
    }
    let c = Checkpoint::of_record(&record.schema, &record.payload)
        .ok_or_else(|| IngestError::Checkpoint("its payload does not parse".into()))?;
    if !c.previous_fits() {
        return Err(IngestError::Checkpoint(
            "its previous checkpoint is not inside it, or its frontier does not have one hash per bit of the previous size".into(),
        ));
    }
    if !c.cover_fits() {
        return Err(IngestError::Checkpoint(
            "its cover's subtrees do not lie inside it after its previous checkpoint, in order"
                .into(),
        ));
    }
    if c.size >= record.seq {
        return Err(IngestError::Checkpoint(format!(
            "it covers {} records but is record {} of its author: a checkpoint covers only records before it",
            c.size, record.seq
        )));
    }
    if let Some(p) = c
        .previous
        .as_ref()
        .filter(|p| p.seq <= p.size || p.seq >= record.seq)
    {
        return Err(IngestError::Checkpoint(format!(
            "it names record {} as its previous checkpoint, covering {} records; a checkpoint comes after the records it covers and before this one (record {})",
            p.seq, p.size, record.seq
        )));
    }
    Ok(())
}

/// A cosignature is published to the whole coalition, by a member other than the author
/// of the checkpoint it witnesses.
fn check_cosignature(record: &Record) -> Result<(), IngestError> {
    if record.audience != Audience::Coalition {
        return Err(IngestError::Cosignature(format!(
            "its audience is {}; a cosignature is published to the whole coalition",
            record.audience.label()
        )));
    }
    let c = Cosignature::of_record(&record.schema, &record.payload)
        .ok_or_else(|| IngestError::Cosignature("its payload does not parse".into()))?;
    if c.author == record.author {
        return Err(IngestError::Cosignature(
            "it is signed by the checkpoint's own author: a member cannot witness itself".into(),
        ));
    }
    Ok(())
}

/// A grant's optional wrapped keys are well-formed and, when the grant adds listed
/// members, each for one of them.
fn check_grant_keys(value: &serde_json::Value) -> Result<(), IngestError> {
    let keys = sealed::grant_keys(value)?;
    if keys.is_empty() || value["audience"]["kind"] != "members" {
        return Ok(());
    }
    let members: Vec<OrgKey> = value["audience"]["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    match keys.iter().find(|k| !members.contains(&k.recipient)) {
        Some(k) => Err(SealError::Malformed(format!(
            "grant key for {}, who is not among the members the grant adds",
            k.recipient.short()
        ))
        .into()),
        None => Ok(()),
    }
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

    /// A checkpoint record of `id` at `seq` with `audience` stating `c`.
    fn checkpoint(id: &Identity, seq: u64, audience: Audience, c: &Checkpoint) -> Record {
        record::sign(
            id,
            seq,
            (seq > 1).then_some(RecordId([1; 32])),
            Draft {
                schema: CHECKPOINT_SCHEMA.into(),
                audience,
                supersedes: None,
                epoch: None,
                payload: c.payload(),
                created_at_ms: 1_700_000_000_000,
            },
        )
    }

    #[test]
    fn a_checkpoint_extends_only_an_earlier_checkpoint_and_nobody_cosigns_their_own() {
        let id = Identity::from_seed(&[9; 32]);
        let ids: Vec<RecordId> = (1..=6u8).map(|n| RecordId([n; 32])).collect();
        let c = Checkpoint::after(&ids, &|_| true, 4, 3);
        assert!(prepare(&checkpoint(&id, 7, Audience::Coalition, &c).bytes).is_ok());
        let refused = |r: Record| match prepare(&r.bytes) {
            Err(IngestError::Checkpoint(m)) | Err(IngestError::Cosignature(m)) => m,
            other => panic!("not refused: {other:?}"),
        };
        // A previous checkpoint at or before the records it covered, or after this one.
        let mut early = c.clone();
        early.previous.as_mut().unwrap().seq = 3;
        assert!(refused(checkpoint(&id, 7, Audience::Coalition, &early)).contains("previous"));
        // A frontier without one hash per bit of the previous size.
        let mut short = c.clone();
        short.previous.as_mut().unwrap().frontier.push([0; 32]);
        assert!(refused(checkpoint(&id, 7, Audience::Coalition, &short)).contains("frontier"));
        // A cosignature of one's own checkpoint, or kept from the coalition.
        let witness = Identity::from_seed(&[10; 32]);
        let cosign = |signer: &Identity, audience: Audience| {
            record::sign(
                signer,
                2,
                Some(RecordId([1; 32])),
                Draft {
                    schema: COSIGNATURE_SCHEMA.into(),
                    audience,
                    supersedes: None,
                    epoch: None,
                    payload: Cosignature {
                        author: id.key(),
                        checkpoint: RecordId([7; 32]),
                        size: c.size,
                        head: c.head,
                    }
                    .payload(),
                    created_at_ms: 1_700_000_000_000,
                },
            )
        };
        assert!(prepare(&cosign(&witness, Audience::Coalition).bytes).is_ok());
        assert!(refused(cosign(&id, Audience::Coalition)).contains("own author"));
        assert!(refused(cosign(&witness, Audience::Private)).contains("whole coalition"));
    }

    #[test]
    fn a_checkpoint_must_cover_only_earlier_records_for_the_whole_coalition_with_a_fitting_cover() {
        let id = Identity::from_seed(&[9; 32]);
        let ids: Vec<RecordId> = (1..=4u8).map(|n| RecordId([n; 32])).collect();
        let c = Checkpoint::of(&ids, &|i| i != 1);
        assert!(prepare(&checkpoint(&id, 5, Audience::Coalition, &c).bytes).is_ok());
        let refused = |r: Record| match prepare(&r.bytes) {
            Err(IngestError::Checkpoint(m)) => m,
            other => panic!("not refused as a checkpoint: {other:?}"),
        };
        // Covering itself or later records.
        assert!(
            refused(checkpoint(&id, 4, Audience::Coalition, &c)).contains("only records before it")
        );
        // Kept from some members: they could never witness it.
        assert!(refused(checkpoint(&id, 5, Audience::Private, &c)).contains("whole coalition"));
        // A cover reaching past the checkpoint, or out of order.
        let mut past = c.clone();
        past.cover[0].start = 4;
        assert!(refused(checkpoint(&id, 5, Audience::Coalition, &past)).contains("cover"));
        // A payload that is no checkpoint at all fails the schema.
        let mut bad = checkpoint(&id, 5, Audience::Coalition, &c);
        bad = record::sign(
            &id,
            5,
            bad.prev,
            Draft {
                schema: CHECKPOINT_SCHEMA.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: None,
                payload: br#"{"size":0,"head":"zz"}"#.to_vec(),
                created_at_ms: 1,
            },
        );
        assert!(matches!(prepare(&bad.bytes), Err(IngestError::Schema(_))));
    }

    #[test]
    fn a_vouched_record_skips_only_its_signature() {
        let id = Identity::from_seed(&[7; 32]);
        let other = Identity::from_seed(&[8; 32]);
        let c = Checkpoint::of(&[RecordId([2; 32])], &|_| true);
        let r = checkpoint(&id, 2, Audience::Coalition, &c);
        assert!(prepare_vouched(&r.bytes, &id.key(), 2).is_ok());
        // The signature is not what the vouched path checks: a record whose signature was
        // altered passes it (its id changes with it, so no checkpoint vouched for *that*
        // id), and fails the full check.
        let mut bad_sig = r.bytes.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        assert!(prepare_vouched(&bad_sig, &id.key(), 2).is_ok());
        assert!(matches!(
            prepare(&bad_sig),
            Err(IngestError::Record(RecordError::BadSignature { .. }))
        ));
        // Another author or another seq than the leaf says: refused.
        let e = prepare_vouched(&r.bytes, &other.key(), 2).unwrap_err();
        assert!(e.to_string().contains("another author"), "{e}");
        let e = prepare_vouched(&r.bytes, &id.key(), 3).unwrap_err();
        assert!(e.to_string().contains("puts it at 3"), "{e}");
        // Every other check still runs: a checkpoint for one member only is refused.
        let narrow = checkpoint(&id, 2, Audience::members(vec![other.key()]), &c);
        assert!(matches!(
            prepare_vouched(&narrow.bytes, &id.key(), 2),
            Err(IngestError::Checkpoint(_))
        ));
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
        // Taken on its author's checkpoint instead (the author's own checkpoint vouches
        // for the padded id): refused all the same.
        assert!(matches!(
            prepare_vouched(&padded, &id.key(), 1),
            Err(IngestError::NonCanonical { .. })
        ));
        // Padded and with its signature altered: the signature is what is reported, as
        // before the body is looked at.
        let mut forged = padded.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            prepare(&forged),
            Err(IngestError::Record(RecordError::BadSignature { .. }))
        ));
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

/// Why a governance record (charter, proposal, approval) is not stored. Kept apart from
/// the record check above: it needs the membership the node holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceRefusal {
    /// The author has no standing to sign it: not a founder of this coalition's charter,
    /// not a member under the epoch it names, or the record names no epoch. A peer that
    /// sends one is breaking the rules (honest nodes never store one).
    #[error("{0}")]
    NotEntitled(String),
    /// It names a membership epoch this node has not reached (its membership records may
    /// come later); not the sender's fault.
    #[error("{0}")]
    UnknownEpoch(String),
}

/// Whether the author of governance record `record` was entitled to sign it, judged
/// against `membership` (the coalition this node belongs to, if any) for organisation
/// `me`: a charter must be valid, signed by every founder and stored by one of them, and
/// (once the node belongs to a coalition) be that coalition's charter, or (before) list
/// `me`; a proposal or approval must name an epoch of this coalition's history under
/// which its author was a member. Other records are not governance records: `Ok`.
pub fn governance_entitled(
    record: &Record,
    membership: Option<&crate::charter::Membership>,
    me: &crate::identity::OrgKey,
) -> Result<(), GovernanceRefusal> {
    use crate::charter::{SignedCharter, APPROVAL_SCHEMA, CHARTER_SCHEMA, PROPOSAL_SCHEMA};
    use GovernanceRefusal::{NotEntitled, UnknownEpoch};
    match record.schema.as_str() {
        CHARTER_SCHEMA => {
            let sc: SignedCharter = serde_json::from_slice(&record.payload)
                .map_err(|e| NotEntitled(format!("invalid charter: {e}")))?;
            sc.check()
                .map_err(|e| NotEntitled(format!("invalid charter: {e}")))?;
            if !sc.charter.members.iter().any(|m| m.key == record.author) {
                return Err(NotEntitled(format!(
                    "charter stored by {} who is not one of its founders",
                    record.author.short()
                )));
            }
            match membership {
                Some(m) if m.charter_id != sc.charter.id() => Err(NotEntitled(format!(
                    "charter {:?} ({}) is not the charter of this node's coalition {:?} ({}); a node stores one coalition's charter",
                    sc.charter.name,
                    &hex::encode(sc.charter.id())[..12],
                    m.name,
                    &hex::encode(m.charter_id)[..12]
                ))),
                None if !sc.charter.members.iter().any(|m| m.key == *me) => {
                    Err(NotEntitled(format!(
                        "charter {:?} does not list this organisation ({}); a node stores only the charter of the coalition it belongs to",
                        sc.charter.name,
                        me.short()
                    )))
                }
                _ => Ok(()),
            }
        }
        PROPOSAL_SCHEMA | APPROVAL_SCHEMA => {
            let Some(epoch) = record.epoch else {
                return Err(NotEntitled(format!(
                    "{} names no membership epoch, so its author's standing cannot be judged",
                    record.schema
                )));
            };
            let Some(m) = membership else {
                return Err(UnknownEpoch(format!(
                    "names membership epoch {} which is not in this coalition's history (no charter on this node yet)",
                    &hex::encode(epoch)[..12]
                )));
            };
            if m.state_at(&epoch).is_none() {
                return Err(UnknownEpoch(format!(
                    "names membership epoch {} which is not in this coalition's history (made under a membership this node has not seen, or a fork)",
                    &hex::encode(epoch)[..12]
                )));
            }
            m.judge(record).map_err(NotEntitled)
        }
        _ => Ok(()),
    }
}

/// For a node with no charter yet (organisation `me`), importing the governance records
/// of one bundle: the charter records among `records` that do not list `me` but under
/// which the proposals and approvals among `records` make `me` a current member (it was
/// admitted, or its new key rotated in, after the founding). [`governance_entitled`]
/// refuses such a charter; the node may store it, and then judges the proposals and
/// approvals against it as usual.
pub fn charters_admitting(records: &[&Record], me: &crate::identity::OrgKey) -> Vec<RecordId> {
    use crate::charter::{Membership, APPROVAL_SCHEMA, CHARTER_SCHEMA, PROPOSAL_SCHEMA};
    let changes: Vec<Record> = records
        .iter()
        .filter(|r| r.schema == PROPOSAL_SCHEMA || r.schema == APPROVAL_SCHEMA)
        .map(|r| (*r).clone())
        .collect();
    records
        .iter()
        .filter(|r| r.schema == CHARTER_SCHEMA)
        .filter(|charter| {
            let mut all = changes.clone();
            all.push((**charter).clone());
            matches!(Membership::fold(&all, None), Ok(Some(m)) if m.current().is_member(me))
        })
        .map(|charter| charter.id)
        .collect()
}

#[cfg(test)]
mod governance_tests {
    use super::*;
    use crate::charter::{Member, Membership, SignedCharter, APPROVAL_SCHEMA, CHARTER_SCHEMA};
    use crate::identity::Identity;
    use crate::record::{sign, Audience, Draft};

    fn rec(who: &Identity, schema: &str, epoch: Option<[u8; 32]>, payload: Vec<u8>) -> Record {
        sign(
            who,
            1,
            None,
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch,
                payload,
                created_at_ms: 1,
            },
        )
    }

    fn charter(founders: &[&Identity]) -> SignedCharter {
        let members = founders
            .iter()
            .enumerate()
            .map(|(i, f)| Member {
                organisation: format!("org{i}"),
                country: "GE".into(),
                key: f.key(),
            })
            .collect();
        let mut sc = SignedCharter::draft("c", founders.len() as u32, members, false, 1).unwrap();
        for f in founders {
            sc.sign(f).unwrap();
        }
        sc
    }

    #[test]
    fn only_members_at_the_named_epoch_and_founders_are_entitled() {
        let (a, b, stranger) = (
            Identity::from_seed(&[1; 32]),
            Identity::from_seed(&[2; 32]),
            Identity::from_seed(&[3; 32]),
        );
        let sc = charter(&[&a, &b]);
        let payload = serde_json::to_vec(&sc).unwrap();
        let c = rec(&a, CHARTER_SCHEMA, None, payload.clone());
        assert_eq!(governance_entitled(&c, None, &a.key()), Ok(()));
        // A charter that does not list this node's organisation is not stored.
        assert!(matches!(
            governance_entitled(&c, None, &stranger.key()),
            Err(GovernanceRefusal::NotEntitled(_))
        ));
        // Stored by someone who is not a founder.
        let by_stranger = rec(&stranger, CHARTER_SCHEMA, None, payload);
        assert!(governance_entitled(&by_stranger, None, &a.key()).is_err());
        let m = Membership::fold(&[c], None).unwrap().unwrap();
        let epoch = m.current().epoch;
        let approval = |who: &Identity, epoch| {
            rec(
                who,
                APPROVAL_SCHEMA,
                epoch,
                format!("{{\"proposal\":\"{}\"}}", "ab".repeat(32)).into_bytes(),
            )
        };
        assert_eq!(
            governance_entitled(&approval(&b, Some(epoch)), Some(&m), &a.key()),
            Ok(())
        );
        let junk = governance_entitled(&approval(&stranger, Some(epoch)), Some(&m), &a.key());
        assert!(
            matches!(&junk, Err(GovernanceRefusal::NotEntitled(r)) if r.contains("not a member")),
            "{junk:?}"
        );
        assert!(matches!(
            governance_entitled(&approval(&b, None), Some(&m), &a.key()),
            Err(GovernanceRefusal::NotEntitled(_))
        ));
        assert!(matches!(
            governance_entitled(&approval(&b, Some([9; 32])), Some(&m), &a.key()),
            Err(GovernanceRefusal::UnknownEpoch(r)) if r.contains("not in this coalition's history")
        ));
        // Another coalition's charter, once this node belongs to one.
        let other = rec(
            &stranger,
            CHARTER_SCHEMA,
            None,
            serde_json::to_vec(&charter(&[&stranger])).unwrap(),
        );
        assert!(matches!(
            governance_entitled(&other, Some(&m), &a.key()),
            Err(GovernanceRefusal::NotEntitled(r)) if r.contains("is not the charter")
        ));
    }

    #[test]
    fn a_charter_is_admitting_only_when_the_batch_makes_this_organisation_a_member() {
        use crate::charter::{Change, PROPOSAL_SCHEMA};
        let (a, b, late, stranger) = (
            Identity::from_seed(&[1; 32]),
            Identity::from_seed(&[2; 32]),
            Identity::from_seed(&[4; 32]),
            Identity::from_seed(&[3; 32]),
        );
        let c = rec(
            &a,
            CHARTER_SCHEMA,
            None,
            serde_json::to_vec(&charter(&[&a, &b])).unwrap(),
        );
        let epoch = Membership::fold(std::slice::from_ref(&c), None)
            .unwrap()
            .unwrap()
            .current()
            .epoch;
        let change = Change::Add {
            member: Member {
                organisation: "late".into(),
                country: "MK".into(),
                key: late.key(),
            },
            low_threshold_acknowledged: false,
        };
        let proposal = rec(
            &a,
            PROPOSAL_SCHEMA,
            Some(epoch),
            serde_json::to_vec(&serde_json::json!({ "change": change })).unwrap(),
        );
        let approval = rec(
            &b,
            APPROVAL_SCHEMA,
            Some(epoch),
            format!("{{\"proposal\":\"{}\"}}", proposal.id.to_hex()).into_bytes(),
        );
        // Charter and admission (threshold 2: proposer and approver): the late member may
        // store the charter; a stranger may not.
        let all = [&c, &proposal, &approval];
        assert_eq!(charters_admitting(&all, &late.key()), vec![c.id]);
        assert!(charters_admitting(&all, &stranger.key()).is_empty());
        // A proposal without the approval it needs admits nobody.
        assert!(charters_admitting(&[&c, &proposal], &late.key()).is_empty());
        // Nor does an approval by a stranger.
        let forged = rec(
            &stranger,
            APPROVAL_SCHEMA,
            Some(epoch),
            format!("{{\"proposal\":\"{}\"}}", proposal.id.to_hex()).into_bytes(),
        );
        assert!(charters_admitting(&[&c, &proposal, &forged], &late.key()).is_empty());
    }
}
