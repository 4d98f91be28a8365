//! What a node does today with a sealed record it receives (issue 16, format layer): it
//! checks the author's signature and the envelope without any key, stores it, shows,
//! exports and verifies it, and never reads it. A sealed record that wraps a key for an
//! organisation outside its audience is refused. Opening on arrival comes with the node
//! integration of sealed records.

use crate::bundle::Reader;
use crate::finding::{to_payload, FINDING_SCHEMA};
use crate::identity::Identity;
use crate::net::test_support::{two_members, TwoMembers};
use crate::record::{self, Audience, Draft, Record};
use crate::sealed::{self, Recipient, SEALED_SCHEMA};

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
