//! Sealed records on a node (issue 16). Without the key (a relay, or a node whose key
//! file is not unlocked) it checks the author's signature and the envelope, stores,
//! shows, exports and verifies the record, and never reads it; a recipient opens it on
//! arrival and indexes its content. A sealed record that wraps a key for an organisation
//! outside its audience, or outside the membership, is refused. Authoring seals every
//! record for chosen members, to each member's current published key, and refuses
//! members without one and organisations that are not members.

use crate::bundle::Reader;
use crate::finding::FindingInput;
use crate::finding::{to_payload, FINDING_SCHEMA};
use crate::identity::Identity;
use crate::net::test_support::{two_members, TwoMembers};
use crate::record::{self, Audience, Draft, Record};
use crate::sealed::{
    self, encryption_key_payload, Recipient, ENCRYPTION_KEY_SCHEMA, SEALED_SCHEMA,
};

const MARKER: &str = "SEALED-MARKER-a7c9e1";

fn recipient(id: &Identity) -> Recipient {
    Recipient {
        org: id.key(),
        key: id.encryption_key(),
    }
}

/// A finding whose summary carries [`MARKER`], sealed by `author` for `readers`, with
/// audience `audience`.
fn sealed_finding(
    author: &Identity,
    readers: &[&Identity],
    audience: Audience,
    epoch: [u8; 32],
) -> Record {
    let mut finding: serde_json::Value = serde_json::from_str(include_str!(
        "../../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"
    ))
    .unwrap();
    finding["summary"] = format!("Witness named in {MARKER}.").into();
    let mut recipients = vec![recipient(author)];
    recipients.extend(readers.iter().map(|r| recipient(r)));
    let sealed = sealed::seal(
        &author.key(),
        FINDING_SCHEMA,
        &to_payload(&finding),
        &recipients,
    )
    .unwrap();
    record::sign(
        author,
        1,
        None,
        Draft {
            schema: SEALED_SCHEMA.into(),
            audience,
            supersedes: None,
            epoch: Some(epoch),
            payload: sealed.payload,
            created_at_ms: 1,
        },
    )
}

fn holds_marker(bytes: &[u8]) -> bool {
    bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_from_a_member_is_stored_and_served_without_being_read() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    let rec = sealed_finding(&peer, &[&me], Audience::members(vec![me.key()]), epoch);
    assert!(!holds_marker(&rec.bytes), "the marker is sealed");

    let before = node.store().count().await.unwrap();
    let report = node
        .ingest_from_peer(vec![rec.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(report.stored, 1, "{report:?}");
    assert_eq!(node.store().count().await.unwrap(), before + 1);

    // Held as received: same bytes, signature checked again, no finding indexed from it.
    assert_eq!(node.store().record(&rec.id).await.unwrap().bytes, rec.bytes);
    let view = node.show(&rec.id.to_hex()).await.unwrap();
    assert_eq!(view.schema, SEALED_SCHEMA);
    assert!(!holds_marker(view.payload.to_string().as_bytes()));
    let findings = node.store().findings(true).await.unwrap();
    assert!(
        findings.iter().all(|f| f.id != rec.id),
        "not counted unread"
    );

    // An auditor's bundle carries it as it is and every signature verifies.
    let verify = node.verify_store().await.unwrap();
    assert!(verify.ok(), "{verify:?}");
    let path = _dir.path().join("out.coalition");
    node.export_bundle(&path, true, None).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(!holds_marker(&bytes));
    let exported: Vec<_> = Reader::new(std::io::Cursor::new(bytes))
        .unwrap()
        .map(|e| e.unwrap().bytes)
        .collect();
    assert!(
        exported.contains(&rec.bytes),
        "the sealed record is exported as signed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_wrapping_a_key_for_an_outsider_or_altered_in_transit_is_refused() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    let outsider = Identity::from_seed(&[9; 32]);
    let before = node.store().count().await.unwrap();

    // The author lists only A but wraps the content key for an outsider too.
    let leaky = sealed_finding(
        &peer,
        &[&me, &outsider],
        Audience::members(vec![me.key()]),
        epoch,
    );
    // A relay flips one ciphertext byte of an honest sealed record.
    let honest = sealed_finding(&peer, &[&me], Audience::members(vec![me.key()]), epoch);
    let mut altered = honest.bytes.clone();
    let last = altered.len() - 70;
    altered[last] ^= 1;

    let report = node
        .ingest_from_peer(vec![leaky.bytes.clone(), altered])
        .await
        .unwrap();
    assert_eq!(report.stored, 0, "{report:?}");
    assert_eq!(report.failures.len(), 2, "{report:?}");
    let reasons: Vec<&str> = report.failures.iter().map(|f| f.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("neither its author nor in its audience")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("signature")),
        "{reasons:?}"
    );
    assert_eq!(node.store().count().await.unwrap(), before);
}

/// `who`'s `encryption-key/v1` record publishing its current key, as chain record `seq`.
fn key_record(who: &Identity, seq: u64, prev: Option<record::RecordId>, epoch: [u8; 32]) -> Record {
    record::sign(
        who,
        seq,
        prev,
        Draft {
            schema: ENCRYPTION_KEY_SCHEMA.into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: Some(epoch),
            payload: encryption_key_payload(&who.encryption_key()),
            created_at_ms: seq as i64,
        },
    )
}

/// An example finding whose summary carries [`MARKER`], as `finding add` reads it.
fn marked_input() -> FindingInput {
    let mut finding: serde_json::Value = serde_json::from_str(include_str!(
        "../../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"
    ))
    .unwrap();
    finding["summary"] = format!("Witness named in {MARKER}.").into();
    FindingInput::parse(finding.to_string().as_bytes(), "marked.json").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_sealed_for_this_organisation_is_opened_on_arrival_and_indexed() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    node.hold_keys(&me);
    let rec = sealed_finding(&peer, &[&me], Audience::members(vec![me.key()]), epoch);
    let report = node
        .ingest_from_peer(vec![rec.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(report.stored, 1, "{report:?}");

    let view = node.show(&rec.id.to_hex()).await.unwrap();
    assert_eq!(view.schema, FINDING_SCHEMA, "opened: its inner schema");
    assert!(holds_marker(view.payload.to_string().as_bytes()));
    assert!(
        node.store()
            .findings(false)
            .await
            .unwrap()
            .iter()
            .any(|f| f.id == rec.id),
        "indexed as a current finding"
    );
    // Stored as signed: the store verifies, and a bundle carries the ciphertext only.
    assert_eq!(node.store().record(&rec.id).await.unwrap().bytes, rec.bytes);
    assert!(node.verify_store().await.unwrap().ok());
    let path = _dir.path().join("out.coalition");
    node.export_bundle(&path, false, None).await.unwrap();
    assert!(!holds_marker(&std::fs::read(&path).unwrap()));
    // A readable export carries the content for its audience, nothing for others.
    let readable = node.readable(false, Some(me.key())).await.unwrap();
    let listed = readable
        .iter()
        .find(|r| r.id == rec.id)
        .expect("for its audience");
    assert!(holds_marker(&listed.payload), "as the content, readable");
    let outsider = Identity::from_seed(&[9; 32]).key();
    let readable = node.readable(false, Some(outsider)).await.unwrap();
    assert!(readable.iter().all(|r| r.id != rec.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_for_chosen_members_are_sealed_to_their_published_keys() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    let for_peer = Audience::members(vec![peer.key()]);

    // No key published by the peer yet: written unsealed (it then travels only between
    // author and audience, like every unsealed record for chosen members), saying why.
    let unsealed = node
        .add_finding(&me, &marked_input(), for_peer.clone())
        .await
        .unwrap();
    assert!(!unsealed.sealed);
    let why = unsealed.unsealed.expect("why it is not sealed").to_string();
    assert!(why.contains("published no encryption key"), "{why}");
    assert!(why.contains(&peer.key().to_hex()), "{why}");
    let clear = node.store().record(&unsealed.finding).await.unwrap();
    assert_eq!(record::verify(&clear.bytes).unwrap().schema, FINDING_SCHEMA);
    let carried = crate::audience::carried(&clear.schema, &clear.audience);
    assert!(
        !crate::audience::entitled(&me.key(), &carried, &Identity::from_seed(&[9; 32]).key()),
        "an unsealed record for chosen members goes to no one else"
    );
    let before = node.store().count().await.unwrap();
    // An organisation that is not a member gets no key either.
    let outsider = Identity::from_seed(&[9; 32]);
    let err = node
        .add_finding(
            &me,
            &marked_input(),
            Audience::members(vec![outsider.key()]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a member"), "{err}");

    let key1 = key_record(&peer, 1, None, epoch);
    let r = node
        .ingest_from_peer(vec![key1.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(r.stored, 1, "{r:?}");
    let added = node
        .add_finding(&me, &marked_input(), for_peer.clone())
        .await
        .unwrap();
    assert!(added.sealed && added.unsealed.is_none());
    assert_eq!(node.store().count().await.unwrap(), before + 2);
    let stored = node.store().record(&added.finding).await.unwrap();
    assert!(!holds_marker(&stored.bytes), "sealed in the store's bytes");
    let signed = record::verify(&stored.bytes).unwrap();
    assert_eq!(signed.schema, SEALED_SCHEMA);
    assert_eq!(stored.schema, FINDING_SCHEMA, "the author reads its own");
    let opened = sealed::open(&signed, &peer.key(), peer.encryption_secrets()).unwrap();
    assert!(holds_marker(&opened.payload), "the member opens it");
    assert!(
        sealed::open(&signed, &outsider.key(), outsider.encryption_secrets()).is_err(),
        "nobody else does"
    );

    // The member rotates its key: new records are sealed to the new one; the old record
    // still opens with the secret the member kept.
    let mut rotated = Identity::from_seed(&[3; 32]);
    rotated.rotate_encryption_key();
    let key2 = key_record(&rotated, 2, Some(key1.id), epoch);
    let r = node
        .ingest_from_peer(vec![key2.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(r.stored, 1, "{r:?}");
    let newer = node
        .add_finding(&me, &marked_input(), for_peer)
        .await
        .unwrap();
    let newer = record::verify(&node.store().record(&newer.finding).await.unwrap().bytes).unwrap();
    let view = sealed::parse(&newer.payload).unwrap();
    assert_eq!(
        view.key_for(&peer.key()).unwrap().encryption_key,
        rotated.encryption_key(),
        "sealed to the member's newest key"
    );
    assert!(sealed::open(&newer, &peer.key(), rotated.encryption_secrets()).is_ok());
    assert!(sealed::open(&signed, &peer.key(), rotated.encryption_secrets()).is_ok());
    // Without the rotated secret, the new record does not open (and says which key).
    let err = sealed::open(&newer, &peer.key(), peer.encryption_secrets()).unwrap_err();
    assert!(
        err.to_string().contains(&rotated.encryption_key().short()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_giving_a_key_to_a_non_member_is_refused() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    // A dishonest member lists an outsider (say, a member it knows was removed) in the
    // audience and wraps the key for it: the audience rule holds, the membership does not.
    let outsider = Identity::from_seed(&[9; 32]);
    let rec = sealed_finding(
        &peer,
        &[&me, &outsider],
        Audience::members(vec![me.key(), outsider.key()]),
        epoch,
    );
    let before = node.store().count().await.unwrap();
    let report = node
        .ingest_from_peer(vec![rec.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(report.stored, 0, "{report:?}");
    assert!(
        report.failures[0]
            .reason
            .contains("not a member under the epoch"),
        "{report:?}"
    );
    assert_eq!(node.store().count().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_bringing_a_key_opens_a_sealed_record_held_unread() {
    let TwoMembers {
        _dir,
        node,
        me,
        peer,
        epoch,
    } = two_members().await;
    node.hold_keys(&me);
    // The author lists this organisation but wraps the key for itself only: held unread.
    let rec = sealed_finding(&peer, &[], Audience::members(vec![me.key()]), epoch);
    let r = node
        .ingest_from_peer(vec![rec.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(r.stored, 1, "{r:?}");
    assert_eq!(
        node.show(&rec.id.to_hex()).await.unwrap().schema,
        SEALED_SCHEMA
    );

    let view = sealed::parse(&rec.payload).unwrap();
    let own = sealed::open(&rec, &peer.key(), peer.encryption_secrets()).unwrap();
    let grant_with = |wrap: sealed::WrappedKey, seq: u64, prev| {
        let payload = serde_json::json!({
            "record": rec.id.to_hex(),
            "audience": Audience::members(vec![me.key()]).to_json(),
            "keys": [wrap.to_json()],
        });
        record::sign(
            &peer,
            seq,
            prev,
            Draft {
                schema: crate::finding::GRANT_SCHEMA.into(),
                audience: Audience::members(vec![me.key()]),
                supersedes: None,
                epoch: Some(epoch),
                payload: to_payload(&payload),
                created_at_ms: seq as i64,
            },
        )
    };
    // A forged wrap (made for another record's key) opens nothing and changes nothing.
    let other = sealed_finding(&peer, &[&me], Audience::members(vec![me.key()]), epoch);
    let forged = sealed::parse(&other.payload)
        .unwrap()
        .key_for(&me.key())
        .unwrap()
        .clone();
    let bad = grant_with(forged, 2, Some(rec.id));
    let r = node
        .ingest_from_peer(vec![bad.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(r.stored, 1, "the grant itself is valid: {r:?}");
    assert_eq!(
        node.show(&rec.id.to_hex()).await.unwrap().schema,
        SEALED_SCHEMA
    );

    let wrap = sealed::wrap_for(
        &peer.key(),
        &own.content_key,
        &view.ciphertext,
        &recipient(&me),
    )
    .unwrap();
    let grant = grant_with(wrap, 3, Some(bad.id));
    let r = node
        .ingest_from_peer(vec![grant.bytes.clone()])
        .await
        .unwrap();
    assert_eq!(r.stored, 1, "{r:?}");
    let shown = node.show(&rec.id.to_hex()).await.unwrap();
    assert_eq!(shown.schema, FINDING_SCHEMA, "opened with the granted key");
    assert!(holds_marker(shown.payload.to_string().as_bytes()));
    assert!(node
        .store()
        .findings(false)
        .await
        .unwrap()
        .iter()
        .any(|f| f.id == rec.id));
    assert!(node.verify_store().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_encryption_key_keeps_the_old_secret_and_publishes_the_new_key() {
    let TwoMembers { _dir, node, me, .. } = two_members().await;
    let mut me = me;
    let first = me.encryption_key();
    node.publish_encryption_key(&me).await.unwrap();
    assert_eq!(
        node.encryption_key_of(&me.key()).await.unwrap(),
        Some(first)
    );
    assert_eq!(
        node.publish_encryption_key(&me).await.unwrap(),
        None,
        "once"
    );

    node.rotate_encryption_key(&mut me, "passphrase-1")
        .await
        .unwrap();
    let current = node.encryption_key_of(&me.key()).await.unwrap().unwrap();
    assert_ne!(current, first);
    assert_eq!(current, me.encryption_key());
    // The key file holds the new secret first and the old one after it.
    let reloaded = node.unlock("passphrase-1").unwrap();
    assert_eq!(reloaded.encryption_key(), current);
    assert_eq!(reloaded.encryption_secrets().len(), 2);
    assert_eq!(
        sealed::key::public(&reloaded.encryption_secrets()[1]),
        first
    );
}
