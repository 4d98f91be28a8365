//! The operator's journey: create a home, record findings, correct, retract and share
//! them, all through the real `coalition` binary.

use std::collections::BTreeSet;

use coalition_tests::{example, is_hex, string_leaves, Org};
use serde_json::Value;

const BELGRADE: &str = "01-rs-belgrade-protest-force.json"; // has "sensitive"
const NOVI_SAD: &str = "02-rs-novi-sad-student-detention.json";
const PRESEVO: &str = "03-rs-presevo-checkpoint-harassment.json";
const SUBOTICA: &str = "04-rs-subotica-border-migrants.json"; // has "sensitive"

fn prefix(id: &str) -> &str {
    &id[..10]
}

#[test]
fn init_prints_a_key_and_a_second_init_refuses() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    assert!(is_hex(org.key(), 64));
    let key_file = org.home().join("key.enc");
    let config = org.home().join("config.toml");
    let key_before = std::fs::read(&key_file).expect("init wrote key.enc");
    let config_before = std::fs::read(&config).expect("init wrote config.toml");

    let again = org.run(["init", "--org", "Someone Else", "--country", "XK"]);
    again.code(2).says(&["already"]);
    assert!(
        again.stdout.trim().is_empty(),
        "a refused init printed a key: {}",
        again.stdout
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), key_before);
    assert_eq!(std::fs::read(&config).unwrap(), config_before);

    // The identity is still the first one.
    let card = org.run(["identity", "export"]);
    card.ok();
    assert_eq!(card.json()["key"], org.key());
    assert_eq!(card.json()["country"], "RS");
}

#[test]
fn init_refuses_an_unknown_country_and_creates_nothing() {
    let org = Org::empty();
    org.run(["init", "--org", "Nowhere", "--country", "ZZ"])
        .code(2)
        .says(&["country", "ZZ"]);
    assert!(!org.home().join("key.enc").exists());
    assert!(!org.home().join("config.toml").exists());
    assert!(!org.home().join("coalition.db").exists());
}

#[test]
fn added_finding_is_listed_signed_and_addressable_by_prefix() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let id = org.add_example(NOVI_SAD, "coalition");

    let listed = org.list(false);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["author"], org.key());
    assert_eq!(listed[0]["country"], "RS");

    // The human table shows the short id and the title.
    let table = org.run(["finding", "list"]);
    table.ok().says(&[&id[..12], "arbitrary_detention"]);

    let shown = org.show(&id);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["author"], org.key());
    assert_eq!(shown["own"], true);
    assert!(
        shown["signature"].as_str().unwrap().starts_with("valid"),
        "{shown}"
    );
    assert_eq!(shown["schema"], "finding/v1");
    assert_eq!(shown["seq"], 1);
    assert_eq!(shown["audience"]["kind"], "coalition");
    let input: Value = serde_json::from_slice(&std::fs::read(example(NOVI_SAD)).unwrap()).unwrap();
    assert_eq!(shown["payload"], input, "payload differs from the input");

    // A 10-character prefix finds the same record.
    assert_eq!(org.show(prefix(&id)), shown);
    // The human form names the author and signature status.
    org.run(["finding", "show", prefix(&id)])
        .ok()
        .says(&[org.key(), "valid", "coalition"]);

    // The store verifies.
    org.run(["verify"]).ok().says(&["OK"]);
}

#[test]
fn private_is_the_default_audience() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let out = org.run([
        "finding".as_ref(),
        "add".as_ref(),
        example(PRESEVO).as_os_str(),
    ]);
    out.ok();
    let id = out.line();
    assert_eq!(org.show(&id)["audience"]["kind"], "private");
}

#[test]
fn sensitive_details_become_a_private_annex_that_the_finding_does_not_contain() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let file = example(BELGRADE);
    let input: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let secrets = string_leaves(&input["sensitive"]);
    assert!(secrets.len() > 3, "example lost its sensitive part");

    let out = org.run([
        "finding".as_ref(),
        "add".as_ref(),
        file.as_os_str(),
        "--share".as_ref(),
        "coalition".as_ref(),
    ]);
    out.ok().says(&["annex"]);
    let id = out.line();
    assert!(is_hex(&id, 64));

    let shown = org.show(&id);
    let payload = shown["payload"].to_string();
    assert!(shown["payload"].get("sensitive").is_none());
    for s in &secrets {
        assert!(
            !payload.contains(s.as_str()),
            "the shared finding contains sensitive text {s:?}"
        );
    }
    let annexes = shown["annexes"].as_array().expect("annexes listed");
    assert_eq!(annexes.len(), 1, "{shown}");
    let annex = annexes[0].as_str().unwrap();
    assert!(
        out.stderr.contains(annex),
        "stderr does not name the annex {annex}: {}",
        out.stderr
    );

    // The annex is private and holds the sensitive details.
    let annex_view = org.show(annex);
    assert_eq!(annex_view["schema"], "annex/v1");
    assert_eq!(annex_view["audience"]["kind"], "private");
    assert_eq!(annex_view["payload"]["finding"], id.as_str());
    assert_eq!(annex_view["payload"]["sensitive"], input["sensitive"]);

    // Lists show findings only, not annexes.
    assert_eq!(org.listed_ids(true), BTreeSet::from([id.clone()]));

    // Nothing sensitive reaches a coalition bundle: import it elsewhere and look.
    let bundle = org.export("bundle", "coalition.bundle", &[]);
    let peer = Org::init("Safety Forum Prizren", "XK");
    peer.import(&bundle).ok();
    let received = peer.all_records();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["id"], id.as_str());
    let text = serde_json::to_string(&received).unwrap();
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "sensitive text {s:?} left the node"
        );
    }
}

#[test]
fn correction_replaces_the_listed_version_and_links_both_ways() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let old = org.add_example(NOVI_SAD, "coalition");
    let other = org.add_example(PRESEVO, "private");

    let mut corrected: Value =
        serde_json::from_slice(&std::fs::read(example(NOVI_SAD)).unwrap()).unwrap();
    corrected["confidence"] = "high".into();
    corrected["title"] = "Corrected title: students detained after the bridge blockade".into();
    let file = org.write("corrected.json", corrected.to_string());

    let out = org.run([
        "finding".as_ref(),
        "correct".as_ref(),
        prefix(&old).as_ref(),
        file.as_os_str(),
    ]);
    out.ok();
    let new = out.line();
    assert!(is_hex(&new, 64), "correct printed {new:?}");
    assert_ne!(new, old);

    assert_eq!(
        org.listed_ids(false),
        BTreeSet::from([new.clone(), other.clone()])
    );
    assert_eq!(org.listed_ids(true), BTreeSet::from([new.clone(), other]));

    let old_view = org.show(&old);
    assert_eq!(old_view["superseded_by"], serde_json::json!([new]));
    let new_view = org.show(&new);
    assert_eq!(new_view["supersedes"], old.as_str());
    assert_eq!(new_view["payload"]["title"], corrected["title"]);
    // The correction keeps the audience of the version it replaces.
    assert_eq!(new_view["audience"]["kind"], "coalition");
    org.run(["finding", "show", &old])
        .ok()
        .says(&["superseded by", &new]);

    // Correcting the old id again corrects the latest version (no fork of versions).
    let again = org.run([
        "finding".as_ref(),
        "correct".as_ref(),
        old.as_ref(),
        file.as_os_str(),
    ]);
    again.ok();
    let newest = again.line();
    assert_eq!(org.show(&newest)["supersedes"], new.as_str());
    assert!(org.listed_ids(false).contains(&newest));
    assert!(!org.listed_ids(false).contains(&new));
    org.run(["verify"]).ok();
}

#[test]
fn retraction_hides_a_finding_from_the_list_but_keeps_it_on_record() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let keep = org.add_example(NOVI_SAD, "coalition");
    let gone = org.add_example(PRESEVO, "coalition");

    let out = org.run([
        "finding",
        "retract",
        prefix(&gone),
        "--reason",
        "duplicate of an earlier report",
    ]);
    out.ok();
    let retraction = out.line();
    assert!(is_hex(&retraction, 64), "retract printed {retraction:?}");

    assert_eq!(org.listed_ids(false), BTreeSet::from([keep.clone()]));
    let all = org.list(true);
    assert_eq!(all.len(), 2, "{all:?}");
    for row in &all {
        let retracted = row["id"] == gone.as_str();
        assert_eq!(row["retracted"], retracted, "{row}");
    }
    org.run(["finding", "list", "--all"])
        .ok()
        .says(&["[retracted]"]);

    let view = org.show(&gone);
    assert_eq!(view["retracted"], "duplicate of an earlier report");
    org.run(["finding", "show", &gone])
        .ok()
        .says(&["RETRACTED", "duplicate of an earlier report"]);

    // A retracted finding can be neither retracted again nor corrected.
    let before = org.snapshot();
    org.run(["finding", "retract", &gone, "--reason", "again"])
        .code(2)
        .says(&["retracted"]);
    org.run([
        "finding".as_ref(),
        "correct".as_ref(),
        gone.as_ref(),
        example(PRESEVO).as_os_str(),
    ])
    .code(2)
    .says(&["retracted"]);
    assert_eq!(org.snapshot(), before);
}

#[test]
fn sharing_a_private_finding_puts_it_in_the_coalition_bundle() {
    let org = Org::init("Civic Watch Belgrade", "RS");
    let public = org.add_example(NOVI_SAD, "coalition");
    let private = org.add_example(PRESEVO, "private");
    let annexed = org.add_example(SUBOTICA, "private");

    let received_ids = |bundle_name: &str| -> BTreeSet<String> {
        let bundle = org.export("bundle", bundle_name, &[]);
        let peer = Org::init("Peer", "XK");
        peer.import(&bundle).ok();
        peer.listed_ids(true)
    };

    assert_eq!(
        received_ids("before.bundle"),
        BTreeSet::from([public.clone()])
    );

    let out = org.run(["share", prefix(&private), "--with", "coalition"]);
    out.ok();
    let grant = out.line();
    assert!(is_hex(&grant, 64), "share printed {grant:?}");
    assert_eq!(org.show(&private)["audience"]["kind"], "coalition");

    assert_eq!(
        received_ids("after.bundle"),
        BTreeSet::from([public.clone(), private.clone()])
    );

    // Sharing again changes nothing and says so.
    let before = org.snapshot();
    org.run(["share", &private, "--with", "coalition"])
        .code(2)
        .says(&["already shared"]);
    // Narrowing to private is refused.
    org.run(["share", &annexed, "--with", "private"])
        .code(2)
        .says(&["never narrowed"]);
    assert_eq!(org.snapshot(), before);
    assert!(!received_ids("still.bundle").contains(&annexed));
}
