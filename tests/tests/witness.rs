//! Witnessed checkpoints with real nodes (issue 17).
//!
//! Members cosign each other's checkpoints when the records they hold verify them; an
//! auditor reads from a bundle how many members witnessed each author's history and
//! whether the bundle holds all of it; a report's verification says whether it counted a
//! complete, witnessed history. A member that withholds a record every member receives
//! from one peer, while showing it a checkpoint that commits to it, is exposed by that
//! peer's witness check; and the proofs (covers, frontiers, cosignatures) carry nothing of
//! a record a member may not see.

use std::time::Duration;

use coalition_tests::node::{toml_list, TestNode};
use coalition_tests::{eventually, example, found, held, verify_offline, Org};
use serde_json::Value;

/// How long nodes may take to sync and witness (each checks every second here).
const WITNESSED: Duration = Duration::from_secs(60);

/// Config of a node that witnesses every second and never checkpoints on its own.
fn witnessing(bootstrap: &[&str]) -> String {
    format!(
        "bootstrap = {}\nwitness_interval_secs = 1\nsync_interval_secs = 1",
        toml_list(bootstrap)
    )
}

/// `author`'s chain as `node` holds it.
fn chain_of(node: &TestNode, author: &str) -> Value {
    node.get_json("/api/v1/chains")["authors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["author"] == author)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The witnesses of checkpoint record `cp` as `node` holds them.
fn witnesses_of(node: &TestNode, author: &str, cp: &str) -> Vec<String> {
    let c = chain_of(node, author);
    let found = [&c["checkpoint"], &c["witnessed"]]
        .into_iter()
        .find(|s| s["record"] == cp)
        .and_then(|s| s["witnesses"].as_array().cloned())
        .unwrap_or_default();
    found
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// The payload of every record of `schema` that `org` holds.
fn payloads(org: &Org, schema: &str) -> Vec<Value> {
    org.all_records()
        .into_iter()
        .filter(|r| r["schema"] == schema)
        .map(|r| r["payload"].clone())
        .collect()
}

#[test]
fn members_witness_each_others_checkpoints_and_an_auditor_counts_the_witnesses() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Rights Desk Skopje", "MK");
    found("Witness Coalition", &[&a, &b, &c], 2);
    let shared = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let private = a.add_example("03-rs-presevo-checkpoint-harassment.json", "private");
    let for_b = a.add_example("02-rs-novi-sad-student-detention.json", b.key());

    let node_a = a.start_node("a", &witnessing(&[]));
    let node_b = b.start_node("b", &witnessing(&[&node_a.tcp]));
    let node_c = c.start_node("c", &witnessing(&[&node_a.tcp]));
    let first = a.run(["checkpoint"]).ok().line();
    let took = eventually("B and C cosigned A's checkpoint", WITNESSED, || {
        witnesses_of(&node_a, a.key(), &first).len() == 2
    });
    eprintln!("A's checkpoint witnessed by both members {took:?} after it was signed");
    let mut both = vec![b.key().to_string(), c.key().to_string()];
    both.sort();
    assert_eq!(witnesses_of(&node_a, a.key(), &first), both);

    // A second checkpoint extends the first: its frontier links the two, its cover is
    // only of what came after. The members witness it too.
    // Once A holds B's encryption key, A's finding for B is sealed: C, outside its
    // audience, holds and relays the ciphertext (an unsealed one would never reach C),
    // and the second checkpoint commits to it.
    eventually("A holds B's encryption key", WITNESSED, || {
        a.all_records()
            .iter()
            .any(|r| r["schema"] == "encryption-key/v1" && r["author"] == b.key())
    });
    let sealed = a.add_example("06-rs-kragujevac-school-safety.json", b.key());
    let later = a.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let second = a.run(["checkpoint"]).ok().line();
    eventually("B and C cosigned A's second checkpoint", WITNESSED, || {
        witnesses_of(&node_c, a.key(), &second).len() == 2
    });
    let cps = payloads(&c, "checkpoint/v1");
    let extends = cps
        .iter()
        .find(|p| p["previous"].is_object())
        .expect("the second checkpoint names the first");
    assert_eq!(
        extends["previous"]["seq"],
        c.show(&first)["seq"],
        "{extends}"
    );
    // No evidence anywhere, and nobody cosigned its own checkpoint.
    for (org, node) in [(&a, &node_a), (&b, &node_b), (&c, &node_c)] {
        assert!(node.get_json("/api/v1/chains")["evidence"]
            .as_array()
            .unwrap()
            .is_empty());
        let own = chain_of(node, org.key());
        if let Some(w) = own["checkpoint"]["witnesses"].as_array() {
            assert!(!w.iter().any(|k| k == org.key()), "{own}");
        }
    }

    // What crossed the network to C, which may see neither the private finding nor the
    // one for B: no proof carries their ids or content.
    assert!(!held(&c).contains(&private) && !held(&c).contains(&for_b));
    assert!(held(&c).contains(&shared) && held(&c).contains(&later));
    assert!(
        held(&c).contains(&sealed),
        "C relays the sealed finding for B"
    );
    let proofs: String = payloads(&c, "checkpoint/v1")
        .iter()
        .chain(&payloads(&c, "cosignature/v1"))
        .map(Value::to_string)
        .collect();
    for hidden in [&private, &for_b] {
        assert!(!proofs.contains(hidden.as_str()), "a proof names {hidden}");
    }
    let bundle = c.export("bundle", "c.bundle", &[]);
    let bytes = std::fs::read(&bundle).unwrap();
    for name in [
        "03-rs-presevo-checkpoint-harassment.json",
        "02-rs-novi-sad-student-detention.json",
        "06-rs-kragujevac-school-safety.json",
    ] {
        let f: Value =
            serde_json::from_str(&std::fs::read_to_string(example(name)).unwrap()).unwrap();
        let title = f["title"].as_str().unwrap().as_bytes();
        assert!(
            !bytes.windows(title.len()).any(|w| w == title),
            "{name} leaked into C's bundle"
        );
        assert!(!proofs.as_bytes().windows(title.len()).any(|w| w == title));
    }

    // An auditor with C's bundle: A's latest checkpoint checks from the records in it,
    // witnessed by both other members, and the bundle holds all A committed to.
    let auditor = Org::empty();
    auditor
        .run(["verify".as_ref(), bundle.as_os_str()])
        .ok()
        .says(&[
            "checkpoint of",
            a.key(),
            "witnessed by 2 members",
            "the records held give its head",
        ]);
    let (_, report) = verify_offline(&bundle);
    let a_chain = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["author"] == a.key())
        .unwrap();
    assert_eq!(a_chain["witnessed"]["record"], second.as_str(), "{a_chain}");
    assert_eq!(
        a_chain["witnessed"]["witnesses"].as_array().unwrap().len(),
        2
    );

    // A report by A over its shared findings, checked against C's bundle, was computed
    // over a complete, witnessed history.
    let report_file = a.path("report.json");
    a.run([
        "report".as_ref(),
        "--group-by".as_ref(),
        "country".as_ref(),
        "-o".as_ref(),
        report_file.as_os_str(),
    ])
    .ok();
    auditor
        .run([
            "verify-report".as_ref(),
            report_file.as_os_str(),
            bundle.as_os_str(),
        ])
        .ok()
        .says(&[
            "witnessed by 2 members",
            "the counted records come from a complete, witnessed history",
            "OK",
        ]);
}

#[test]
fn a_member_withholding_a_record_from_one_peer_is_exposed_by_its_witness_check() {
    let w = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    let m = Org::init("Border Monitor Tbilisi", "GE");
    found("Withholding Watch", &[&w, &b, &m], 2);
    // The dishonest member's second home, copied before it wrote anything: the node it
    // shows W, holding all of M's history but one record.
    let m2 = m.second_home();
    m.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let withheld = m.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    m.add_example("05-rs-nis-roma-children-profiling.json", "coalition");
    let cp = m.run(["checkpoint"]).ok().line();
    let seq = m.show(&withheld)["seq"].as_u64().unwrap();

    // B was given everything: its witness check cosigns.
    let whole = m.export("bundle", "whole.bundle", &[]);
    b.import(&whole).ok();
    b.run(["witness"])
        .ok()
        .says(&["cosigned checkpoint", &cp[..12], m.key()]);

    // M's second home holds the checkpoint and every record but one.
    let cut: Vec<Vec<u8>> = coalition_tests::bundle_records(&whole)
        .into_iter()
        .filter(|r| coalition::record::RecordId::of(r).to_hex() != withheld)
        .collect();
    let cut_bundle = m2.path("cut.bundle");
    coalition_tests::write_bundle(&cut_bundle, &cut);
    m2.import(&cut_bundle).ok();

    // W syncs only with that home.
    let node_w = w.start_node("w", &witnessing(&[]));
    let _m2 = m2.start_node("m2", &witnessing(&[&node_w.tcp]));
    eventually("W holds M's checkpoint", WITNESSED, || {
        held(&w).contains(&cp)
    });
    let took = eventually(
        "W's witness check names the record M withheld",
        WITNESSED,
        || {
            let c = chain_of(&node_w, m.key());
            c["checkpoint"]["record"] == cp.as_str()
                && c["checkpoint"]["missing"] == serde_json::json!([{"from": seq, "to": seq}])
        },
    );
    eprintln!("withholding exposed {took:?} after W held the checkpoint");
    // W never cosigns it, however many witness rounds pass, and says why.
    std::thread::sleep(Duration::from_secs(3));
    assert!(witnesses_of(&node_w, m.key(), &cp).is_empty());
    assert!(payloads(&w, "cosignature/v1").is_empty());
    w.run(["witness"]).ok().says(&[
        "WARNING not cosigned",
        m.key(),
        &format!("commits to seq {seq},"),
        "never given",
    ]);
    w.run(["verify"]).ok().says(&[
        "checkpoint of",
        m.key(),
        "INCOMPLETE",
        &format!("seq {seq} not held"),
    ]);
    w.run(["status"]).ok().says(&[
        "WARNING incomplete",
        m.key(),
        &cp,
        &format!("commits to seq {seq},"),
        "never given",
    ]);
    assert!(!held(&w).contains(&withheld));
}

#[test]
fn a_checkpoint_that_rewrites_what_a_witness_cosigned_is_evidence_and_never_cosigned() {
    let w = Org::init("Civic Watch Belgrade", "RS");
    let m = Org::init("Border Monitor Tbilisi", "GE");
    found("Rewrite Watch", &[&w, &m], 2);
    // M's second home, copied before M wrote anything.
    let m2 = m.second_home();
    let r1 = m.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let r2 = m.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let first = m.run(["checkpoint"]).ok().line();
    w.import(&m.export("bundle", "m.bundle", &[])).ok();
    w.run(["witness"])
        .ok()
        .says(&["cosigned checkpoint", &first[..12], m.key()]);

    // The second home writes two other records at the same seqs (kept private, so no
    // member is shown them), takes M's first checkpoint into its chain and signs a
    // checkpoint "extending" it over its own history.
    let before_first = m.show(&first)["seq"].as_u64().unwrap() - 1;
    for name in [
        "03-rs-presevo-checkpoint-harassment.json",
        "05-rs-nis-roma-children-profiling.json",
        "06-rs-kragujevac-school-safety.json",
        "07-xk-mitrovica-bridge-tension.json",
    ] {
        let id = m2.add_example(name, "private");
        if m2.show(&id)["seq"].as_u64().unwrap() == before_first {
            break;
        }
    }
    let only_first: Vec<Vec<u8>> = coalition_tests::bundle_records(&m.path("m.bundle"))
        .into_iter()
        .filter(|r| coalition::record::RecordId::of(r).to_hex() == first)
        .collect();
    let path = m2.path("first.bundle");
    coalition_tests::write_bundle(&path, &only_first);
    m2.import(&path).ok();
    let second = m2.run(["checkpoint"]).ok().line();
    w.import(&m2.export("bundle", "m2.bundle", &[])).ok();

    // W holds both checkpoints: the second's frontier does not give the head W cosigned.
    let verify = w.run(["verify"]);
    verify.ok().says(&[
        "WARNING equivocation: inconsistent checkpoints",
        m.key(),
        &second,
        "rewrote its first",
        &first,
    ]);
    w.run(["witness"]).ok().says(&[
        "WARNING not cosigned",
        &second[..12],
        "evidence against the author is held",
    ]);
    let cosigned: Vec<Value> = payloads(&w, "cosignature/v1");
    assert_eq!(cosigned.len(), 1, "{cosigned:?}");
    assert_eq!(cosigned[0]["checkpoint"], first.as_str());
    // The records M showed are still held and genuine: the evidence is the two signed
    // checkpoints, which an auditor checks from W's bundle.
    assert!(held(&w).contains(&r1) && held(&w).contains(&r2));
    let bundle = w.export("bundle", "w.bundle", &[]);
    let (_, report) = verify_offline(&bundle);
    assert!(report["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "inconsistent_checkpoints"
            && e["earlier"] == first.as_str()
            && e["later"] == second.as_str()));
}
