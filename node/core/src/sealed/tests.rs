//! Tests of sealed records: round trips, and the hostile cases (outsiders, rotated keys,
//! forged and moved wraps, flipped bits, wraps outside the audience, leaks of the inner
//! schema or content into the record bytes).

use proptest::prelude::*;

use super::*;
use crate::check::{self, IngestError};
use crate::finding::{annex_payload, to_payload, GRANT_SCHEMA};
use crate::identity::Identity;
use crate::record::{self, Audience, Draft, RecordId};

/// A marker planted in payloads; it must never appear in a sealed record's bytes.
const MARKER: &str = "MARKER-Witness-Jelena-Sealedname-4711";

pub(super) fn org(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

pub(super) fn recipient(id: &Identity) -> Recipient {
    Recipient {
        org: id.key(),
        key: id.encryption_key(),
    }
}

/// A valid `finding/v1` payload (the first shipped example) with `MARKER` in its summary.
pub(super) fn finding_payload() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/examples/01-rs-belgrade-protest-force.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("sensitive");
    v["summary"] = format!("{MARKER}: what happened, in detail.").into();
    to_payload(&v)
}

/// A `sealed/v1` record by `author` with `payload` (already sealed) and audience `members`.
fn sealed_record(author: &Identity, seq: u64, payload: Vec<u8>, members: &[&Identity]) -> Record {
    record::sign(
        author,
        seq,
        (seq > 1).then_some(RecordId([seq as u8; 32])),
        Draft {
            schema: SEALED_SCHEMA.into(),
            audience: Audience::members(members.iter().map(|m| m.key()).collect()),
            supersedes: None,
            epoch: None,
            payload,
            created_at_ms: 1_700_000_000_000,
        },
    )
}

/// `author` seals a finding for `members` (and itself), as a signed record.
pub(super) fn seal_finding(author: &Identity, members: &[&Identity]) -> Record {
    let mut rs: Vec<Recipient> = members.iter().map(|m| recipient(m)).collect();
    rs.push(recipient(author));
    let sealed = seal(&author.key(), FINDING_SCHEMA, &finding_payload(), &rs).unwrap();
    sealed_record(author, 1, sealed.payload, members)
}

/// `record` with its envelope replaced by `sealed`, signed again by `author`.
fn resealed(
    author: &Identity,
    record: &Record,
    sealed: pb::Sealed,
    members: &[&Identity],
) -> Record {
    sealed_record(author, record.seq, sealed.encode_to_vec(), members)
}

fn envelope(record: &Record) -> pb::Sealed {
    pb::Sealed::decode(record.payload.as_slice()).unwrap()
}

#[test]
fn audience_and_author_open_and_read_the_inner_record() {
    let (a, b, c) = (org(1), org(2), org(3));
    let r = seal_finding(&a, &[&b, &c]);
    for who in [&a, &b, &c] {
        let opened = open(&r, &who.key(), who.encryption_secrets()).unwrap();
        assert_eq!(opened.schema, FINDING_SCHEMA);
        assert_eq!(opened.payload, finding_payload());
        let p = check::prepare_opened(r.clone(), &opened.schema, &opened.payload).unwrap();
        let index = p
            .finding
            .expect("finding columns extracted from the opened payload");
        assert_eq!(index.country, "RS");
        assert_eq!(p.record, r);
    }
    let view = parse(&r.payload).unwrap();
    assert_eq!(view.keys.len(), 3);
    assert_eq!(
        view.key_for(&b.key()).unwrap().encryption_key,
        b.encryption_key()
    );
    assert!(view.ciphertext.len() >= MIN_CIPHERTEXT_BYTES);
}

#[test]
fn a_sealed_record_verifies_and_passes_the_record_check_without_any_key() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    assert_eq!(record::verify(&r.bytes).unwrap(), r);
    let p = check::prepare(&r.bytes).unwrap();
    assert_eq!(p.subject, None);
    assert!(p.finding.is_none());
    // One flipped bit anywhere in the record breaks the author's signature.
    let mut bytes = r.bytes.clone();
    let at = bytes.len() - 80;
    bytes[at] ^= 1;
    assert!(check::prepare(&bytes).is_err());
}

#[test]
fn neither_the_inner_schema_nor_the_content_is_in_the_record_bytes() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let has = |needle: &[u8]| r.bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(SEALED_SCHEMA.as_bytes()),
        "the test searches the right bytes"
    );
    for needle in [
        FINDING_SCHEMA,
        MARKER,
        "Belgrade",
        "excessive_force",
        "finding",
    ] {
        assert!(
            !has(needle.as_bytes()),
            "{needle:?} readable in a sealed record"
        );
    }
    // The content key is nowhere in the record either.
    let opened = open(&r, &b.key(), b.encryption_secrets()).unwrap();
    assert!(!has(opened.content_key.as_bytes()));
    assert_eq!(format!("{:?}", opened.content_key), "ContentKey(..)");
}

#[test]
fn a_member_outside_the_audience_cannot_open() {
    let (a, b, c) = (org(1), org(2), org(3));
    let r = seal_finding(&a, &[&b]);
    let err = open(&r, &c.key(), c.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::NotRecipient { .. }), "{err}");
    // Claiming to be b does not help without b's secret: c's secrets match no key.
    let err = open(&r, &b.key(), c.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::NoSecret { .. }), "{err}");
    assert!(err.to_string().contains("rotated away or lost"), "{err}");
}

#[test]
fn a_rotated_recipient_opens_with_its_older_secret_and_is_told_when_it_is_gone() {
    let (a, mut b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let old_key = b.encryption_key();
    b.rotate_encryption_key();
    assert_ne!(b.encryption_key(), old_key);
    let opened = open(&r, &b.key(), b.encryption_secrets()).unwrap();
    assert_eq!(opened.payload, finding_payload());
    // A key file holding only the new secret.
    let err = open(&r, &b.key(), &b.encryption_secrets()[..1]).unwrap_err();
    match &err {
        OpenError::NoSecret { key, .. } => assert_eq!(*key, old_key.short()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn forged_wraps_fail_as_wraps() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let i = parse(&r.payload)
        .unwrap()
        .keys
        .iter()
        .position(|k| k.recipient == b.key())
        .unwrap();
    // Random enc and wrapped bytes (a valid-looking point: another key's public half).
    let mut forged = envelope(&r);
    forged.keys[i].enc = org(9).encryption_key().0.to_vec().into();
    let mut junk = [0u8; WRAPPED_BYTES];
    rand::RngCore::fill_bytes(&mut OsRng, &mut junk);
    forged.keys[i].wrapped = junk.to_vec().into();
    let forged = resealed(&a, &r, forged, &[&b]);
    assert!(check::prepare(&forged.bytes).is_ok(), "structurally fine");
    let err = open(&forged, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadWrap { .. }), "{err}");
    // A valid wrap for b moved from another record by the same author.
    let other = seal_finding(&a, &[&b]);
    let mut moved = envelope(&r);
    moved.keys[i] = envelope(&other).keys[i].clone();
    let moved = resealed(&a, &r, moved, &[&b]);
    let err = open(&moved, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadWrap { .. }), "{err}");
    let wrap = parse(&other.payload).unwrap().keys[i].clone();
    let err = open_with_wrap(&r, &wrap, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadWrap { .. }), "{err}");
}

#[test]
fn a_wrap_relabelled_for_another_recipient_does_not_open() {
    // The wrap made for b, presented as c's (with c's key): the info names b, so c's
    // secret cannot open it even if the encapsulation were for c.
    let (a, b, c) = (org(1), org(2), org(3));
    let r = seal_finding(&a, &[&b, &c]);
    let view = parse(&r.payload).unwrap();
    let mut wrap = view.key_for(&b.key()).unwrap().clone();
    wrap.recipient = c.key();
    wrap.encryption_key = c.encryption_key();
    let err = open_with_wrap(&r, &wrap, &c.key(), c.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadWrap { .. }), "{err}");
}

#[test]
fn every_flipped_ciphertext_bit_fails_as_ciphertext() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let ct = parse(&r.payload).unwrap().ciphertext;
    let key = open(&r, &b.key(), b.encryption_secrets())
        .unwrap()
        .content_key;
    for byte in 0..ct.len() {
        let mut bad = ct.clone();
        bad[byte] ^= 1 << (byte % 8);
        let err = decrypt(&a.key(), &bad, &key, "r").unwrap_err();
        assert!(matches!(err, OpenError::BadCiphertext { .. }), "{err}");
    }
    // Through `open`, the flipped ciphertext (re-signed by the author) fails already at the
    // wrap: each wrap is bound to SHA-256 of this exact ciphertext.
    let mut flipped = envelope(&r);
    let mut c = flipped.ciphertext.to_vec();
    c[0] ^= 0x80;
    flipped.ciphertext = c.into();
    let flipped = resealed(&a, &r, flipped, &[&b]);
    let err = open(&flipped, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadWrap { .. }), "{err}");
    // Another author's name on the same ciphertext does not decrypt either (the AAD).
    let err = decrypt(&b.key(), &ct, &key, "r").unwrap_err();
    assert!(matches!(err, OpenError::BadCiphertext { .. }), "{err}");
}

#[test]
fn the_record_check_refuses_wraps_outside_the_audience_and_other_audiences() {
    let (a, b, c) = (org(1), org(2), org(3));
    let rs = [recipient(&a), recipient(&b), recipient(&c)];
    let sealed = seal(&a.key(), FINDING_SCHEMA, &finding_payload(), &rs).unwrap();
    // c holds a wrap but is not in the audience.
    let r = sealed_record(&a, 1, sealed.payload.clone(), &[&b]);
    let err = check::prepare(&r.bytes).unwrap_err();
    assert!(
        matches!(&err, IngestError::SealedAudience(m) if m.contains(&c.key().short())),
        "{err}"
    );
    // Audience members without a wrap are fine (a grant may bring them a key later).
    let r = sealed_record(&a, 1, sealed.payload.clone(), &[&b, &c, &org(4)]);
    check::prepare(&r.bytes).unwrap();
    // A sealed record for the whole coalition, or private, is refused.
    for audience in [Audience::Coalition, Audience::Private] {
        let r = record::sign(
            &a,
            1,
            None,
            Draft {
                schema: SEALED_SCHEMA.into(),
                audience,
                supersedes: None,
                epoch: None,
                payload: sealed.payload.clone(),
                created_at_ms: 1,
            },
        );
        let err = check::prepare(&r.bytes).unwrap_err();
        assert!(matches!(err, IngestError::SealedAudience(_)), "{err}");
    }
    // A malformed envelope is refused at the door.
    let r = sealed_record(&a, 1, b"{\"not\":\"sealed\"}".to_vec(), &[&b]);
    assert!(matches!(
        check::prepare(&r.bytes),
        Err(IngestError::Sealed(SealError::Malformed(_)))
    ));
}

#[test]
fn seal_refuses_what_may_not_be_sealed() {
    let (a, b) = (org(1), org(2));
    let rs = [recipient(&a), recipient(&b)];
    for schema in [
        GRANT_SCHEMA,
        ENCRYPTION_KEY_SCHEMA,
        "charter/v1",
        "node-cert/v1",
        SEALED_SCHEMA,
    ] {
        let err = seal(&a.key(), schema, b"{}", &rs).unwrap_err();
        assert!(
            matches!(err, SealError::NotSealable { .. }),
            "{schema}: {err}"
        );
    }
    let err = seal(&a.key(), FINDING_SCHEMA, b"{}", &[rs[0], rs[1], rs[1]]).unwrap_err();
    assert!(matches!(err, SealError::DuplicateRecipient { .. }), "{err}");
    let err = seal(&a.key(), FINDING_SCHEMA, b"{}", &rs[1..]).unwrap_err();
    assert!(matches!(err, SealError::AuthorNotRecipient { .. }), "{err}");
    assert!(err.to_string().contains("include the author"), "{err}");
    let err = seal(&a.key(), FINDING_SCHEMA, b"{}", &[]).unwrap_err();
    assert!(matches!(err, SealError::WrapCount { .. }), "{err}");
    let many: Vec<Recipient> = (0..=MAX_WRAPS as u16)
        .map(|i| {
            let mut seed = [1u8; 32];
            seed[..2].copy_from_slice(&i.to_le_bytes());
            Recipient {
                org: Identity::from_seed(&seed).key(),
                key: b.encryption_key(),
            }
        })
        .collect();
    let err = seal(&a.key(), FINDING_SCHEMA, b"{}", &many).unwrap_err();
    assert!(
        matches!(err, SealError::WrapCount { count, .. } if count == MAX_WRAPS + 1),
        "{err}"
    );
    // A small-order encryption key cannot be sealed to.
    let zero = Recipient {
        org: b.key(),
        key: EncryptionKey([0; 32]),
    };
    let err = seal(&a.key(), FINDING_SCHEMA, b"{}", &[rs[0], zero]).unwrap_err();
    assert!(matches!(err, SealError::UnusableKey { .. }), "{err}");
}

#[test]
fn parse_refuses_malformed_envelopes() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let good = envelope(&r);
    let malformed = |s: &pb::Sealed| parse(&s.encode_to_vec()).unwrap_err();
    // Trailing unknown field: not canonical.
    let mut padded = r.payload.clone();
    padded.extend_from_slice(&[0x1a, 0x01, 0x00]);
    assert!(matches!(parse(&padded), Err(SealError::Malformed(m)) if m.contains("canonical")));
    // Fields out of order: ciphertext before the keys.
    let mut reordered = Vec::new();
    prost::encoding::bytes::encode(2, &good.ciphertext.to_vec(), &mut reordered);
    for k in &good.keys {
        prost::encoding::message::encode(1, k, &mut reordered);
    }
    assert!(matches!(parse(&reordered), Err(SealError::Malformed(_))));
    // Wrong sizes, one field at a time.
    for field in 0..4 {
        let mut s = good.clone();
        let k = &mut s.keys[0];
        let f = match field {
            0 => &mut k.recipient,
            1 => &mut k.encryption_key,
            2 => &mut k.enc,
            _ => &mut k.wrapped,
        };
        *f = f[..f.len() - 1].to_vec().into();
        assert!(
            matches!(malformed(&s), SealError::Malformed(_)),
            "field {field}"
        );
    }
    // An invalid organisation key as recipient.
    let mut s = good.clone();
    s.keys[0].recipient = vec![0u8; 32].into();
    assert!(matches!(malformed(&s), SealError::Malformed(m) if m.contains("recipient")));
    // The same recipient twice.
    let mut s = good.clone();
    s.keys.push(s.keys[0].clone());
    assert!(matches!(
        malformed(&s),
        SealError::DuplicateRecipient { .. }
    ));
    // No wraps, too many wraps, too short a ciphertext.
    let mut s = good.clone();
    s.keys.clear();
    assert!(matches!(
        malformed(&s),
        SealError::WrapCount { count: 0, .. }
    ));
    let mut s = good.clone();
    s.keys = vec![good.keys[0].clone(); MAX_WRAPS + 1];
    assert!(matches!(malformed(&s), SealError::WrapCount { .. }));
    let mut s = good.clone();
    s.ciphertext = vec![0u8; MIN_CIPHERTEXT_BYTES - 1].into();
    assert!(matches!(malformed(&s), SealError::Malformed(m) if m.contains("ciphertext")));
    assert!(parse(b"\xff\xff\xff").is_err());
    // Half a million empty wraps in 1 MiB are counted, not decoded.
    let mut flood = [0x0a, 0x00].repeat(1 << 19);
    prost::encoding::bytes::encode(2, &vec![0u8; 32], &mut flood);
    assert!(matches!(parse(&flood), Err(SealError::WrapCount { count, .. }) if count == 1 << 19));
    // A length past the end, and a varint field, are malformed.
    assert!(matches!(
        parse(&[0x0a, 0x05, 0x00]),
        Err(SealError::Malformed(_))
    ));
    assert!(matches!(parse(&[0x08, 0x01]), Err(SealError::Malformed(_))));
}

#[test]
fn opened_content_must_be_canonical_and_sealable() {
    let (a, b) = (org(1), org(2));
    let key = ContentKey::generate();
    let seal_content = |plain: Vec<u8>| -> Vec<u8> {
        ChaCha20Poly1305::new(key.as_bytes().into())
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &plain,
                    aad: &content_aad(&a.key()),
                },
            )
            .unwrap()
    };
    let record_with = |ct: Vec<u8>| {
        let keys = [recipient(&a), recipient(&b)]
            .iter()
            .map(|r| wrap_for(&a.key(), &key, &ct, r).unwrap().to_proto())
            .collect();
        sealed_record(
            &a,
            1,
            pb::Sealed {
                keys,
                ciphertext: ct.into(),
            }
            .encode_to_vec(),
            &[&b],
        )
    };
    // A grant smuggled inside a sealed record.
    let grant = pb::SealedContent {
        schema: GRANT_SCHEMA.into(),
        payload: b"{}".to_vec().into(),
    };
    let r = record_with(seal_content(grant.encode_to_vec()));
    let err = open(&r, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadContent { .. }), "{err}");
    // Content with a trailing unknown field.
    let mut padded = pb::SealedContent {
        schema: FINDING_SCHEMA.into(),
        payload: b"{}".to_vec().into(),
    }
    .encode_to_vec();
    padded.extend_from_slice(&[0x1a, 0x00]);
    let r = record_with(seal_content(padded));
    let err = open(&r, &b.key(), b.encryption_secrets()).unwrap_err();
    assert!(matches!(err, OpenError::BadContent { .. }), "{err}");
    // Not a sealed record at all.
    let clear = record::sign(
        &a,
        1,
        None,
        Draft {
            schema: FINDING_SCHEMA.into(),
            audience: Audience::members(vec![b.key()]),
            supersedes: None,
            epoch: None,
            payload: finding_payload(),
            created_at_ms: 1,
        },
    );
    assert!(matches!(
        open(&clear, &b.key(), b.encryption_secrets()),
        Err(OpenError::NotSealed { .. })
    ));
}

#[test]
fn prepare_opened_validates_the_inner_payload_as_for_a_clear_record() {
    let (a, b) = (org(1), org(2));
    let r = seal_finding(&a, &[&b]);
    let target = RecordId([7; 32]);
    let annex = to_payload(&annex_payload(
        &target,
        &serde_json::json!({"notes": MARKER}),
    ));
    let p = check::prepare_opened(r.clone(), ANNEX_SCHEMA, &annex).unwrap();
    assert_eq!(p.subject, Some(target));
    assert!(p.finding.is_none());
    assert!(matches!(
        check::prepare_opened(r.clone(), FINDING_SCHEMA, b"{\"title\":\"x\"}"),
        Err(IngestError::Schema(_))
    ));
    assert!(matches!(
        check::prepare_opened(r.clone(), GRANT_SCHEMA, b"{}"),
        Err(IngestError::Sealed(SealError::NotSealable { .. }))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever the payload and the audience, every recipient reads back exactly what was
    /// sealed, and the envelope parses to one wrap per recipient.
    #[test]
    fn seal_open_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2000), n in 1usize..5) {
        let author = org(100);
        let members: Vec<Identity> = (0..n).map(|i| org(101 + i as u8)).collect();
        let mut rs: Vec<Recipient> = members.iter().map(recipient).collect();
        rs.insert(0, recipient(&author));
        let sealed = seal(&author.key(), ANNEX_SCHEMA, &payload, &rs).unwrap();
        let refs: Vec<&Identity> = members.iter().collect();
        let r = sealed_record(&author, 1, sealed.payload, &refs);
        let view = parse(&r.payload).unwrap();
        prop_assert_eq!(view.keys.len(), n + 1);
        // The sizes FORMATS §6 gives: 155 bytes a wrap; the ciphertext is the encoded
        // SealedContent and a 16-byte tag.
        let content = pb::SealedContent { schema: ANNEX_SCHEMA.into(), payload: payload.clone().into() };
        prop_assert_eq!(view.ciphertext.len(), content.encoded_len() + 16);
        let ct_field = 1 + prost::encoding::encoded_len_varint(view.ciphertext.len() as u64)
            + view.ciphertext.len();
        prop_assert_eq!(r.payload.len(), 155 * (n + 1) + ct_field);
        for who in members.iter().chain([&author]) {
            let opened = open(&r, &who.key(), who.encryption_secrets()).unwrap();
            prop_assert_eq!(&opened.schema, ANNEX_SCHEMA);
            prop_assert_eq!(&opened.payload, &payload);
            prop_assert_eq!(opened.content_key.as_bytes(), sealed.content_key.as_bytes());
        }
    }
}

proptest! {
    /// Any bytes at all: `parse` answers without panicking, and what it accepts encodes
    /// back to exactly those bytes.
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(view) = parse(&bytes) {
            let again = pb::Sealed {
                keys: view.keys.iter().map(WrappedKey::to_proto).collect(),
                ciphertext: view.ciphertext.clone().into(),
            };
            prop_assert_eq!(again.encode_to_vec(), bytes);
        }
    }
}
