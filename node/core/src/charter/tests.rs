//! Governance rules on a five-member coalition with threshold 3.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::finding::to_payload;
use crate::record::{sign, Audience, Draft, Record, RecordId};

struct Org {
    id: Identity,
    seq: u64,
    prev: Option<RecordId>,
}

impl Org {
    fn new(seed: u8) -> Self {
        Self {
            id: Identity::from_seed(&[seed; 32]),
            seq: 0,
            prev: None,
        }
    }
    fn key(&self) -> OrgKey {
        self.id.key()
    }
    fn card(&self, name: &str) -> Member {
        Member {
            organisation: name.into(),
            country: "RS".into(),
            key: self.key(),
        }
    }
    fn record(&mut self, schema: &str, epoch: Option<[u8; 32]>, payload: Value) -> Record {
        self.seq += 1;
        let r = sign(
            &self.id,
            self.seq,
            self.prev,
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch,
                payload: to_payload(&payload),
                created_at_ms: 0,
            },
        );
        self.prev = Some(r.id);
        r
    }
    fn propose(&mut self, epoch: [u8; 32], change: Change) -> Record {
        self.record(PROPOSAL_SCHEMA, Some(epoch), json!({ "change": change }))
    }
    fn approve(&mut self, epoch: [u8; 32], p: &Record) -> Record {
        self.record(
            APPROVAL_SCHEMA,
            Some(epoch),
            json!({ "proposal": p.id.to_hex() }),
        )
    }
}

/// Five founders, t = 3, and the adopted charter record.
fn coalition() -> (Vec<Org>, Vec<Record>) {
    let mut orgs: Vec<Org> = (1..=5).map(Org::new).collect();
    let members = orgs
        .iter()
        .enumerate()
        .map(|(i, o)| o.card(&format!("Org {i}")))
        .collect();
    let mut sc = SignedCharter::draft("Balkan Watch", 3, members, false, 0).unwrap();
    for o in &orgs {
        sc.sign(&o.id).unwrap();
    }
    let charter = orgs[0].record(CHARTER_SCHEMA, None, serde_json::to_value(&sc).unwrap());
    (orgs, vec![charter])
}

/// A threshold change that does not need the low-threshold acknowledgement.
fn threshold(threshold: u32) -> Change {
    Change::Threshold {
        threshold,
        low_threshold_acknowledged: false,
    }
}

fn fold(records: &[Record]) -> Membership {
    Membership::fold(records, None)
        .unwrap()
        .expect("charter present")
}

#[test]
fn charter_needs_every_founder_and_a_majority() {
    let orgs: Vec<Org> = (1..=5).map(Org::new).collect();
    let members: Vec<Member> = orgs
        .iter()
        .enumerate()
        .map(|(i, o)| o.card(&format!("Org {i}")))
        .collect();
    let err = SignedCharter::draft("c", 2, members.clone(), false, 0).unwrap_err();
    assert!(err.to_string().contains("not a strict majority"), "{err}");
    assert!(SignedCharter::draft("c", 2, members.clone(), true, 0).is_ok());
    assert!(SignedCharter::draft("c", 6, members.clone(), false, 0).is_err());
    let mut sc = SignedCharter::draft("c", 3, members, false, 0).unwrap();
    for o in &orgs[..4] {
        sc.sign(&o.id).unwrap();
    }
    assert!(sc.check().unwrap_err().to_string().contains("missing"));
    assert!(
        sc.sign(&Identity::from_seed(&[99; 32])).is_err(),
        "non-founder signed"
    );
    sc.sign(&orgs[4].id).unwrap();
    sc.check().unwrap();
    // Any edit after signing breaks every signature.
    sc.charter.threshold = 4;
    assert_eq!(sc.missing().len(), 5);
}

#[test]
fn two_approvals_change_nothing_three_do() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let newcomer = Org::new(6);
    let p = o[0].propose(
        e0,
        Change::Add {
            member: newcomer.card("New"),
            low_threshold_acknowledged: true,
        },
    );
    recs.push(p.clone());
    recs.push(o[1].approve(e0, &p));
    let m = fold(&recs);
    assert_eq!(m.current().epoch, e0, "two approvals applied a change");
    assert_eq!(m.pending.len(), 1);
    recs.push(o[2].approve(e0, &p));
    let m = fold(&recs);
    assert_ne!(m.current().epoch, e0);
    assert!(m.current().is_member(&newcomer.key()));
    assert_eq!(m.applied[0].approvers.len(), 3);
}

#[test]
fn an_add_that_leaves_no_majority_needs_acknowledgement() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let p = o[0].propose(
        e0,
        Change::Add {
            member: Org::new(6).card("Six"),
            low_threshold_acknowledged: false,
        },
    );
    let a = [
        o[1].approve(e0, &p),
        o[2].approve(e0, &p),
        o[3].approve(e0, &p),
    ];
    recs.push(p);
    recs.extend(a);
    let m = fold(&recs);
    assert_eq!(m.history.len(), 1, "3 of 6 applied without acknowledgement");
    assert!(m.pending[0]
        .problem
        .as_deref()
        .unwrap_or("")
        .contains("strict majority"));
}

#[test]
fn removed_members_later_records_are_rejected_earlier_ones_valid() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let before = o[4].record("finding/v1", Some(e0), json!({}));
    let removed = o[4].key();
    let p = o[0].propose(
        e0,
        Change::Remove {
            key: removed,
            low_threshold_acknowledged: false,
        },
    );
    let a1 = o[1].approve(e0, &p);
    let a2 = o[2].approve(e0, &p);
    recs.extend([p, a1, a2]);
    let m = fold(&recs);
    let e1 = m.current().epoch;
    let after = o[4].record("finding/v1", Some(e1), json!({}));
    assert!(m.judge(&before).is_ok());
    assert!(m.judge(&after).unwrap_err().contains("not a member"));
    let by_member = o[1].record("finding/v1", Some(e1), json!({}));
    assert!(m.judge(&by_member).is_ok());
}

#[test]
fn rotated_key_is_retired_from_the_rotation_epoch() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let mut fresh = Org::new(42);
    let old = o[3].key();
    let p = o[3].propose(
        e0,
        Change::Rotate {
            old,
            new: fresh.card("Org 3"),
        },
    );
    let a1 = o[0].approve(e0, &p);
    let a2 = o[1].approve(e0, &p);
    let old_before = o[3].record("finding/v1", Some(e0), json!({}));
    recs.extend([p, a1, a2]);
    let m = fold(&recs);
    let e1 = m.current().epoch;
    assert!(m.judge(&old_before).is_ok());
    assert!(m
        .judge(&o[3].record("finding/v1", Some(e1), json!({})))
        .is_err());
    assert!(m
        .judge(&fresh.record("finding/v1", Some(e1), json!({})))
        .is_ok());
    assert!(m
        .judge(&fresh.record("finding/v1", Some(e0), json!({})))
        .is_err());
    // One organisation, two keys: its witnesses count once.
    let orgs = m.organisations();
    assert_eq!(orgs.of(&fresh.key()), old);
    assert_eq!(orgs.of(&old), old);
    assert_eq!(orgs.of(&o[0].key()), o[0].key());
}

#[test]
fn stale_epoch_proposal_has_no_effect() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let p1 = o[0].propose(e0, threshold(4));
    let a = [o[1].approve(e0, &p1), o[2].approve(e0, &p1)];
    recs.push(p1);
    recs.extend(a);
    let m = fold(&recs);
    assert_eq!(m.current().threshold, 4);
    // A proposal still naming e0 after the change cannot apply, even when members
    // approve it now (their approvals name the current epoch, not the proposal's).
    let e1 = m.current().epoch;
    let stale = o[4].propose(e0, threshold(5));
    let more = [
        o[3].approve(e1, &stale),
        o[0].approve(e1, &stale),
        o[1].approve(e1, &stale),
        o[2].approve(e1, &stale),
    ];
    recs.push(stale.clone());
    recs.extend(more);
    let m2 = fold(&recs);
    assert_eq!(m2.current().threshold, 4);
    assert_eq!(m2.history.len(), 2);
    assert!(m2
        .ignored
        .iter()
        .any(|(id, why)| *id == stale.id && why.contains("stale")));
}

#[test]
fn conflicting_proposals_and_an_equivocating_approver() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let x = Org::new(7);
    let y = Org::new(8);
    let px = o[0].propose(
        e0,
        Change::Add {
            member: x.card("X"),
            low_threshold_acknowledged: true,
        },
    );
    let py = o[1].propose(
        e0,
        Change::Add {
            member: y.card("Y"),
            low_threshold_acknowledged: true,
        },
    );
    // Org 2 approves both: equivocation. Org 3 backs X, so X has 3 and Y has 2.
    let evidence = [o[2].approve(e0, &px), o[2].approve(e0, &py)];
    let a3 = o[3].approve(e0, &px);
    recs.extend([px.clone(), py.clone(), a3]);
    recs.extend(evidence.clone());
    let m = fold(&recs);
    assert!(m.current().is_member(&x.key()));
    assert!(
        !m.current().is_member(&y.key()),
        "both conflicting changes applied"
    );
    assert_eq!(m.equivocations.len(), 1);
    assert_eq!(m.equivocations[0].member, o[2].key());
    assert_eq!(m.equivocations[0].evidence.len(), 2);
}

#[test]
fn forged_and_non_member_approvals_are_ignored() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let p = o[0].propose(e0, threshold(4));
    let mut outsider = Org::new(66);
    let a_out = outsider.approve(e0, &p);
    let a1 = o[1].approve(e0, &p);
    // A forged approval "by" org 2: signed by the outsider, claiming org 2's key.
    let mut forged_bytes = o[2].approve(e0, &p).bytes;
    let n = forged_bytes.len();
    forged_bytes[n - 1] ^= 1;
    assert!(
        crate::record::verify(&forged_bytes).is_err(),
        "forgery must not verify"
    );
    recs.extend([p, a_out.clone(), a1]);
    let m = fold(&recs);
    assert_eq!(m.current().threshold, 3, "outsider approval counted");
    assert!(m.ignored.iter().any(|(id, _)| *id == a_out.id));
    assert!(m.judge(&a_out).is_err());
}

#[test]
fn the_same_member_twice_counts_once() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let p = o[0].propose(e0, threshold(4));
    let twice = [
        o[1].approve(e0, &p),
        o[1].approve(e0, &p),
        o[0].approve(e0, &p),
    ];
    recs.push(p);
    recs.extend(twice);
    assert_eq!(fold(&recs).current().threshold, 3);
}

fn scenario() -> Vec<Record> {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let p = o[0].propose(
        e0,
        Change::Add {
            member: Org::new(9).card("Nine"),
            low_threshold_acknowledged: true,
        },
    );
    let a = [o[1].approve(e0, &p), o[2].approve(e0, &p)];
    recs.push(p);
    recs.extend(a);
    let e1 = fold(&recs).current().epoch;
    let four = o[4].key();
    let q = o[3].propose(
        e1,
        Change::Remove {
            key: four,
            low_threshold_acknowledged: false,
        },
    );
    let b = [o[1].approve(e1, &q), o[0].approve(e1, &q)];
    let r = o[2].propose(e1, threshold(4));
    let c = [o[4].approve(e1, &r), o[1].approve(e1, &r)];
    recs.push(q);
    recs.extend(b);
    recs.push(r);
    recs.extend(c);
    recs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn membership_is_independent_of_arrival_order(seed in any::<u64>(), dup in 0usize..3) {
        let recs = scenario();
        let reference = fold(&recs);
        let mut shuffled = recs.clone();
        // Deterministic Fisher–Yates from the seed, plus some duplicates.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        for i in 0..dup {
            shuffled.push(recs[i % recs.len()].clone());
        }
        let m = fold(&shuffled);
        prop_assert_eq!(m.current(), reference.current());
        prop_assert_eq!(m.history.len(), reference.history.len());
        prop_assert_eq!(m.equivocations.len(), reference.equivocations.len());
    }
}

/// The whole scenario judged offline from a bundle, as an auditor would.
#[test]
fn an_auditor_verifies_membership_offline_from_a_bundle() {
    let (mut o, mut recs) = coalition();
    let e0 = fold(&recs).current().epoch;
    let early = o[4].record("finding/v1", Some(e0), finding());
    let four = o[4].key();
    let p = o[0].propose(
        e0,
        Change::Remove {
            key: four,
            low_threshold_acknowledged: false,
        },
    );
    let a1 = o[1].approve(e0, &p);
    let a2 = o[2].approve(e0, &p);
    recs.extend([early.clone(), p, a1, a2]);
    let e1 = fold(&recs).current().epoch;
    let late = o[4].record("finding/v1", Some(e1), finding());
    let mut outsider = Org::new(77);
    let stranger = outsider.record("finding/v1", Some(e1), finding());
    let fine = o[1].record("finding/v1", Some(e1), finding());
    recs.extend([late.clone(), stranger.clone(), fine]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.bundle");
    let bytes: Vec<Vec<u8>> = recs.iter().map(|r| r.bytes.clone()).collect();
    crate::bundle::write(
        &mut std::fs::File::create(&path).unwrap(),
        Default::default(),
        &bytes,
    )
    .unwrap();
    let report = crate::verify::verify_bundle(&path).unwrap();
    assert_eq!(report.coalition.as_deref(), Some("Balkan Watch"));
    assert_eq!(report.epoch.as_deref(), Some(hex::encode(e1).as_str()));
    let failed: Vec<&str> = report
        .failures
        .iter()
        .filter_map(|f| f.id.as_deref())
        .collect();
    assert_eq!(failed.len(), 2, "{:?}", report.failures);
    assert!(
        failed.contains(&late.id.to_hex().as_str()),
        "the removed member's later record verified"
    );
    assert!(
        failed.contains(&stranger.id.to_hex().as_str()),
        "a non-member's record verified"
    );
    assert!(!failed.contains(&early.id.to_hex().as_str()));
    assert_eq!(report.valid, recs.len() as u64 - 2);
    // Judged by a charter the bundle does not carry, nothing about membership passes.
    let other = crate::verify::verify_bundle_for(&path, Some([9; 32])).unwrap();
    assert!(!other.ok());
}

/// A valid finding: one of the shipped examples.
fn finding() -> Value {
    serde_json::from_str(include_str!(
        "../../../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"
    ))
    .unwrap()
}
