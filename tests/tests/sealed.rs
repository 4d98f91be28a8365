//! Sealed records end to end (issue 16), with three real member nodes A, B and C.
//!
//! A writes a finding for B alone while B is offline. C, a member outside its audience,
//! receives it (every member may hold and serve a sealed record) and cannot read it: the
//! marker planted in it shows nowhere on C, neither in its API, its CLI, its exports nor
//! any file of its home. B then comes online connected only to C, receives it from C and
//! reads it. The ciphertext C holds verifies in an auditor's bundle. Finally A widens the
//! audience to C with a grant, which brings C the content key, and C reads it.

use std::path::PathBuf;
use std::time::Duration;

use coalition::record::RecordId;
use coalition_tests::node::toml_list;
use coalition_tests::{bundle_records, eventually, example, found, held, verify_offline, Org};
use serde_json::Value;

const MARKER: &str = "SEALED-E2E-3f9d1c";

/// How long the network may take to carry a record between two nodes.
const CONVERGE: Duration = Duration::from_secs(60);

/// An example finding with [`MARKER`] in its title and summary, written into `org`'s
/// directory.
fn marked_input(org: &Org) -> PathBuf {
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(example("02-rs-novi-sad-student-detention.json")).unwrap(),
    )
    .unwrap();
    let title: String = v["title"].as_str().unwrap().chars().take(120).collect();
    v["title"] = Value::String(format!("{MARKER} {title}"));
    v["summary"] = Value::String(format!("{MARKER} {}", v["summary"].as_str().unwrap()));
    v.as_object_mut().unwrap().remove("sensitive");
    org.write("marked.json", v.to_string())
}

fn shows_marker(bytes: &[u8]) -> bool {
    bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
}

/// How many organisations' encryption keys `org`'s store holds.
fn keys_held(org: &Org) -> usize {
    org.all_records()
        .iter()
        .filter(|r| r["schema"] == "encryption-key/v1")
        .count()
}

/// Every file under `org`'s home whose bytes show the marker.
fn files_showing_marker(org: &Org) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![org.home()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| shows_marker(&b)) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_finding_for_an_offline_member_reaches_it_through_a_member_that_cannot_read_it() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Rights Desk Skopje", "MK");
    found("Sealed Coalition", &[&a, &b, &c], 2);

    // Each node publishes its encryption key when it runs, and learns the others'.
    let node_a = a.start_node("a", "bootstrap = []");
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    let node_c = c.start_node("c", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    eventually(
        "every node holds the three encryption keys",
        CONVERGE,
        || [&a, &b, &c].iter().all(|o| keys_held(o) == 3),
    );
    node_b.stop();

    // A writes for B alone while B is offline; C, outside the audience, receives it.
    let id = a.add(&marked_input(&a), b.key());
    eventually("C holds the record for B", CONVERGE, || {
        held(&c).contains(&id)
    });
    node_a.stop();

    // C cannot read it: its API lists no such finding and shows no marker.
    let (status, listing) = node_c.get("/api/v1/findings?limit=500");
    assert_eq!(status, 200);
    assert!(!shows_marker(&listing), "C's API lists the sealed finding");
    let listed: Value = serde_json::from_slice(&listing).unwrap();
    assert!(
        !listed.to_string().contains(&id),
        "C lists a finding it cannot read: {listed}"
    );
    let (_, shown) = node_c.get(&format!("/api/v1/findings/{id}"));
    assert!(!shows_marker(&shown), "C's API shows the marker");
    let (_, agg) = node_c.get("/api/v1/aggregate?group_by=author,country,category");
    assert!(!shows_marker(&agg));

    // B comes online connected only to C, and reads it.
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_c.tcp])));
    eventually("B holds the record, from C", CONVERGE, || {
        held(&b).contains(&id)
    });
    let shown = b.show(&id);
    assert_eq!(shown["schema"], "finding/v1", "{shown}");
    assert!(
        shows_marker(shown.to_string().as_bytes()),
        "B reads it: {shown}"
    );
    let (status, body) = node_b.get(&format!("/api/v1/findings/{id}"));
    assert_eq!(status, 200);
    assert!(shows_marker(&body), "B's API shows what B may read");
    assert!(b.listed_ids(false).contains(&id), "B lists it as a finding");
    node_b.stop();
    node_c.stop();

    // Nothing of it on C: its CLI, its exports (the own backup included) and its files.
    assert!(!c.listed_ids(true).contains(&id));
    let shown = c.show(&id);
    assert_eq!(shown["schema"], "sealed/v1", "{shown}");
    assert!(!shows_marker(shown.to_string().as_bytes()));
    for (format, name, extra) in [
        ("jsonl", "backup.jsonl", &["--include-private"][..]),
        ("jsonl", "published.jsonl", &[][..]),
        ("csv", "published.csv", &[][..]),
        ("geojson", "published.geojson", &[][..]),
    ] {
        let p = c.export(format, name, extra);
        assert!(
            !shows_marker(&std::fs::read(&p).unwrap()),
            "C's {format} export {extra:?} shows the marker"
        );
    }
    assert_eq!(
        files_showing_marker(&c),
        Vec::<String>::new(),
        "C's files hold the plaintext"
    );

    // An auditor verifies the ciphertext C holds, with no key at all.
    let bundle = c.export("bundle", "auditor.bundle", &[]);
    assert!(!shows_marker(&std::fs::read(&bundle).unwrap()));
    let (out, report) = verify_offline(&bundle);
    out.ok();
    assert_eq!(report["failures"], Value::Array(vec![]), "{report}");
    let carried = bundle_records(&bundle)
        .iter()
        .any(|bytes| RecordId::of(bytes).to_hex() == id);
    assert!(carried, "the auditor's bundle carries the sealed record");

    // A widens the audience to C: the grant brings C the content key (the content is
    // not encrypted again), and C reads the copy it already held.
    let grant = a.run(["share", &id, "--with", c.key()]);
    grant.ok();
    let node_a = a.start_node("a", "bootstrap = []");
    let node_c = c.start_node("c", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    let took = eventually("C reads the record once granted", CONVERGE, || {
        c.show(&id)["schema"] == "finding/v1"
    });
    eprintln!(
        "C read the granted record {:.1} s after its node started",
        took.as_secs_f64()
    );
    assert!(shows_marker(c.show(&id).to_string().as_bytes()));
    node_c.stop();
    node_a.stop();
}
