//! The coalition network, end to end: real `coalition run` processes on loopback, each
//! with its own home and ports, checked through what each organisation's store holds.

use std::collections::BTreeSet;
use std::time::Duration;

use coalition_tests::{eventually, found, held, toml_list, Org, TestNode, PASSPHRASE};

/// Starts `coalition run` on `org`'s home, dialling `bootstrap`.
fn start(org: &Org, bootstrap: &[&str]) -> TestNode {
    org.start_node(org.name(), &format!("bootstrap = {}", toml_list(bootstrap)))
}

fn peers(org: &Org) -> serde_json::Value {
    org.run(["peers", "--json"]).ok().json()
}

#[test]
fn records_travel_only_to_their_audience_across_a_line() {
    let (a, b, c) = (
        Org::init("Org A", "RS"),
        Org::init("Org B", "XK"),
        Org::init("Org C", "MK"),
    );
    found("Test Coalition", &[&a, &b, &c], 2);
    let nb = start(&b, &[]);
    let na = start(&a, &[&nb.tcp]);
    let nc = start(&c, &[&nb.tcp]);

    // A record for B alone is sealed once A holds B's published encryption key.
    eventually(
        "A holds B's encryption key",
        Duration::from_secs(30),
        || {
            a.all_records()
                .iter()
                .any(|r| r["schema"] == "encryption-key/v1" && r["author"] == b.key())
        },
    );
    let shared = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let for_b = a.add_example("02-rs-novi-sad-student-detention.json", b.key());
    let private = a.add_example("05-rs-nis-roma-children-profiling.json", "private");

    eventually(
        "A's coalition record reached C through B",
        Duration::from_secs(30),
        || held(&c).contains(&shared),
    );
    eventually(
        "A's record for B reached B",
        Duration::from_secs(30),
        || held(&b).contains(&for_b),
    );
    // Give the network several more sync rounds to do anything wrong.
    std::thread::sleep(Duration::from_secs(3));
    // C may hold and relay it, sealed, and never read it; B reads it.
    if held(&c).contains(&for_b) {
        assert_eq!(
            c.show(&for_b)["schema"],
            "sealed/v1",
            "C reads a record for B"
        );
    }
    assert!(
        !c.listed_ids(true).contains(&for_b),
        "C lists a record for B"
    );
    assert_eq!(
        b.show(&for_b)["schema"],
        "finding/v1",
        "B cannot read its record"
    );
    assert!(
        !held(&b).contains(&private) && !held(&c).contains(&private),
        "a private record left A"
    );
    // A and C never connected: what C got, it got from B.
    let c_peers = peers(&c);
    assert!(
        !c_peers.to_string().contains(&na.peer),
        "C connected to A: {c_peers}"
    );
    assert!(
        c_peers.to_string().contains(a.key()) || c_peers.to_string().contains(b.key()),
        "{c_peers}"
    );
    let status = c.run(["status", "--json"]).ok().json();
    assert!(
        status["records_per_author"][a.key()].as_u64().unwrap() >= 1,
        "{status}"
    );
    for n in [na, nb, nc] {
        n.stop();
    }
    for o in [&a, &b, &c] {
        o.run(["verify"]).ok();
    }
}

#[test]
fn a_non_member_gets_nothing_and_gives_nothing() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Test Coalition", &[&a, &b], 2);
    // The outsider runs a real node of its own coalition: valid libp2p, a certificate
    // that is valid in its coalition and worthless in ours.
    let outsider = Org::init("Outsider", "AL");
    found("Test Coalition", &[&outsider], 1);
    let na = start(&a, &[]);
    let nb = start(&b, &[&na.tcp]);
    let no = start(&outsider, &[&na.tcp, &nb.tcp]);
    let secret = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let planted = outsider.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
    eventually("B got A's record", Duration::from_secs(30), || {
        held(&b).contains(&secret)
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !held(&outsider).contains(&secret),
        "a non-member received a coalition record"
    );
    assert!(
        !held(&a).contains(&planted) && !held(&b).contains(&planted),
        "a non-member's record was stored"
    );
    let verified: Vec<_> = peers(&a)
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["peer_id"] == no.peer.as_str())
        .cloned()
        .collect();
    assert!(
        verified.is_empty(),
        "the outsider stayed connected: {verified:?}"
    );
    for n in [na, nb, no] {
        n.stop();
    }
}

#[test]
fn a_member_removed_by_threshold_is_cut_off() {
    let (a, b, c) = (
        Org::init("Org A", "RS"),
        Org::init("Org B", "XK"),
        Org::init("Org C", "MK"),
    );
    found("Test Coalition", &[&a, &b, &c], 2);
    let na = start(&a, &[]);
    let nb = start(&b, &[&na.tcp]);
    let nc = start(&c, &[&na.tcp, &nb.tcp]);
    let before = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    eventually(
        "C got A's record while a member",
        Duration::from_secs(30),
        || held(&c).contains(&before),
    );

    let proposal = a.run(["member", "propose", "remove", c.key()]).ok().line();
    eventually("B received the proposal", Duration::from_secs(30), || {
        held(&b).contains(&proposal)
    });
    b.run(["member", "approve", &proposal]).ok();
    eventually("A applied the removal", Duration::from_secs(30), || {
        a.run(["charter", "show", "--json"]).ok().json()["history"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    eventually("A cut C off", Duration::from_secs(30), || {
        !peers(&a).to_string().contains(&nc.peer)
    });
    let after = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    eventually("B got A's new record", Duration::from_secs(30), || {
        held(&b).contains(&after)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !held(&c).contains(&after),
        "a removed member still receives records"
    );
    for n in [na, nb, nc] {
        n.stop();
    }
}

#[test]
fn partition_heal_and_kill_9_lose_nothing_and_duplicate_nothing() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Test Coalition", &[&a, &b], 2);
    let examples: Vec<_> = std::fs::read_dir(coalition_tests::examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut expected_b = BTreeSet::new();
    for (i, f) in examples.iter().enumerate().take(24) {
        let share = if i % 4 == 3 { "private" } else { "coalition" };
        let id = a.add(f, share);
        if share == "coalition" {
            expected_b.insert(id);
        }
    }
    let na = start(&a, &[]);
    // B is killed with SIGKILL while it syncs, then must still hold a valid store.
    let mut nb = start(&b, &[&na.tcp]);
    std::thread::sleep(Duration::from_millis(300));
    nb.kill();
    b.run(["verify"]).ok();

    // Partition: B is down; both keep recording.
    let during_a = a.add_example("21-al-tirana-protest-detentions.json", "coalition");
    let during_b = b.add_example("26-ba-sarajevo-journalist-interview.json", "coalition");
    expected_b.insert(during_a.clone());
    let nb = start(&b, &[&na.tcp]);
    eventually(
        "B caught up after the heal",
        Duration::from_secs(60),
        || expected_b.is_subset(&held(&b)),
    );
    eventually(
        "A got B's record from the partition",
        Duration::from_secs(60),
        || held(&a).contains(&during_b),
    );
    // Nothing duplicated, nothing extra: B holds what it is entitled to plus its own.
    let b_has = held(&b);
    let b_own: BTreeSet<String> = b
        .all_records()
        .iter()
        .filter(|r| r["author"] == b.key())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let a_certs: BTreeSet<String> = a
        .all_records()
        .iter()
        .filter(|r| {
            ["node-cert/v1", "charter/v1", "encryption-key/v1"]
                .contains(&r["schema"].as_str().unwrap())
        })
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let extra: Vec<_> = b_has
        .iter()
        .filter(|id| !expected_b.contains(*id) && !b_own.contains(*id) && !a_certs.contains(*id))
        .collect();
    assert!(
        extra.is_empty(),
        "B holds records it was not entitled to: {extra:?}"
    );
    let listed = b.list(false);
    let ids: BTreeSet<_> = listed
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), listed.len(), "a finding is listed twice");
    nb.stop();
    na.stop();
    b.run(["verify"]).ok();
    a.run(["verify"]).ok();
}

#[test]
fn run_refuses_a_home_without_a_coalition() {
    let a = Org::init("Loner", "GE");
    a.configure_network("bootstrap = []");
    a.run_env(["run"], &[("COALITION_PASSPHRASE", Some(PASSPHRASE))])
        .code(2)
        .says(&["charter"]);
}
