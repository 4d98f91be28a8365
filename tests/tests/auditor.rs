//! The auditor's journey: a member exports a bundle, an auditor verifies it offline with
//! no Coalition home, another member imports it; exports for spreadsheets parse.

use std::collections::BTreeSet;

use coalition_tests::{parse_jsonl, verify_offline, Org};

/// Org A with: two coalition findings, one coalition finding with a private annex, one
/// private finding. Returns (org, coalition finding ids, private finding id).
fn org_a() -> (Org, BTreeSet<String>, String) {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let shared = BTreeSet::from([
        a.add_example("02-rs-novi-sad-student-detention.json", "coalition"),
        a.add_example("05-rs-nis-roma-children-profiling.json", "coalition"),
        a.add_example("01-rs-belgrade-protest-force.json", "coalition"),
    ]);
    let private = a.add_example("03-rs-presevo-checkpoint-harassment.json", "private");
    (a, shared, private)
}

#[test]
fn bundle_verifies_offline_and_carries_no_private_record_or_annex() {
    let (a, shared, private) = org_a();
    // Four findings and one annex in the store.
    assert_eq!(a.all_records().len(), 5);

    let bundle = a.export("bundle", "a.bundle", &[]);
    let (out, report) = verify_offline(&bundle);
    out.ok();
    assert_eq!(report["checked"], 3, "{report}");
    assert_eq!(report["valid"], 3, "{report}");
    assert_eq!(report["failures"], serde_json::json!([]));
    assert_eq!(report["authors"][a.key()], 3, "{report}");

    // The human form, from a directory with no home at all, and that stays so.
    let auditor = Org::empty();
    let human = auditor.run_env(["verify".as_ref(), bundle.as_os_str()], &[]);
    human.ok().says(&["OK", "3 records"]);
    assert!(
        !auditor.home().exists(),
        "verify created a home at {}",
        auditor.home().display()
    );

    // What another member receives: exactly the shared findings, nothing private.
    let b = Org::init("Safety Forum Prizren", "XK");
    let imported = b.import(&bundle);
    imported.ok();
    let r = imported.json();
    assert_eq!(r["read"], 3, "{r}");
    assert_eq!(r["stored"], 3, "{r}");
    assert_eq!(r["failures"], serde_json::json!([]));
    let received = b.all_records();
    let ids: BTreeSet<String> = received
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, shared);
    assert!(!ids.contains(&private));
    for rec in &received {
        assert_eq!(rec["schema"], "finding/v1", "{rec}");
        assert_eq!(rec["audience"]["kind"], "coalition", "{rec}");
        assert_eq!(rec["author"], a.key());
    }
    // B sees A's findings as A's, signature valid, not its own.
    let any = shared.iter().next().unwrap();
    let view = b.show(any);
    assert_eq!(view["author"], a.key());
    assert_eq!(view["own"], false);
    assert!(view["signature"].as_str().unwrap().starts_with("valid"));
    b.run(["verify"]).ok().says(&["OK"]);

    // A backup with --include-private has everything, and also verifies.
    let backup = a.export("bundle", "backup.bundle", &["--include-private"]);
    let (out, report) = verify_offline(&backup);
    out.ok();
    assert_eq!(report["valid"], 5, "{report}");
}

#[test]
fn importing_twice_stores_nothing_new() {
    let (a, shared, _) = org_a();
    let bundle = a.export("bundle", "a.bundle", &[]);
    let b = Org::init("Safety Forum Prizren", "XK");

    let first = b.import(&bundle);
    first.ok();
    assert_eq!(first.json()["stored"], 3);
    let after_first = b.snapshot();

    let second = b.import(&bundle);
    second.ok();
    let r = second.json();
    assert_eq!(r["read"], 3, "{r}");
    assert_eq!(r["stored"], 0, "{r}");
    assert_eq!(r["duplicates"], 3, "{r}");
    assert_eq!(b.snapshot(), after_first);

    // The human report says the same.
    b.run(["import".as_ref(), bundle.as_os_str()]).ok().says(&[
        "0 stored",
        "3 already held",
        "0 refused",
    ]);
    assert_eq!(b.listed_ids(false), shared);

    // Importing one's own records back is also a no-op.
    let own = a.snapshot();
    let back = a.import(&bundle);
    back.ok();
    assert_eq!(back.json()["stored"], 0);
    assert_eq!(a.snapshot(), own);
}

#[test]
fn jsonl_and_csv_exports_parse() {
    let (a, shared, private) = org_a();

    let jsonl = a.export("jsonl", "a.jsonl", &[]);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let records = parse_jsonl(&text);
    assert_eq!(records.len(), 3, "{text}");
    let ids: BTreeSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, shared);
    for r in &records {
        assert_eq!(r["author"], a.key());
        assert_eq!(r["schema"], "finding/v1");
        assert!(r["payload"]["title"].is_string(), "{r}");
        assert!(r["payload"].get("sensitive").is_none(), "{r}");
    }

    let csv_path = a.export("csv", "a.csv", &[]);
    let mut reader = csv::Reader::from_path(&csv_path).expect("open csv");
    let header = reader.headers().expect("csv header").clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let id_col = col("record_id").expect("a record_id column");
    let author = col("author").expect("an author column");
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("every csv row parses");
    assert_eq!(rows.len(), 3);
    let csv_ids: BTreeSet<String> = rows.iter().map(|r| r[id_col].to_string()).collect();
    assert_eq!(csv_ids, shared);
    assert!(!csv_ids.contains(&private));
    for r in &rows {
        assert_eq!(r.len(), header.len());
        assert_eq!(&r[author], a.key());
    }

    // A retracted finding leaves the CSV (one row per current finding) …
    let gone = shared.iter().next().unwrap().clone();
    a.run(["finding", "retract", &gone, "--reason", "test"])
        .ok();
    let csv_path = a.export("csv", "after.csv", &[]);
    let ids: BTreeSet<String> = csv::Reader::from_path(&csv_path)
        .unwrap()
        .records()
        .map(|r| r.unwrap()[id_col].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&gone));
}
