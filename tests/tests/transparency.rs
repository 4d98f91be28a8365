//! Chain integrity with real nodes (issue 17): a member that forks its log, showing one
//! history to some peers and another to others, is exposed on every honest node.
//!
//! M is a member with two homes (as a dishonest operator would keep a second laptop). It
//! writes a different finding in each, both with the same seq, then shows one home to B
//! and the other to C. Honest members sync as usual; within a sync interval every honest
//! node holds both signed records and reports them as a fork: in `coalition status`, the
//! API, `charter show` and `verify`, and an auditor's bundle exported by any of them
//! carries the evidence, which verifies offline.

use std::time::Duration;

use coalition_tests::node::{toml_list, TestNode};
use coalition_tests::{eventually, example, found, held, verify_offline, Org};
use serde_json::Value;

/// How long honest nodes may take to carry both branches of the fork to each other.
const EXPOSED: Duration = Duration::from_secs(60);

/// The forks (author, seq, records) in an `evidence` list as the API and `verify --json`
/// give it.
fn forks(evidence: &Value) -> Vec<(String, u64, Vec<String>)> {
    evidence
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "fork")
        .map(|e| {
            (
                e["author"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
                e["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Whether `evidence` holds the fork of `author` made of exactly `x` and `y`.
fn shows_fork(evidence: &Value, author: &str, x: &str, y: &str) -> bool {
    let mut both = vec![x.to_string(), y.to_string()];
    both.sort();
    forks(evidence)
        .iter()
        .any(|(a, _, records)| a == author && *records == both)
}

#[test]
fn a_member_showing_two_histories_is_exposed_on_every_honest_node() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Rights Desk Skopje", "MK");
    let m = Org::init("Border Monitor Tbilisi", "GE");
    found("Fork Watch", &[&a, &b, &c, &m], 3);
    // The dishonest member's second home: the same key, the same history so far.
    let m2 = m.second_home();

    // Two different findings, both the next record of M's chain.
    let x = m.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let y = m2.add_example("03-rs-presevo-checkpoint-harassment.json", "coalition");
    let seq = |org: &Org, id: &str| org.show(id)["seq"].as_u64().unwrap();
    assert_ne!(x, y);
    assert_eq!(seq(&m, &x), seq(&m2, &y), "both homes signed one seq");

    // Honest nodes: A, with B and C each connected to it.
    let node_a = a.start_node("a", "bootstrap = []");
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    let node_c = c.start_node("c", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    // M shows one history to B and the other to C.
    let _m_to_b = m.start_node("m", &format!("bootstrap = {}", toml_list(&[&node_b.tcp])));
    let _m2_to_c = m2.start_node("m2", &format!("bootstrap = {}", toml_list(&[&node_c.tcp])));

    let author = m.key().to_string();
    let honest = [(&a, &node_a), (&b, &node_b), (&c, &node_c)];
    let took = eventually(
        "every honest node's status shows M's fork with both records",
        EXPOSED,
        || {
            honest.iter().all(|(_, n)| {
                shows_fork(
                    &n.get_json("/api/v1/status")["chain_evidence"],
                    &author,
                    &x,
                    &y,
                )
            })
        },
    );
    eprintln!("fork exposed on every honest node {took:?} after the nodes started");

    for (org, node) in honest {
        // The API's chains, with M's chain as held.
        let chains = node.get_json("/api/v1/chains");
        assert!(shows_fork(&chains["evidence"], &author, &x, &y), "{chains}");
        // What the operator reads.
        org.run(["status"])
            .ok()
            .says(&["WARNING equivocation: fork", &author, &x, &y]);
        org.run(["charter", "show"])
            .ok()
            .says(&["WARNING equivocation: fork", &author, &x, &y]);
        let shown = org.run(["charter", "show", "--json"]).ok().json();
        assert!(shows_fork(&shown["chain_evidence"], &author, &x, &y));
        // `verify` of its store warns, and still exits 0: the records are genuine.
        org.run(["verify"])
            .ok()
            .says(&["WARNING equivocation: fork", &author, &x, &y]);
    }

    // The evidence is portable: an auditor who trusts no node verifies it from a bundle.
    let bundle = b.export("bundle", "evidence.bundle", &[]);
    Org::empty()
        .run(["verify".as_ref(), bundle.as_os_str()])
        .ok()
        .says(&["WARNING equivocation: fork", &author, &x, &y]);
    let (_, report) = verify_offline(&bundle);
    assert!(shows_fork(&report["evidence"], &author, &x, &y), "{report}");
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[test]
fn an_honest_coalition_shows_no_evidence() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    found("Quiet Coalition", &[&a, &b], 2);
    let fa = a.add(&example("01-rs-belgrade-protest-force.json"), "coalition");
    let fb = b.add(
        &example("03-rs-presevo-checkpoint-harassment.json"),
        "coalition",
    );
    let node_a = a.start_node("a", "bootstrap = []");
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    eventually("A and B hold each other's finding", EXPOSED, || {
        held(&a).contains(&fb) && held(&b).contains(&fa)
    });
    for (org, node) in [(&a, &node_a), (&b, &node_b)] {
        let status = node.get_json("/api/v1/status");
        assert_eq!(status["chain_evidence"], Value::Array(vec![]), "{status}");
        let chains = node.get_json("/api/v1/chains");
        assert!(chains["evidence"].as_array().unwrap().is_empty());
        // A node holds its own chain whole; another member's may show gaps where that
        // member keeps private records (its node certificate, say), never evidence.
        let own = chains["authors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["author"] == org.key())
            .expect("its own chain");
        assert!(own["gaps"].as_array().unwrap().is_empty(), "{own}");
        assert_eq!(own["held"], own["highest"], "{own}");
    }
    // A checkpoint of A's log: A, which holds every record it covers, finds that they
    // give its head. So does B, which lacks A's private records (its node certificate):
    // the checkpoint's cover stands in for them.
    let cp = a.run(["checkpoint"]).ok().line();
    let seen = |node: &TestNode| {
        node.get_json("/api/v1/chains")["authors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["author"] == a.key() && c["checkpoint"]["record"] == cp.as_str())
            .map(|c| c["checkpoint"]["matches"].clone())
    };
    assert_eq!(seen(&node_a), Some(Value::Bool(true)));
    eventually("B holds A's checkpoint", EXPOSED, || {
        seen(&node_b).is_some()
    });
    assert_eq!(seen(&node_b), Some(Value::Bool(true)));
    a.run(["verify"])
        .ok()
        .says(&["checkpoint of", a.key(), "the records held give its head"]);
    b.run(["verify"])
        .ok()
        .says(&["checkpoint of", a.key(), "the records held give its head"]);
    assert!(node_b.get_json("/api/v1/chains")["evidence"]
        .as_array()
        .unwrap()
        .is_empty());
    let verify = a.run(["verify"]);
    verify.ok().says(&["OK"]);
    assert!(!verify.all().contains("WARNING"), "{}", verify.all());
}

#[test]
fn a_checkpoint_over_a_history_the_members_were_not_shown_is_exposed() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let m = Org::init("Border Monitor Tbilisi", "GE");
    found("Checkpoint Watch", &[&a, &b, &m], 2);
    let m2 = m.second_home();
    // Home 1 shows the coalition a finding; home 2 puts a private record at the same seq
    // and commits to that history in a checkpoint, whose cover passes that seq off as
    // one members do not receive, hoping nobody compares.
    let shown = m.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let hidden = m2.add_example("03-rs-presevo-checkpoint-harassment.json", "private");
    let cp = m2.run(["checkpoint"]).ok().line();

    let node_a = a.start_node("a", "bootstrap = []");
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    let _m = m.start_node("m", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    let _m2 = m2.start_node("m2", &format!("bootstrap = {}", toml_list(&[&node_b.tcp])));

    let author = m.key().to_string();
    eventually(
        "A and B both find that M's checkpoint hides the record M showed them",
        EXPOSED,
        || {
            [&node_a, &node_b].iter().all(|n| {
                let status = n.get_json("/api/v1/status");
                status["chain_evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| {
                        e["kind"] == "cover_hides"
                            && e["author"] == author.as_str()
                            && e["checkpoint"] == cp.as_str()
                            && e["record"] == shown.as_str()
                    })
            })
        },
    );
    for org in [&a, &b] {
        // The private record never left home 2: the evidence needs no content.
        assert!(!held(org).contains(&hidden));
        assert!(held(org).contains(&shown));
        org.run(["verify"])
            .ok()
            .says(&["hidden record", &author, &cp, &shown]);
    }
    // An auditor given A's bundle sees it too.
    let bundle = a.export("bundle", "evidence.bundle", &[]);
    Org::empty()
        .run(["verify".as_ref(), bundle.as_os_str()])
        .ok()
        .says(&["hidden record", &author, &cp, &shown]);
}

#[test]
fn a_bundle_with_a_record_left_out_fails_the_completeness_check_and_private_records_stay_hidden() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let first = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let private = a.add_example("03-rs-presevo-checkpoint-harassment.json", "private");
    let left_out = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let last = a.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let cp = a.run(["checkpoint"]).ok().line();

    // The whole bundle: complete, and the checkpoint checks from the records in it plus
    // its cover of the private record, which the bundle does not carry.
    let bundle = a.export("bundle", "whole.bundle", &[]);
    let auditor = Org::empty();
    auditor
        .run(["verify".as_ref(), bundle.as_os_str()])
        .ok()
        .says(&[
            "OK",
            "checkpoint of",
            a.key(),
            "the records held give its head",
        ]);
    let bytes = std::fs::read(&bundle).unwrap();
    let hex = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    // The private record is not in it: its id travels (the next record's `prev` names
    // it), its content never does.
    assert!(!coalition_tests::bundle_records(&bundle)
        .iter()
        .any(|r| coalition::record::RecordId::of(r).to_hex() == private));
    let title: Value = serde_json::from_str(
        &std::fs::read_to_string(example("03-rs-presevo-checkpoint-harassment.json")).unwrap(),
    )
    .unwrap();
    assert!(
        !hex(title["title"].as_str().unwrap()),
        "the private finding's content leaked"
    );

    // The same bundle with one coalition record removed fails, naming author and seq.
    let seq = a.show(&left_out)["seq"].as_u64().unwrap();
    let kept: Vec<Vec<u8>> = coalition_tests::bundle_records(&bundle)
        .into_iter()
        .filter(|r| coalition::record::RecordId::of(r).to_hex() != left_out)
        .collect();
    let cut = a.path("cut.bundle");
    coalition_tests::write_bundle(&cut, &kept);
    let out = auditor.run(["verify".as_ref(), cut.as_os_str()]);
    out.code(1).says(&[
        "incomplete",
        a.key(),
        &format!("commits to seq {seq},"),
        "INCOMPLETE",
    ]);
    let (_, report) = verify_offline(&cut);
    assert!(report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == cp.as_str()));
    // The records still in it all verify on their own, the neighbours of the gap too.
    assert_eq!(report["valid"], kept.len(), "{report}");
    assert!(kept
        .iter()
        .any(|r| coalition::record::RecordId::of(r).to_hex() == first));
    assert!(kept
        .iter()
        .any(|r| coalition::record::RecordId::of(r).to_hex() == last));
}

#[test]
fn a_running_node_signs_a_checkpoint_when_it_wrote_records_and_only_then() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    found("Periodic Coalition", &[&a, &b], 2);
    a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let checkpoints = |org: &Org| {
        org.all_records()
            .iter()
            .filter(|r| r["schema"] == "checkpoint/v1")
            .count()
    };
    let node_a = a.start_node("a", "bootstrap = []\ncheckpoint_interval_secs = 1");
    eventually("A signed a checkpoint of its log", EXPOSED, || {
        checkpoints(&a) == 1
    });
    let chains = node_a.get_json("/api/v1/chains");
    let own = chains["authors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["author"] == a.key())
        .unwrap()
        .clone();
    assert_eq!(own["checkpoint"]["matches"], true, "{own}");
    // Nothing new: no new checkpoint, however many intervals pass.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(checkpoints(&a), 1);
    drop(node_a);
}
