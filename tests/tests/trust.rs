//! What a receiving member can rely on: only an author can supersede its findings,
//! arrival order does not change what is current, equivocation is reported, and records
//! for chosen members reach only them.

use std::collections::BTreeSet;
use std::path::Path;

use coalition::identity::Identity;
use coalition::record::{self, Audience, Draft, Record, RecordId};
use coalition_tests::{bundle_records, example, verify_offline, write_bundle, Org, PASSPHRASE};

/// The compact payload of an example input (it has no sensitive part).
fn finding_payload(name: &str) -> Vec<u8> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example(name)).unwrap()).unwrap();
    assert!(v.get("sensitive").is_none(), "{name} has a sensitive part");
    serde_json::to_vec(&v).unwrap()
}

fn draft(schema: &str, supersedes: Option<RecordId>, payload: Vec<u8>) -> Draft {
    Draft {
        schema: schema.into(),
        audience: Audience::Coalition,
        supersedes,
        epoch: None,
        payload,
        created_at_ms: 1_760_000_000_000,
    }
}

fn id_of(hex: &str) -> RecordId {
    hex.parse().expect("record id")
}

#[test]
fn another_organisation_cannot_correct_or_retract_a_finding_by_signing_records() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let original = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let bundle = a.export("bundle", "a.bundle", &[]);

    // A stranger signs a "correction" and a "retraction" of A's finding.
    let stranger = Identity::from_seed(&[7; 32]);
    let fake_correction = record::sign(
        &stranger,
        1,
        None,
        draft(
            "finding/v1",
            Some(id_of(&original)),
            finding_payload("03-rs-presevo-checkpoint-harassment.json"),
        ),
    );
    let fake_retraction = record::sign(
        &stranger,
        2,
        Some(fake_correction.id),
        draft(
            "retraction/v1",
            Some(id_of(&original)),
            br#"{"reason":"we say it never happened"}"#.to_vec(),
        ),
    );
    let mut records = bundle_records(&bundle);
    records.push(fake_correction.bytes.clone());
    records.push(fake_retraction.bytes.clone());
    let crafted = a.path("crafted.bundle");
    write_bundle(&crafted, &records);

    // The records are validly signed by the stranger, so they verify and are stored…
    verify_offline(&crafted).0.ok();
    let b = Org::init("Safety Forum Prizren", "XK");
    let r = b.import(&crafted);
    r.ok();
    assert_eq!(r.json()["stored"], 3);

    // …but A's finding stays current, unretracted, with no later versions.
    let listed = b.listed_ids(false);
    assert!(
        listed.contains(&original),
        "A's finding was hidden: {listed:?}"
    );
    let view = b.show(&original);
    assert_eq!(view["superseded_by"], serde_json::json!([]), "{view}");
    assert_eq!(view["retracted"], serde_json::Value::Null, "{view}");
    for row in b.list(true) {
        assert_eq!(row["retracted"], false, "{row}");
    }
}

#[test]
fn arrival_order_does_not_change_what_is_current() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let v1 = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let other = a.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let mut edited: serde_json::Value = serde_json::from_slice(
        &std::fs::read(example("02-rs-novi-sad-student-detention.json")).unwrap(),
    )
    .unwrap();
    edited["confidence"] = "high".into();
    let file = a.write("v2.json", edited.to_string());
    let out = a.run([
        "finding".as_ref(),
        "correct".as_ref(),
        v1.as_ref(),
        file.as_os_str(),
    ]);
    out.ok();
    let v2 = out.line();
    a.run(["finding", "retract", &other, "--reason", "duplicate report"])
        .ok();
    let expected_current = a.listed_ids(false);
    assert_eq!(expected_current, BTreeSet::from([v2.clone()]));

    let bundle = a.export("bundle", "a.bundle", &[]);
    let records = bundle_records(&bundle);
    assert_eq!(records.len(), 4, "two findings, a correction, a retraction");

    // Newest first, in one bundle.
    let mut reversed = records.clone();
    reversed.reverse();
    let rev = a.path("reversed.bundle");
    write_bundle(&rev, &reversed);
    let b = Org::init("Safety Forum Prizren", "XK");
    b.import(&rev).ok();
    assert_eq!(b.listed_ids(false), expected_current);
    assert_eq!(b.list(true).len(), 2);

    // One record per bundle, newest first.
    let c = Org::init("Third Org", "MK");
    for (i, r) in reversed.iter().enumerate() {
        let single = a.path(&format!("single-{i}.bundle"));
        write_bundle(&single, std::slice::from_ref(r));
        c.import(&single).ok();
    }
    assert_eq!(c.listed_ids(false), expected_current);
    assert_eq!(c.listed_ids(true), b.listed_ids(true));
    assert_eq!(c.show(&v1)["superseded_by"], serde_json::json!([v2]));
}

#[test]
fn equivocation_is_reported_and_both_records_kept() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let first = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    // A's own key signs a second, different record with the same seq 1.
    let identity =
        Identity::load(&a.home().join("key.enc"), PASSPHRASE).expect("unlock A's key file");
    assert_eq!(identity.key().to_hex(), a.key());
    let fork: Record = record::sign(
        &identity,
        1,
        None,
        draft(
            "finding/v1",
            None,
            finding_payload("03-rs-presevo-checkpoint-harassment.json"),
        ),
    );
    let mut records = bundle_records(&a.export("bundle", "a.bundle", &[]));
    records.push(fork.bytes.clone());
    let forked = a.path("forked.bundle");
    write_bundle(&forked, &records);

    let auditor = Org::empty();
    auditor
        .run_env(["verify".as_ref(), forked.as_os_str()], &[])
        .says(&["WARNING equivocation", a.key(), &first, &fork.id.to_hex()]);
    let (_, report) = verify_offline(&forked);
    assert_eq!(report["evidence"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["evidence"][0]["kind"], "fork", "{report}");

    let b = Org::init("Safety Forum Prizren", "XK");
    b.import(&forked);
    let held = b.snapshot().record_ids;
    assert!(held.contains(&first) && held.contains(&fork.id.to_hex()));
    b.run(["verify"]).says(&["WARNING equivocation"]);
}

#[test]
fn records_for_chosen_members_reach_only_them() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Third Org", "MK");
    let for_b = a.add_example("02-rs-novi-sad-student-detention.json", b.key());
    let public = a.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let view = a.show(&for_b);
    assert_eq!(view["audience"]["kind"], "members");
    assert_eq!(view["audience"]["members"], serde_json::json!([b.key()]));

    let general = a.export("bundle", "general.bundle", &[]);
    let to_b = a.export("bundle", "to-b.bundle", &["--for", b.key()]);
    let to_c = a.export("bundle", "to-c.bundle", &["--for", c.key()]);
    let ids = |p: &Path| -> BTreeSet<String> {
        bundle_records(p)
            .iter()
            .map(|r| RecordId::of(r).to_hex())
            .collect()
    };
    assert_eq!(ids(&general), BTreeSet::from([public.clone()]));
    assert_eq!(ids(&to_c), BTreeSet::from([public.clone()]));
    assert_eq!(ids(&to_b), BTreeSet::from([public, for_b.clone()]));

    b.import(&to_b).ok();
    assert!(b.listed_ids(false).contains(&for_b));

    // An invalid recipient key is a usage error.
    a.run([
        "export",
        "-o",
        a.path("x.bundle").to_str().unwrap(),
        "--for",
        "nothex",
    ])
    .code(2);
    assert!(!a.path("x.bundle").exists());
}

#[test]
fn a_record_listed_twice_in_one_bundle_is_stored_once_and_counted_once() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    a.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let records = bundle_records(&a.export("bundle", "a.bundle", &[]));
    let doubled = a.path("doubled.bundle");
    write_bundle(
        &doubled,
        &[records[0].clone(), records[0].clone(), records[1].clone()],
    );
    verify_offline(&doubled).0.ok();

    let b = Org::init("Safety Forum Prizren", "XK");
    let out = b.import(&doubled);
    out.ok();
    let r = out.json();
    assert_eq!(b.snapshot().record_ids.len(), 2);
    assert_eq!(r["read"], 3, "{r}");
    assert_eq!(r["stored"], 2, "the import report overcounts: {r}");
    assert_eq!(r["duplicates"], 1, "{r}");
}
