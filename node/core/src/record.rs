//! Records: build, sign, verify, and name them.
//!
//! A record is the exact bytes of a protobuf `SignedRecord`. Its `body` field holds the
//! exact bytes of a `RecordBody` as the author signed them; we verify and hash those bytes
//! as received and never re-encode them. The record id is SHA-256 over the whole
//! `SignedRecord` bytes. Because two encodings of the same envelope would give two ids,
//! the envelope itself must be canonical (field 1 then field 2, nothing else), which we
//! check by re-encoding the two fields and comparing; the body is never re-encoded.

use std::fmt;
use std::str::FromStr;

use coalition_proto::v1::{AudienceKind, RecordBody, SignedRecord};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::identity::{Identity, OrgKey};

/// Domain-separation prefix signed before the body bytes.
pub const SIGNING_PREFIX: &[u8] = b"coalition/v1/record\0";
/// Largest `SignedRecord` accepted anywhere (bundles, the wire, the store): 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest number of members an explicit audience may list.
pub const MAX_AUDIENCE_MEMBERS: usize = 256;
/// Longest schema id.
pub const MAX_SCHEMA_ID_LEN: usize = 64;
/// Highest sequence number a record may carry (2^53): the store keeps seqs as SQLite
/// integers and JSON readers as doubles, both exact up to here. A member signing records
/// at absurd seqs gains nothing but would make others index, bucket and report numbers
/// no reader holds exactly.
pub const MAX_SEQ: u64 = 1 << 53;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_BYTES`].
    #[error("record is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size seen.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a protobuf `SignedRecord`/`RecordBody`.
    #[error("not a valid record encoding: {0}")]
    Malformed(String),
    /// A field has an impossible value.
    #[error("invalid field `{field}`: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The signature does not verify for the named author.
    #[error(
        "signature does not verify: the record was altered or was not signed by author {author}"
    )]
    BadSignature {
        /// Claimed author.
        author: String,
    },
}

fn bad(field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::BadField {
        field,
        reason: reason.into(),
    }
}

/// SHA-256 of a record's `SignedRecord` bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; 32]);

impl RecordId {
    /// Id of the given `SignedRecord` bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// From 32 raw bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 12 hex characters, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.short())
    }
}

impl FromStr for RecordId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex::decode(s).map_err(|_| format!("{s:?} is not a hex record id"))?;
        Self::from_slice(&b).ok_or_else(|| format!("{s:?} is not a 64-character record id"))
    }
}

impl serde::Serialize for RecordId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for RecordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who may receive a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Never leaves the node.
    Private,
    /// Every current coalition member.
    Coalition,
    /// The listed member organisations only (sorted, no duplicates).
    Members(Vec<OrgKey>),
}

impl Audience {
    /// Members audience, normalised (sorted, deduplicated).
    pub fn members(mut keys: Vec<OrgKey>) -> Self {
        keys.sort();
        keys.dedup();
        Audience::Members(keys)
    }

    /// Parses the CLI form: `private`, `coalition`, or `KEY[,KEY…]`.
    pub fn parse_cli(s: &str) -> Result<Self, String> {
        match s.trim() {
            "private" => Ok(Audience::Private),
            "coalition" => Ok(Audience::Coalition),
            list => {
                let keys = list
                    .split(',')
                    .map(|k| k.trim().parse::<OrgKey>().map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() || keys.len() > MAX_AUDIENCE_MEMBERS {
                    return Err(format!(
                        "an audience lists 1 to {MAX_AUDIENCE_MEMBERS} organisation keys"
                    ));
                }
                Ok(Audience::members(keys))
            }
        }
    }

    /// Short label: `private`, `coalition`, or `members:N`.
    pub fn label(&self) -> String {
        match self {
            Audience::Private => "private".into(),
            Audience::Coalition => "coalition".into(),
            Audience::Members(m) => format!("members:{}", m.len()),
        }
    }

    /// JSON form used by `--json` output and the grant schema.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Audience::Private => serde_json::json!({"kind": "private"}),
            Audience::Coalition => serde_json::json!({"kind": "coalition"}),
            Audience::Members(m) => serde_json::json!({
                "kind": "members",
                "members": m.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
            }),
        }
    }

    /// Wire code stored in the database.
    pub fn kind_code(&self) -> i64 {
        match self {
            Audience::Private => AudienceKind::Private as i64,
            Audience::Coalition => AudienceKind::Coalition as i64,
            Audience::Members(_) => AudienceKind::Members as i64,
        }
    }
}

/// What the author decides when making a record; `sign` adds the chain fields.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Schema id, e.g. `finding/v1`.
    pub schema: String,
    /// Who may receive it.
    pub audience: Audience,
    /// Record corrected or retracted by this one.
    pub supersedes: Option<RecordId>,
    /// Membership epoch the record is made under.
    pub epoch: Option<[u8; 32]>,
    /// UTF-8 JSON payload.
    pub payload: Vec<u8>,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A record whose encoding and signature have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 of `bytes`.
    pub id: RecordId,
    /// The `SignedRecord` bytes exactly as signed/received.
    pub bytes: Vec<u8>,
    /// Author organisation.
    pub author: OrgKey,
    /// Per-author sequence number.
    pub seq: u64,
    /// Author's previous record.
    pub prev: Option<RecordId>,
    /// Claimed creation time (ms).
    pub created_at_ms: i64,
    /// Payload schema id.
    pub schema: String,
    /// Audience.
    pub audience: Audience,
    /// Superseded record.
    pub supersedes: Option<RecordId>,
    /// Membership epoch.
    pub epoch: Option<[u8; 32]>,
    /// Payload bytes (JSON).
    pub payload: Vec<u8>,
}

/// Signs a new record as `identity`, with the given chain position.
pub fn sign(identity: &Identity, seq: u64, prev: Option<RecordId>, draft: Draft) -> Record {
    let audience_members = match &draft.audience {
        Audience::Members(m) => m.iter().map(|k| k.as_bytes().to_vec().into()).collect(),
        _ => Vec::new(),
    };
    let body = RecordBody {
        author: identity.key().as_bytes().to_vec().into(),
        seq,
        prev: prev.map(|p| p.0.to_vec().into()).unwrap_or_default(),
        created_at_ms: draft.created_at_ms,
        schema: draft.schema.clone(),
        audience: draft.audience.kind_code() as i32,
        audience_members,
        supersedes: draft
            .supersedes
            .map(|p| p.0.to_vec().into())
            .unwrap_or_default(),
        epoch: draft.epoch.map(|e| e.to_vec().into()).unwrap_or_default(),
        payload: draft.payload.clone().into(),
    };
    let body_bytes = body.encode_to_vec();
    let signature = identity.sign(&signing_message(&body_bytes));
    let bytes = SignedRecord {
        body: body_bytes.into(),
        signature: signature.to_vec().into(),
    }
    .encode_to_vec();
    Record {
        id: RecordId::of(&bytes),
        bytes,
        author: identity.key(),
        seq,
        prev,
        created_at_ms: draft.created_at_ms,
        schema: draft.schema,
        audience: draft.audience,
        supersedes: draft.supersedes,
        epoch: draft.epoch,
        payload: draft.payload,
    }
}

/// For record bytes whose envelope decodes, the body's length as signed and the length of
/// the canonical encoding of its fields, when the two differ: the body carries unknown
/// fields (padding), repeated fields, default values written out, or fields out of order.
/// `None` when the body is canonical (or does not decode; [`verify`] reports that).
pub fn noncanonical_body(bytes: &[u8]) -> Option<(usize, usize)> {
    let env = SignedRecord::decode(bytes).ok()?;
    let body = RecordBody::decode(env.body.as_ref()).ok()?;
    body_encoding(&body, &env.body)
}

/// `(signed, canonical)` lengths when `signed` is not the canonical encoding of `body`.
fn body_encoding(body: &RecordBody, signed: &[u8]) -> Option<(usize, usize)> {
    let canonical = body.encode_to_vec();
    (canonical != signed).then_some((signed.len(), canonical.len()))
}

pub(crate) fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_PREFIX.len() + body.len());
    m.extend_from_slice(SIGNING_PREFIX);
    m.extend_from_slice(body);
    m
}

/// The envelope's body alone (`SignedRecord.body`; other fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct BodyOnly {
    #[prost(bytes = "vec", tag = "1")]
    body: Vec<u8>,
}

/// The body's schema alone (`RecordBody.schema`; other fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct SchemaOnly {
    #[prost(string, tag = "5")]
    schema: String,
}

/// The schema that `bytes` name, read without decoding or checking anything else: for
/// ordering and routing records before they are verified, never for trusting them.
pub fn schema_of(bytes: &[u8]) -> Option<String> {
    let env = BodyOnly::decode(bytes).ok()?;
    Some(SchemaOnly::decode(env.body.as_slice()).ok()?.schema)
}

/// Decodes `bytes` as a record, checks every field and the signature (`verify_strict`).
/// Does not check the payload against its schema: see [`crate::schema`].
pub fn verify(bytes: &[u8]) -> Result<Record, RecordError> {
    Ok(decode(bytes, SignatureCheck::Verify, false)?.0)
}

/// As [`verify`], and what [`noncanonical_body`] says of the same bytes, from one
/// decoding (the check of a record to store: `crate::check::prepare`).
pub fn verify_noting_body(bytes: &[u8]) -> Result<(Record, Option<(usize, usize)>), RecordError> {
    decode(bytes, SignatureCheck::Verify, true)
}

/// As [`verify`], every check but the signature, for a record of `author` whose id
/// `author` committed to in a checkpoint that was verified ([`crate::merkle::vouched`]):
/// that authenticates these exact bytes, signature field included. Refused unless the
/// record names `author`; the caller checks its seq against the checkpoint's leaf, and
/// its signature later, before the record is served to anyone (docs/THREAT_MODEL.md,
/// "Sync from checkpoints").
///
/// Returns, beside the record, what [`noncanonical_body`] says of the same bytes, from
/// the one decoding.
pub fn decode_vouched(
    bytes: &[u8],
    author: &OrgKey,
) -> Result<(Record, Option<(usize, usize)>), RecordError> {
    decode(bytes, SignatureCheck::Vouched(author), true)
}

/// As [`verify`], every check but the signature: only for reading back a record a store
/// took on its author's checkpoint ([`decode_vouched`]) while its signature is not yet
/// verified.
pub fn decode_unverified(bytes: &[u8]) -> Result<Record, RecordError> {
    Ok(decode(bytes, SignatureCheck::Later, false)?.0)
}

/// What [`decode`] does with the signature.
enum SignatureCheck<'a> {
    /// Verifies it (`verify_strict`).
    Verify,
    /// Skips it: a verified checkpoint of this author vouches for the bytes.
    Vouched(&'a OrgKey),
    /// Skips it: checked later (a record a store holds unchecked).
    Later,
}

/// Decodes and checks `bytes`; with `note_body`, also compares the body with its
/// canonical encoding (reported beside the record, never as an error here: every other
/// check comes first).
fn decode(
    bytes: &[u8],
    signature: SignatureCheck<'_>,
    note_body: bool,
) -> Result<(Record, Option<(usize, usize)>), RecordError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge {
            size: bytes.len(),
            max: MAX_RECORD_BYTES,
        });
    }
    let env = SignedRecord::decode(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if env.encoded_len() != bytes.len() || env.encode_to_vec() != bytes {
        return Err(RecordError::Malformed(
            "the SignedRecord envelope is not canonically encoded (extra or repeated fields)"
                .into(),
        ));
    }
    let body = RecordBody::decode(env.body.as_ref())
        .map_err(|e| RecordError::Malformed(format!("body: {e}")))?;
    let sig: [u8; 64] = env.signature.as_ref().try_into().map_err(|_| {
        bad(
            "signature",
            format!("{} bytes, expected 64", env.signature.len()),
        )
    })?;
    let author = match signature {
        SignatureCheck::Vouched(expected) => {
            if body.author.as_ref() != expected.as_bytes().as_slice() {
                return Err(bad(
                    "author",
                    format!(
                        "the checkpoint of {} vouches for this id, but the record names another author",
                        expected.short()
                    ),
                ));
            }
            *expected
        }
        SignatureCheck::Later => OrgKey::from_bytes(&body.author).map_err(|r| bad("author", r))?,
        SignatureCheck::Verify => {
            let (author, author_key) =
                OrgKey::with_verifying_key(&body.author).map_err(|r| bad("author", r))?;
            author_key
                .verify_strict(
                    &signing_message(&env.body),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .map_err(|_| RecordError::BadSignature {
                    author: author.to_hex(),
                })?;
            author
        }
    };
    let noncanonical = if note_body {
        body_encoding(&body, &env.body)
    } else {
        None
    };
    let record = Record {
        id: RecordId::of(bytes),
        bytes: bytes.to_vec(),
        author,
        seq: body.seq,
        prev: optional_id("prev", &body.prev)?,
        created_at_ms: body.created_at_ms,
        audience: decode_audience(&body)?,
        supersedes: optional_id("supersedes", &body.supersedes)?,
        epoch: optional_id("epoch", &body.epoch)?.map(|e| e.0),
        schema: body.schema,
        payload: body.payload.to_vec(),
    };
    check_chain_fields(&record)?;
    Ok((record, noncanonical))
}

fn optional_id(field: &'static str, b: &[u8]) -> Result<Option<RecordId>, RecordError> {
    match b.len() {
        0 => Ok(None),
        32 => Ok(RecordId::from_slice(b)),
        n => Err(bad(field, format!("{n} bytes, expected 0 or 32"))),
    }
}

fn decode_audience(body: &RecordBody) -> Result<Audience, RecordError> {
    let kind = AudienceKind::try_from(body.audience).map_err(|_| {
        bad(
            "audience",
            format!("unknown audience kind {}", body.audience),
        )
    })?;
    let listed = &body.audience_members;
    match kind {
        AudienceKind::Private | AudienceKind::Coalition if !listed.is_empty() => Err(bad(
            "audience_members",
            "members listed for a private or coalition audience",
        )),
        AudienceKind::Private => Ok(Audience::Private),
        AudienceKind::Coalition => Ok(Audience::Coalition),
        AudienceKind::Members => {
            if listed.is_empty() || listed.len() > MAX_AUDIENCE_MEMBERS {
                return Err(bad(
                    "audience_members",
                    format!("must list 1 to {MAX_AUDIENCE_MEMBERS} members"),
                ));
            }
            let keys = listed
                .iter()
                .map(|k| OrgKey::from_bytes(k).map_err(|r| bad("audience_members", r)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Audience::members(keys))
        }
    }
}

fn check_chain_fields(r: &Record) -> Result<(), RecordError> {
    if r.seq == 0 {
        return Err(bad("seq", "sequence numbers start at 1"));
    }
    if r.seq > MAX_SEQ {
        return Err(bad("seq", format!("at most {MAX_SEQ} (2^53)")));
    }
    if (r.seq == 1) != r.prev.is_none() {
        return Err(bad("prev", "must be empty exactly when seq is 1"));
    }
    if r.schema.is_empty() || r.schema.len() > MAX_SCHEMA_ID_LEN || !r.schema.is_ascii() {
        return Err(bad("schema", "must be 1 to 64 ASCII characters"));
    }
    if r.supersedes == Some(r.id) {
        return Err(bad("supersedes", "a record cannot supersede itself"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn draft(payload: &str) -> Draft {
        Draft {
            schema: "finding/v1".into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: None,
            payload: payload.as_bytes().to_vec(),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn signed_record_verifies_and_keeps_its_id() {
        let id = Identity::from_seed(&[7; 32]);
        let r = sign(&id, 1, None, draft("{}"));
        let v = verify(&r.bytes).unwrap();
        assert_eq!(v, r);
        assert_eq!(v.id, RecordId::of(&r.bytes));
    }

    #[test]
    fn a_seq_beyond_2_pow_53_is_refused() {
        let id = Identity::from_seed(&[7; 32]);
        let ok = sign(&id, MAX_SEQ, Some(RecordId([1; 32])), draft("{}"));
        assert!(verify(&ok.bytes).is_ok());
        let huge = sign(&id, MAX_SEQ + 1, Some(RecordId([1; 32])), draft("{}"));
        let e = verify(&huge.bytes).unwrap_err().to_string();
        assert!(e.contains("2^53"), "{e}");
        assert!(verify(&sign(&id, u64::MAX, Some(RecordId([1; 32])), draft("{}")).bytes).is_err());
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let id = Identity::from_seed(&[7; 32]);
        let r = sign(&id, 1, None, draft("{\"a\":1}"));
        for i in 0..r.bytes.len() {
            for bit in 0..8 {
                let mut b = r.bytes.clone();
                b[i] ^= 1 << bit;
                assert!(verify(&b).is_err(), "flip at byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn truncation_and_trailing_garbage_are_rejected() {
        let id = Identity::from_seed(&[1; 32]);
        let r = sign(&id, 1, None, draft("{}"));
        for n in 0..r.bytes.len() {
            assert!(verify(&r.bytes[..n]).is_err());
        }
        let mut longer = r.bytes.clone();
        longer.extend_from_slice(&[0x1a, 0x00]); // an empty unknown field 3
        assert!(matches!(verify(&longer), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn another_authors_key_does_not_verify() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let r = sign(&a, 1, None, draft("{}"));
        let mut body = RecordBody::decode(
            SignedRecord::decode(r.bytes.as_slice())
                .unwrap()
                .body
                .as_ref(),
        )
        .unwrap();
        body.author = b.key().as_bytes().to_vec().into();
        let env = SignedRecord::decode(r.bytes.as_slice()).unwrap();
        let forged = SignedRecord {
            body: body.encode_to_vec().into(),
            signature: env.signature,
        }
        .encode_to_vec();
        assert!(matches!(
            verify(&forged),
            Err(RecordError::BadSignature { .. })
        ));
    }

    #[test]
    fn oversized_record_is_refused_before_decoding() {
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        assert!(matches!(verify(&big), Err(RecordError::TooLarge { .. })));
    }

    #[test]
    fn audience_cli_forms() {
        assert_eq!(Audience::parse_cli("private").unwrap(), Audience::Private);
        assert_eq!(
            Audience::parse_cli("coalition").unwrap(),
            Audience::Coalition
        );
        let k = Identity::from_seed(&[3; 32]).key();
        let both = format!("{k},{k}");
        assert_eq!(
            Audience::parse_cli(&both).unwrap(),
            Audience::Members(vec![k])
        );
        assert!(Audience::parse_cli("everyone").is_err());
    }

    proptest! {
        #[test]
        fn exact_bytes_round_trip(payload in ".{0,200}", seq in 1u64..1000, kind in 0usize..3) {
            let id = Identity::from_seed(&[9; 32]);
            let audience = match kind {
                0 => Audience::Private,
                1 => Audience::Coalition,
                _ => Audience::members(vec![id.key()]),
            };
            let prev = (seq > 1).then_some(RecordId([5; 32]));
            let r = sign(&id, seq, prev, Draft { audience, ..draft(&payload) });
            let v = verify(&r.bytes).unwrap();
            prop_assert_eq!(&v.bytes, &r.bytes);
            prop_assert_eq!(v.payload, payload.into_bytes());
        }
    }

    #[test]
    fn schema_of_reads_what_verify_reads() {
        let r = sign(
            &Identity::from_seed(&[1; 32]),
            1,
            None,
            Draft {
                schema: "charter/v1".into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: None,
                payload: b"{}".to_vec(),
                created_at_ms: 5,
            },
        );
        assert_eq!(schema_of(&r.bytes).as_deref(), Some("charter/v1"));
        assert_eq!(verify(&r.bytes).unwrap().schema, "charter/v1");
        assert_eq!(schema_of(b"\xff\xff garbage"), None);
    }
}
