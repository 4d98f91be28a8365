//! Tests of the parts of sealed records that live outside the record: grants that wrap
//! the content key for new members, and published encryption keys.

use super::tests::{finding_payload, org, recipient, seal_finding};
use super::*;
use crate::check::{self, IngestError};
use crate::finding::{to_payload, GRANT_SCHEMA};
use crate::identity::Identity;
use crate::record::{self, Audience, Draft, RecordId};

#[test]
fn a_grant_wraps_the_same_content_key_for_a_new_member() {
    let (a, b, c) = (org(1), org(2), org(3));
    let r = seal_finding(&a, &[&b]);
    // c cannot read it yet.
    assert!(open(&r, &c.key(), c.encryption_secrets()).is_err());
    // The author opens its own record and wraps the content key again for c.
    let own = open(&r, &a.key(), a.encryption_secrets()).unwrap();
    let ct = parse(&r.payload).unwrap().ciphertext;
    let wrap = wrap_for(&a.key(), &own.content_key, &ct, &recipient(&c)).unwrap();
    let grant = serde_json::json!({
        "record": r.id.to_hex(),
        "audience": {"kind": "members", "members": [c.key().to_hex()]},
        "keys": [wrap.to_json()],
    });
    let grant_record = |payload: &serde_json::Value| {
        record::sign(
            &a,
            2,
            Some(r.id),
            Draft {
                schema: GRANT_SCHEMA.into(),
                audience: Audience::members(vec![b.key(), c.key()]),
                supersedes: None,
                epoch: None,
                payload: to_payload(payload),
                created_at_ms: 2,
            },
        )
    };
    check::prepare(&grant_record(&grant).bytes).unwrap();
    // c reads the wrap from the grant and opens the record with it.
    let keys = grant_keys(&grant).unwrap();
    assert_eq!(keys, vec![wrap.clone()]);
    let opened = open_with_wrap(&r, &keys[0], &c.key(), c.encryption_secrets()).unwrap();
    assert_eq!(opened.payload, finding_payload());
    assert_eq!(opened.content_key.as_bytes(), own.content_key.as_bytes());
    // The low-level pair gives the same.
    let k = open_wrap(&a.key(), &ct, &wrap, c.encryption_secrets(), "r").unwrap();
    assert_eq!(
        decrypt(&a.key(), &ct, &k, "r").unwrap().1,
        finding_payload()
    );
    // b cannot use c's wrap.
    assert!(open_with_wrap(&r, &wrap, &b.key(), b.encryption_secrets()).is_err());
    // A grant key for someone the grant does not add is refused; so is one twice.
    let mut outsider = grant.clone();
    outsider["keys"] =
        serde_json::json!([wrap_for(&a.key(), &own.content_key, &ct, &recipient(&b))
            .unwrap()
            .to_json()]);
    assert!(matches!(
        check::prepare(&grant_record(&outsider).bytes),
        Err(IngestError::Sealed(SealError::Malformed(m))) if m.contains("not among")
    ));
    let mut twice = grant.clone();
    twice["keys"] = serde_json::json!([wrap.to_json(), wrap.to_json()]);
    assert!(check::prepare(&grant_record(&twice).bytes).is_err());
    // Old grants, without keys, stay valid.
    let mut old = grant.clone();
    old.as_object_mut().unwrap().remove("keys");
    check::prepare(&grant_record(&old).bytes).unwrap();
    assert!(grant_keys(&old).unwrap().is_empty());
}

#[test]
fn encryption_keys_are_published_and_the_highest_seq_is_current() {
    let (a, mut b) = (org(1), org(2));
    assert_eq!(a.encryption_key(), public(&a.encryption_secrets()[0]));
    assert_ne!(a.encryption_key(), b.encryption_key());
    let hex = a.encryption_key().to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex.parse::<EncryptionKey>().unwrap(), a.encryption_key());
    assert!(hex.to_uppercase().parse::<EncryptionKey>().is_err());
    assert!("00".parse::<EncryptionKey>().is_err());
    let publish = |who: &Identity, seq: u64, key: &EncryptionKey, audience: Audience| {
        record::sign(
            who,
            seq,
            (seq > 1).then_some(RecordId([1; 32])),
            Draft {
                schema: ENCRYPTION_KEY_SCHEMA.into(),
                audience,
                supersedes: None,
                epoch: None,
                payload: encryption_key_payload(key),
                created_at_ms: 1,
            },
        )
    };
    let first = publish(&b, 1, &b.encryption_key(), Audience::Coalition);
    check::prepare(&first.bytes).unwrap();
    assert_eq!(encryption_key_of(&first), Some(b.encryption_key()));
    b.rotate_encryption_key();
    let second = publish(&b, 5, &b.encryption_key(), Audience::Coalition);
    let by_a = publish(&a, 9, &a.encryption_key(), Audience::Coalition);
    let all = [second.clone(), by_a, first.clone()];
    assert_eq!(
        current_encryption_key(&b.key(), &all),
        Some(b.encryption_key())
    );
    assert_eq!(current_encryption_key(&org(3).key(), &all), None);
    // Not for the whole coalition, or a small-order key: refused.
    let narrow = publish(&b, 6, &b.encryption_key(), Audience::members(vec![a.key()]));
    assert!(matches!(
        check::prepare(&narrow.bytes),
        Err(IngestError::EncryptionKey(_))
    ));
    let zero = publish(&b, 7, &EncryptionKey([0; 32]), Audience::Coalition);
    assert!(matches!(
        check::prepare(&zero.bytes),
        Err(IngestError::EncryptionKey(m)) if m.contains("small-order")
    ));
    assert!(b.encryption_key().check_usable());
}
