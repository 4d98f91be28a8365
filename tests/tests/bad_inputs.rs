//! Bad inputs: every one gets a clear message and a non-zero exit (2 for usage or
//! environment errors, 1 for a failed check), and leaves the store as it was.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use coalition::bundle;
use coalition::identity::Identity;
use coalition::record::{self, Audience, Draft, MAX_RECORD_BYTES};
use coalition_proto::v1::BundleHeader;
use coalition_tests::bundles::{ids, record_span, varint};
use coalition_tests::{bundle_records, example, verify_offline, write_bundle, Org, PASSPHRASE};
use prost::Message;
use serde_json::{json, Value};

const NOVI_SAD: &str = "02-rs-novi-sad-student-detention.json";
const PRESEVO: &str = "03-rs-presevo-checkpoint-harassment.json";
const NIS: &str = "05-rs-nis-roma-children-profiling.json";

// ---------------------------------------------------------------------------------------
// Helpers: read and craft bundles with the library's own types.

/// Org A with three coalition findings, and its exported bundle.
fn org_with_bundle() -> (Org, PathBuf) {
    let a = Org::init("Civic Watch Belgrade", "RS");
    a.add_example(NOVI_SAD, "coalition");
    a.add_example(PRESEVO, "coalition");
    a.add_example(NIS, "coalition");
    let bundle = a.export("bundle", "a.bundle", &[]);
    assert_eq!(bundle_records(&bundle).len(), 3);
    (a, bundle)
}

fn example_value(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(example(name)).unwrap()).unwrap()
}

fn add_args(file: &Path) -> Vec<&OsStr> {
    vec![
        OsStr::new("finding"),
        OsStr::new("add"),
        file.as_os_str(),
        OsStr::new("--share"),
        OsStr::new("coalition"),
    ]
}

// ---------------------------------------------------------------------------------------
// Finding input.

#[test]
fn malformed_json_is_refused_with_its_position() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let existing = org.add_example(NOVI_SAD, "coalition");
    let before = org.snapshot();

    let bad = org.write(
        "broken.json",
        "{\n  \"title\": \"Unfinished\",\n  \"summary\": ,\n}\n",
    );
    org.run(add_args(&bad))
        .code(2)
        .says(&["broken.json", "malformed JSON", "line 3", "column"]);

    // The same input as a correction is refused the same way.
    org.run([
        "finding".as_ref(),
        "correct".as_ref(),
        existing.as_ref(),
        bad.as_os_str(),
    ])
    .code(2)
    .says(&["malformed JSON", "line 3", "column"]);

    // Empty stdin is not a finding either.
    org.run(["finding", "add", "-"])
        .code(2)
        .says(&["stdin", "malformed JSON", "line", "column"]);

    // A file that does not exist.
    org.run(["finding", "add", "no-such-file.json"])
        .code(2)
        .says(&["no-such-file.json"]);

    assert_eq!(org.snapshot(), before);
}

#[test]
fn schema_violations_name_the_field_and_the_rule() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    org.add_example(NOVI_SAD, "coalition");
    let before = org.snapshot();

    let mut v = example_value(PRESEVO);
    v["location"]["country"] = "ZZ".into();
    let f = org.write("bad-country.json", v.to_string());
    org.run(add_args(&f)).code(2).says(&[
        "bad-country.json",
        "finding/v1",
        "/location/country",
        "enum",
    ]);

    let mut v = example_value(PRESEVO);
    v.as_object_mut().unwrap().remove("title");
    let f = org.write("no-title.json", v.to_string());
    org.run(add_args(&f)).code(2).says(&["required", "title"]);

    let mut v = example_value(PRESEVO);
    v["occurred"]["start"] = "12 April 2025".into();
    let f = org.write("bad-date.json", v.to_string());
    org.run(add_args(&f)).code(2).says(&["/occurred/start"]);

    // A malformed sensitive part is refused too, pointing into the input document.
    let mut v = example_value(PRESEVO);
    v["sensitive"] = json!({"victims": "Jelena, Ivan"});
    let f = org.write("bad-sensitive.json", v.to_string());
    org.run(add_args(&f))
        .code(2)
        .says(&["/sensitive/victims", "type"]);

    assert_eq!(org.snapshot(), before);
}

#[test]
fn an_unknown_audience_is_a_usage_error() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let before = org.snapshot();
    org.run([
        "finding".as_ref(),
        "add".as_ref(),
        example(NOVI_SAD).as_os_str(),
        "--share".as_ref(),
        "everyone".as_ref(),
    ])
    .code(2)
    .says(&["everyone"]);
    // Sharing with only oneself is `private`, and is refused as such.
    org.run([
        "finding".as_ref(),
        "add".as_ref(),
        example(NOVI_SAD).as_os_str(),
        "--share".as_ref(),
        org.key().as_ref(),
    ])
    .code(2)
    .says(&["private"]);
    assert_eq!(org.snapshot(), before);
}

// ---------------------------------------------------------------------------------------
// Passphrase and home.

#[test]
fn wrong_or_missing_passphrase_is_refused() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let existing = org.add_example(NOVI_SAD, "private");
    let before = org.snapshot();
    let file = example(PRESEVO);

    let wrong = [("COALITION_PASSPHRASE", Some("not the passphrase at all"))];
    let commands: Vec<Vec<&OsStr>> = vec![
        add_args(&file),
        vec![
            "finding".as_ref(),
            "correct".as_ref(),
            existing.as_ref(),
            file.as_os_str(),
        ],
        vec![
            "finding".as_ref(),
            "retract".as_ref(),
            existing.as_ref(),
            "--reason".as_ref(),
            "x".as_ref(),
        ],
        vec![
            "share".as_ref(),
            existing.as_ref(),
            "--with".as_ref(),
            "coalition".as_ref(),
        ],
    ];
    for args in &commands {
        org.run_env(args, &wrong)
            .code(2)
            .says(&["wrong passphrase", "COALITION_PASSPHRASE"]);
        // No passphrase and no terminal to ask on.
        org.run_env(args, &[])
            .code(2)
            .says(&["passphrase", "COALITION_PASSPHRASE"]);
    }
    assert_eq!(org.snapshot(), before);

    // The right one still works afterwards.
    org.run_env(
        add_args(&file),
        &[("COALITION_PASSPHRASE", Some(PASSPHRASE))],
    )
    .ok();
}

#[test]
fn missing_home_says_to_run_init_and_creates_nothing() {
    let org = Org::empty();
    let file = example(NOVI_SAD);
    let out = org.path("x.bundle");
    let (_, bundle) = org_with_bundle();
    let fake_id = "ab".repeat(32);
    let commands: Vec<Vec<&OsStr>> = vec![
        vec!["finding".as_ref(), "list".as_ref()],
        add_args(&file),
        vec!["finding".as_ref(), "show".as_ref(), fake_id.as_ref()],
        vec!["export".as_ref(), "-o".as_ref(), out.as_os_str()],
        vec!["import".as_ref(), bundle.as_os_str()],
        vec!["verify".as_ref()],
        vec!["identity".as_ref(), "export".as_ref()],
        vec![
            "share".as_ref(),
            fake_id.as_ref(),
            "--with".as_ref(),
            "coalition".as_ref(),
        ],
    ];
    for args in &commands {
        org.run(args)
            .code(2)
            .says(&["no Coalition home", "coalition init"]);
    }
    assert!(!org.home().exists(), "a command created the home");
    assert!(!out.exists(), "export wrote a file without a home");
}

#[test]
fn unknown_record_id_is_reported() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    org.add_example(NOVI_SAD, "coalition");
    let before = org.snapshot();
    org.run(["finding", "show", &"0".repeat(64)])
        .code(2)
        .says(&["no record", "finding list"]);
    org.run(["finding", "show", "abc"])
        .code(2)
        .says(&["at least 8"]);
    org.run([
        "finding".as_ref(),
        "correct".as_ref(),
        "f".repeat(64).as_ref(),
        example(PRESEVO).as_os_str(),
    ])
    .code(2)
    .says(&["no record"]);
    assert_eq!(org.snapshot(), before);
}

// ---------------------------------------------------------------------------------------
// Bundles.

#[test]
fn a_record_with_an_unknown_schema_is_reported_and_the_others_imported() {
    let (a, bundle) = org_with_bundle();
    let mut records = bundle_records(&bundle);
    let stranger = Identity::from_seed(&[42; 32]);
    let future = record::sign(
        &stranger,
        1,
        None,
        Draft {
            schema: "finding/v9".into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: None,
            payload: br#"{"title":"from the future"}"#.to_vec(),
            created_at_ms: 1_750_000_000_000,
        },
    );
    // The record itself is well signed: only its schema is unknown.
    assert!(record::verify(&future.bytes).is_ok());
    records.insert(1, future.bytes.clone());
    let crafted = a.path("future.bundle");
    write_bundle(&crafted, &records);

    let (out, report) = verify_offline(&crafted);
    out.code(1);
    assert_eq!(report["checked"], 4, "{report}");
    assert_eq!(report["valid"], 3, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["index"], 2);
    assert_eq!(failures[0]["id"], future.id.to_hex());
    let reason = failures[0]["reason"].as_str().unwrap();
    assert!(reason.contains("unknown schema"), "{reason}");
    assert!(reason.contains("finding/v9"), "{reason}");
    let auditor = Org::empty();
    auditor
        .run_env(["verify".as_ref(), crafted.as_os_str()], &[])
        .code(1)
        .says(&["FAILED", "record #2", "unknown schema"]);

    let b = Org::init("Safety Forum Prizren", "XK");
    let imported = b.import(&crafted);
    imported.code(1);
    let r = imported.json();
    assert_eq!(r["read"], 4, "{r}");
    assert_eq!(r["stored"], 3, "{r}");
    assert_eq!(r["failures"][0]["index"], 2, "{r}");
    assert!(r["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown schema"));
    let expected: BTreeSet<String> = ids(&bundle_records(&bundle)).into_iter().collect();
    assert_eq!(b.snapshot().record_ids, expected);
    b.run(["import".as_ref(), crafted.as_os_str()])
        .code(1)
        .says(&["record #2", "unknown schema", "1 refused"]);
}

#[test]
fn a_tampered_record_fails_verification_and_only_it_is_refused() {
    let (a, bundle) = org_with_bundle();
    let original = bundle_records(&bundle);
    let mut bytes = std::fs::read(&bundle).unwrap();
    let span = record_span(&bundle, 2);
    bytes[span.start + span.len() / 2] ^= 0x01;
    let tampered = a.write("tampered.bundle", &bytes);

    let (out, report) = verify_offline(&tampered);
    out.code(1);
    assert_eq!(report["valid"], 2, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["index"], 2, "{report}");
    let auditor = Org::empty();
    auditor
        .run_env(["verify".as_ref(), tampered.as_os_str()], &[])
        .code(1)
        .says(&["FAILED", "1 of 3", "record #2"]);

    let b = Org::init("Safety Forum Prizren", "XK");
    let imported = b.import(&tampered);
    imported.code(1);
    let r = imported.json();
    assert_eq!(r["stored"], 2, "{r}");
    assert_eq!(r["failures"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["failures"][0]["index"], 2, "{r}");
    let ids = ids(&original);
    assert_eq!(
        b.snapshot().record_ids,
        BTreeSet::from([ids[0].clone(), ids[2].clone()])
    );
    b.run(["verify"]).ok();

    // The intact bundle then completes B's copy.
    let r = b.import(&bundle);
    r.ok();
    assert_eq!(r.json()["stored"], 1);
}

#[test]
fn a_truncated_bundle_is_reported_and_its_intact_records_importable() {
    let (a, bundle) = org_with_bundle();
    let bytes = std::fs::read(&bundle).unwrap();
    let ids = ids(&bundle_records(&bundle));
    let third = record_span(&bundle, 3);
    let second = record_span(&bundle, 2);
    let first_two: BTreeSet<String> = ids[..2].iter().cloned().collect();

    // Cut inside the last record, inside its length prefix, and between records.
    let cuts = [
        ("mid-record", third.start + third.len() / 2),
        ("mid-prefix", third.start - 1),
        ("boundary", second.end),
    ];
    for (name, cut) in cuts {
        let truncated = a.write(&format!("{name}.bundle"), &bytes[..cut]);
        let (out, report) = verify_offline(&truncated);
        out.code(1);
        assert_eq!(report["valid"], 2, "{name}: {report}");
        let reason = report["failures"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("truncated"), "{name}: {reason}");
        Org::empty()
            .run_env(["verify".as_ref(), truncated.as_os_str()], &[])
            .code(1)
            .says(&["truncated", "record #3"]);

        let b = Org::init("Safety Forum Prizren", "XK");
        let imported = b.import(&truncated);
        imported.code(1);
        let r = imported.json();
        assert_eq!(r["stored"], 2, "{name}: {r}");
        assert!(
            r["failures"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("truncated"),
            "{name}: {r}"
        );
        assert_eq!(b.snapshot().record_ids, first_two, "{name}");
    }

    // Cut inside the header: nothing is readable, and nothing is stored.
    let b = Org::init("Safety Forum Prizren", "XK");
    let before = b.snapshot();
    let header_cut = a.write("header.bundle", &bytes[..10]);
    b.import(&header_cut).code(2).says(&["header"]);
    Org::empty()
        .run_env(["verify".as_ref(), header_cut.as_os_str()], &[])
        .code(2)
        .says(&["header"]);
    assert_eq!(b.snapshot(), before);
}

#[test]
fn a_record_over_the_size_limit_is_refused_without_crashing() {
    let (a, bundle) = org_with_bundle();
    let records = bundle_records(&bundle);
    let ids = ids(&records);
    let first_three: BTreeSet<String> = ids.iter().cloned().collect();

    // (1) A length prefix claiming a terabyte, followed by a few bytes.
    let header = BundleHeader {
        format_version: bundle::FORMAT_VERSION,
        record_count: 4,
        ..Default::default()
    }
    .encode_to_vec();
    let mut bytes = bundle::MAGIC.to_vec();
    bytes.extend(varint(header.len() as u64));
    bytes.extend(&header);
    for r in &records {
        bytes.extend(varint(r.len() as u64));
        bytes.extend(r);
    }
    bytes.extend(varint(1 << 40));
    bytes.extend(b"not a terabyte");
    let huge = a.write("huge.bundle", &bytes);

    // (2) A real record one byte over the limit.
    let mut with_big = records.clone();
    with_big.push(vec![0x0a; MAX_RECORD_BYTES + 1]);
    let big = a.path("big.bundle");
    write_bundle(&big, &with_big);

    for path in [&huge, &big] {
        let (out, report) = verify_offline(path);
        out.code(1);
        assert_eq!(report["valid"], 3, "{report}");
        let failures = report["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{report}");
        assert_eq!(failures[0]["index"], 4, "{report}");
        let reason = failures[0]["reason"].as_str().unwrap();
        assert!(reason.contains("limit"), "{reason}");

        let b = Org::init("Safety Forum Prizren", "XK");
        let imported = b.import(path);
        imported.code(1);
        let r = imported.json();
        assert_eq!(r["stored"], 3, "{r}");
        assert_eq!(r["failures"][0]["index"], 4, "{r}");
        assert_eq!(b.snapshot().record_ids, first_three);
    }
}

#[test]
fn a_file_that_is_not_a_bundle_is_refused() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    org.add_example(NOVI_SAD, "coalition");
    let before = org.snapshot();
    let text = org.write("notes.txt", "these are meeting notes, not a bundle\n");
    org.run(["import".as_ref(), text.as_os_str()])
        .code(2)
        .says(&["not a Coalition bundle", "export --format bundle"]);
    Org::empty()
        .run_env(["verify".as_ref(), text.as_os_str()], &[])
        .code(2)
        .says(&["not a Coalition bundle"]);
    org.run(["import", "does-not-exist.bundle"])
        .code(2)
        .says(&["does-not-exist.bundle"]);
    assert_eq!(org.snapshot(), before);
}

// ---------------------------------------------------------------------------------------
// Another organisation's records.

#[test]
fn only_the_author_can_correct_retract_or_share_a_finding() {
    let (a, bundle) = org_with_bundle();
    let theirs = ids(&bundle_records(&bundle))[0].clone();
    let b = Org::init("Safety Forum Prizren", "XK");
    b.import(&bundle).ok();
    let own = b.add_example("08-xk-prizren-roma-pool.json", "private");
    let before = b.snapshot();

    b.run([
        "finding".as_ref(),
        "correct".as_ref(),
        theirs[..10].as_ref(),
        example(NOVI_SAD).as_os_str(),
    ])
    .code(2)
    .says(&["only its author can", a.key()]);
    b.run(["finding", "retract", &theirs, "--reason", "we disagree"])
        .code(2)
        .says(&["only its author can"]);
    b.run(["share", &theirs, "--with", a.key()])
        .code(2)
        .says(&["only its author can"]);
    assert_eq!(b.snapshot(), before);

    // B's own finding is still B's to change.
    b.run(["finding", "retract", &own, "--reason", "test"]).ok();
}

// ---------------------------------------------------------------------------------------
// A database file that is not a Coalition store.

/// A valid, empty SQLite database (one page) with the given `application_id`.
fn empty_sqlite(application_id: u32) -> Vec<u8> {
    let mut db = vec![0u8; 4096];
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&4096u16.to_be_bytes()); // page size
    db[18] = 1; // write version (legacy)
    db[19] = 1; // read version
    db[21] = 64; // max embedded payload fraction
    db[22] = 32; // min embedded payload fraction
    db[23] = 32; // leaf payload fraction
    db[24..28].copy_from_slice(&1u32.to_be_bytes()); // change counter
    db[28..32].copy_from_slice(&1u32.to_be_bytes()); // pages in the file
    db[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
    db[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
    db[68..72].copy_from_slice(&application_id.to_be_bytes());
    db[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for
    db[96..100].copy_from_slice(&3_045_000u32.to_be_bytes());
    db[100] = 0x0d; // page 1: empty table b-tree leaf
    db[105..107].copy_from_slice(&4096u16.to_be_bytes()); // cell content start
    db
}

#[test]
fn a_database_that_is_not_a_coalition_store_is_refused_and_left_alone() {
    let (_, bundle) = org_with_bundle();
    let variants: [(&str, Vec<u8>); 4] = [
        (
            "garbage",
            b"this is not a database at all, just some bytes\n".repeat(100),
        ),
        ("empty file", Vec::new()),
        ("another application's SQLite", empty_sqlite(0x1234_5678)),
        ("plain SQLite", empty_sqlite(0)),
    ];
    for (what, contents) in variants {
        let org = Org::init("Civic Watch Belgrade", "RS");
        let db = org.home().join("coalition.db");
        std::fs::remove_file(&db).unwrap();
        for suffix in ["-wal", "-shm"] {
            let side = org.home().join(format!("coalition.db{suffix}"));
            if side.exists() {
                std::fs::remove_file(side).unwrap();
            }
        }
        std::fs::File::create(&db)
            .unwrap()
            .write_all(&contents)
            .unwrap();

        let out = org.path("out.bundle");
        let file = example(NOVI_SAD);
        let commands: Vec<Vec<&OsStr>> = vec![
            vec!["finding".as_ref(), "list".as_ref()],
            add_args(&file),
            vec!["import".as_ref(), bundle.as_os_str()],
            vec!["verify".as_ref()],
            vec!["export".as_ref(), "-o".as_ref(), out.as_os_str()],
        ];
        for args in &commands {
            org.run(args)
                .code(2)
                .says(&["not a Coalition store", "coalition.db"]);
            assert_eq!(
                std::fs::read(&db).unwrap(),
                contents,
                "{what}: the file was changed"
            );
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = org.home().join(format!("coalition.db{suffix}"));
            assert!(!side.exists(), "{what}: {} was created", side.display());
        }
        assert!(!out.exists(), "{what}: export wrote a file");
    }
}

#[test]
fn data_after_the_declared_records_is_reported() {
    let (a, bundle) = org_with_bundle();
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes.extend(varint(5));
    bytes.extend(b"extra");
    let longer = a.write("longer.bundle", &bytes);
    let (out, report) = verify_offline(&longer);
    out.code(1);
    assert_eq!(report["valid"], 3, "{report}");
    assert_eq!(report["failures"][0]["index"], 4, "{report}");
    let b = Org::init("Safety Forum Prizren", "XK");
    let r = b.import(&longer);
    r.code(1).says(&["after the 3 declared records"]);
    assert_eq!(r.json()["stored"], 3);
}

#[test]
fn verify_counts_every_declared_record_it_reports() {
    let (a, bundle) = org_with_bundle();
    let bytes = std::fs::read(&bundle).unwrap();
    let third = record_span(&bundle, 3);
    let truncated = a.write("cut.bundle", &bytes[..third.start + 10]);
    let (_, report) = verify_offline(&truncated);
    let failures = report["failures"].as_array().unwrap().len() as u64;
    assert_eq!(
        report["checked"].as_u64().unwrap(),
        report["valid"].as_u64().unwrap() + failures,
        "{report}"
    );
    Org::empty()
        .run_env(["verify".as_ref(), truncated.as_os_str()], &[])
        .code(1)
        .says(&["1 of 3 records"]);
}
