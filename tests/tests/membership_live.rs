//! Membership changes with live nodes: an organisation admitted by threshold after the
//! founding runs its node and syncs both ways; a member that lost its laptop rotates its
//! key, its new node is accepted and the old key's node is cut off. Real `coalition run`
//! processes on loopback, checked through what each store holds and `peers --json`.

use std::time::Duration;

use coalition_tests::{eventually, found, held, toml_list, Org, TestNode};

/// Starts `coalition run` on `org`'s home, dialling `bootstrap`.
fn start(org: &Org, name: &str, bootstrap: &[&str]) -> TestNode {
    org.start_node(name, &format!("bootstrap = {}", toml_list(bootstrap)))
}

/// `peers --json` at `org`, as text (to look for peer ids in).
fn peers(org: &Org) -> String {
    org.run(["peers", "--json"]).ok().json().to_string()
}

/// Whether `org` lists `peer` with a verified certificate of organisation `key`.
fn verified(org: &Org, peer: &str, key: &str) -> bool {
    org.peer(peer).is_some_and(|p| p["organisation_key"] == key)
}

/// The number of membership changes in `org`'s charter history (1: the founding).
fn history_len(org: &Org) -> usize {
    org.run(["charter", "show", "--json"]).ok().json()["history"]
        .as_array()
        .expect("history is an array")
        .len()
}

/// `org`'s member card (`identity export`) written next to its home.
fn card(org: &Org) -> std::path::PathBuf {
    org.write(
        "card.json",
        org.run(["identity", "export"]).ok().stdout.clone(),
    )
}

/// `proposer` proposes `change` (the arguments after `member propose`), `approver`
/// approves once it holds the proposal, and both apply the change.
fn pass(proposer: &Org, approver: &Org, change: &[&str]) {
    let before = history_len(proposer);
    let mut args = vec!["member", "propose"];
    args.extend(change);
    let proposal = proposer.run(args).ok().line();
    eventually(
        "the approver received the proposal",
        Duration::from_secs(30),
        || held(approver).contains(&proposal),
    );
    approver.run(["member", "approve", &proposal]).ok();
    eventually("both applied the change", Duration::from_secs(30), || {
        history_len(proposer) == before + 1 && history_len(approver) == before + 1
    });
}

/// D is admitted after the founding (A proposes, B approves: the threshold of 2), joins
/// with a bundle exported after the admission, runs its node and syncs both ways:
/// records written after the bundle reach it from A and from B, and its own reach both.
#[test]
fn an_organisation_admitted_by_threshold_runs_its_node_and_syncs_both_ways() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Test Coalition", &[&a, &b], 2);
    let na = start(&a, "A", &[]);
    let nb = start(&b, "B", &[&na.tcp]);

    let d = Org::init("Org D", "MK");
    let d_card = card(&d);
    pass(&a, &b, &["add", d_card.to_str().expect("utf-8 path")]);

    // D joins with a bundle of the coalition as A holds it now (charter, the admission).
    let bundle = a.export("bundle", "join.bundle", &[]);
    d.import(&bundle).ok();
    assert_eq!(history_len(&d), 2, "D's import carries its admission");
    let before_d = b.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let nd = start(&d, "D", &[&na.tcp, &nb.tcp]);
    eventually(
        "A and B list D's node as D's",
        Duration::from_secs(30),
        || verified(&a, &nd.peer, d.key()) && verified(&b, &nd.peer, d.key()),
    );
    let from_a = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let from_d = d.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
    let for_d = b.add_example("03-rs-presevo-checkpoint-harassment.json", d.key());
    eventually(
        "D received B's and A's records written after it joined",
        Duration::from_secs(30),
        || {
            let h = held(&d);
            [&before_d, &from_a, &for_d].iter().all(|r| h.contains(*r))
        },
    );
    eventually(
        "A and B received D's record",
        Duration::from_secs(30),
        || held(&a).contains(&from_d) && held(&b).contains(&from_d),
    );
    // A record for D alone reaches A only sealed (A relays it, never reads it), and only
    // if B held D's published key when it wrote it; D reads it.
    if held(&a).contains(&for_d) {
        assert_eq!(
            a.show(&for_d)["schema"],
            "sealed/v1",
            "A reads a record for D"
        );
    }
    assert!(
        !a.listed_ids(true).contains(&for_d),
        "A lists a record for D"
    );
    assert_eq!(
        d.show(&for_d)["schema"],
        "finding/v1",
        "D cannot read its record"
    );
    for n in [nd, nb, na] {
        n.stop();
    }
    for o in [&a, &b, &d] {
        o.run(["verify"]).ok();
    }
}

/// C lost its laptop: it makes a new key, A proposes the rotation, B approves. The old
/// key's node, still running, is cut off by A and B and gets nothing written after; a
/// record it writes reaches nobody. C's new node (new key, joined by bundle) is accepted
/// and syncs both ways.
#[test]
fn a_rotated_key_s_new_node_is_accepted_and_the_old_node_is_cut_off() {
    let (a, b, c) = (
        Org::init("Org A", "RS"),
        Org::init("Org B", "XK"),
        Org::init("Org C", "MK"),
    );
    found("Test Coalition", &[&a, &b, &c], 2);
    let na = start(&a, "A", &[]);
    let nb = start(&b, "B", &[&na.tcp]);
    let old = start(&c, "C-old", &[&na.tcp, &nb.tcp]);
    let before = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    eventually(
        "C's old node got A's record while C's key was current",
        Duration::from_secs(30),
        || held(&c).contains(&before),
    );

    // The new laptop: a new key for the same organisation.
    let c2 = Org::init("Org C", "MK");
    let c2_card = card(&c2);
    pass(
        &a,
        &b,
        &["rotate", c.key(), c2_card.to_str().expect("utf-8 path")],
    );
    eventually(
        "A and B cut C's old node off",
        Duration::from_secs(30),
        || !peers(&a).contains(&old.peer) && !peers(&b).contains(&old.peer),
    );

    let bundle = a.export("bundle", "join.bundle", &[]);
    c2.import(&bundle).ok();
    let nc2 = start(&c2, "C-new", &[&na.tcp, &nb.tcp]);
    eventually(
        "A and B list C's new node under C's new key",
        Duration::from_secs(30),
        || verified(&a, &nc2.peer, c2.key()) && verified(&b, &nc2.peer, c2.key()),
    );
    let after = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let from_new = c2.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
    // The old key's node may or may not have learnt of the rotation before it was cut
    // off; if it did, its own store refuses to let it write as a member.
    let from_old = c.run([
        "finding",
        "add",
        coalition_tests::example("05-rs-nis-roma-children-profiling.json")
            .to_str()
            .expect("utf-8 path"),
        "--share",
        "coalition",
    ]);
    let from_old = (from_old.code == 0).then(|| from_old.line());
    eprintln!(
        "the old key's home {} a record after the rotation",
        if from_old.is_some() {
            "still wrote"
        } else {
            "refused to write"
        }
    );
    eventually(
        "C's new node got A's new record",
        Duration::from_secs(30),
        || held(&c2).contains(&after) && held(&c2).contains(&before),
    );
    eventually(
        "A and B got the record of C's new node",
        Duration::from_secs(30),
        || held(&a).contains(&from_new) && held(&b).contains(&from_new),
    );
    // A few more sync rounds (every second) for anything to leak.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !held(&c).contains(&after),
        "the old key's node received a record written after the rotation"
    );
    if let Some(id) = from_old {
        for o in [&a, &b, &c2] {
            assert!(
                !held(o).contains(&id),
                "{}'s node accepted a record of the retired key",
                o.name()
            );
        }
    }
    for o in [&a, &b, &c2] {
        assert!(
            !peers(o).contains(&old.peer),
            "{} is connected to the old key's node",
            o.name()
        );
    }
    for n in [old, nc2, nb, na] {
        n.stop();
    }
    for o in [&a, &b, &c2] {
        o.run(["verify"]).ok();
    }
}
