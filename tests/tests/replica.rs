//! Replicas: a PRIVATE record stays on the node that made it, even when another node holds
//! the same organisation key (a laptop, a restored backup), until the operator enrols
//! that node as a replica (`coalition replica add PEER_ID`). Enrolling a peer id of
//! another organisation gives it nothing: the replica must prove, by its node
//! certificate, that it belongs to this organisation.

use std::collections::BTreeSet;
use std::time::Duration;

use coalition_tests::{eventually, found, held, Org};

const WAIT: Duration = Duration::from_secs(60);

/// Ids of the PRIVATE records `org` holds.
fn private_ids(org: &Org) -> BTreeSet<String> {
    org.all_records()
        .iter()
        .filter(|r| r["audience"]["kind"] == "private")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn private_records_reach_only_an_enrolled_node_of_the_same_organisation() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Replica Coalition", &[&a, &b], 2);
    let laptop = a.second_home();

    // A PRIVATE finding, and a coalition finding whose sensitive details become a
    // PRIVATE annex.
    a.add_example("05-rs-nis-roma-children-profiling.json", "private");
    let shared = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let private = private_ids(&a);
    assert!(
        private.len() >= 2,
        "a private finding and an annex: {private:?}"
    );

    let node_a = a.start_node("a", "");
    let boot = format!("bootstrap = [{:?}]", node_a.tcp);
    let node_laptop = laptop.start_node("laptop", &boot);
    let node_b = b.start_node("b", &boot);
    eventually("the laptop syncs what A shares", WAIT, || {
        held(&laptop).contains(&shared)
    });
    eventually("B syncs what A shares", WAIT, || held(&b).contains(&shared));
    assert!(
        private_ids(&laptop).is_empty(),
        "a node with the same key got PRIVATE records without enrolment"
    );

    // Enrol the laptop, and (wrongly) B's node: B is another organisation.
    a.run(["replica", "add", &node_laptop.peer]).ok();
    a.run(["replica", "add", &node_b.peer]).ok();
    let listed = a.run(["replica", "list"]);
    listed.ok().says(&[&node_laptop.peer, &node_b.peer]);
    eventually(
        "the enrolled laptop receives A's PRIVATE records",
        WAIT,
        || private_ids(&laptop) == private,
    );

    // B synced after the enrolment (it holds a finding made after it), and still holds
    // no PRIVATE record of A.
    let later = a.add_example("03-rs-presevo-checkpoint-harassment.json", "coalition");
    eventually("B syncs a finding made after the enrolment", WAIT, || {
        held(&b).contains(&later)
    });
    let b_holds = held(&b);
    for id in &private {
        assert!(
            !b_holds.contains(id),
            "B, enrolled by peer id but of another organisation, got PRIVATE record {id}"
        );
    }

    // `coalition peers` marks the replica.
    let peers = a.run(["peers"]);
    peers.ok();
    assert!(
        peers
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{} (replica)", node_laptop.peer))),
        "{}",
        peers.stdout
    );
    let json = a.run(["peers", "--json"]).json();
    let laptop_row = json
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == node_laptop.peer.as_str())
        .expect("the laptop is a connected peer");
    assert_eq!(laptop_row["replica"], true);

    // Withdrawn: new PRIVATE records stay on A.
    a.run(["replica", "remove", &node_laptop.peer]).ok();
    a.run(["replica", "remove", &node_b.peer]).ok();
    let after = a.add_example("02-rs-novi-sad-student-detention.json", "private");
    let marker = a.add_example("04-rs-subotica-border-migrants.json", "coalition");
    eventually(
        "the laptop syncs a finding made after the withdrawal",
        WAIT,
        || held(&laptop).contains(&marker),
    );
    assert!(!held(&laptop).contains(&after));
    drop((node_a, node_laptop, node_b));
}
