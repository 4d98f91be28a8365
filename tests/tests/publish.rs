//! Do no harm in what is published: a signed report counts, and names by id, only what
//! its audience may see, and an auditor's `verify-report` accepts only a member's report
//! of members' records. Real `coalition run` nodes exchange the records first, so the
//! producing node holds another organisation's chosen-member finding as it would in use.

use std::collections::BTreeSet;
use std::time::Duration;

use coalition::identity::Identity;
use coalition::report::SignedReport;
use coalition_tests::{bundle_records, found, held, toml_list, write_bundle, Org, PASSPHRASE};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(60);

/// `report ARGS -o NAME` by `org`; returns the report file's text and the command's stderr.
#[track_caller]
fn report_of(org: &Org, name: &str, args: &[&str]) -> (String, String) {
    let path = org.path(name);
    let mut all = vec!["report", "-o", path.to_str().unwrap()];
    all.extend(args);
    let out = org.run(all);
    out.ok();
    (std::fs::read_to_string(&path).unwrap(), out.stderr.clone())
}

/// The record ids a report lists.
fn listed(text: &str) -> BTreeSet<String> {
    let v: Value = serde_json::from_str(text).unwrap();
    v["report"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `verify-report REPORT BUNDLE` by an auditor with no home: (exit code, stdout).
fn verify_report(
    auditor: &Org,
    report: &std::path::Path,
    bundle: &std::path::Path,
) -> (i32, String) {
    let out = auditor.run_env(
        [
            std::ffi::OsStr::new("verify-report"),
            report.as_os_str(),
            bundle.as_os_str(),
        ],
        &[],
    );
    (out.code, out.stdout.clone())
}

#[test]
fn reports_count_only_what_their_audience_may_see_and_only_members_reports_verify() {
    let (a, b, c) = (
        Org::init("Org A", "RS"),
        Org::init("Org B", "GE"),
        Org::init("Org C", "MK"),
    );
    found("Test Coalition", &[&a, &b, &c], 2);
    let na = a.start_node("a", "");
    let nb = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&na.tcp])));

    let shared_a = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let private_a = a.add_example("05-rs-nis-roma-children-profiling.json", "private");
    let for_c = a.add_example("03-rs-presevo-checkpoint-harassment.json", c.key());
    let shared_b = b.add_example("29-ge-tbilisi-rustaveli-dispersal.json", "coalition");
    let b_for_a = b.add_example("30-ge-tbilisi-hrd-surveillance.json", a.key());
    coalition_tests::eventually("A holds B's two findings", SYNC, || {
        let h = held(&a);
        h.contains(&shared_b) && h.contains(&b_for_a)
    });
    // For the node's own eyes, every one of the five counts.
    let own = a.run(["query", "--group-by", "country", "--json"]);
    own.ok();
    assert_eq!(own.json()["total"]["findings"], 5);

    // A default report is for the whole coalition: the private finding, A's finding for
    // C and B's finding for A are neither counted nor named anywhere in the file.
    let (default, stderr) = report_of(&a, "default.json", &["--group-by", "country"]);
    assert_eq!(listed(&default), set(&[&shared_a, &shared_b]));
    for hidden in [&private_a, &for_c, &b_for_a] {
        assert!(
            !default.contains(hidden.as_str()),
            "the published report names {hidden}"
        );
    }
    let v: Value = serde_json::from_str(&default).unwrap();
    assert_eq!(v["report"]["format"], "coalition-report/2");
    assert_eq!(
        v["report"]["audience"],
        serde_json::json!({"kind": "coalition"})
    );
    assert_eq!(v["report"]["total"]["findings"], 2);
    assert_eq!(v["report"]["total"]["affected"], 14 + 22);
    assert!(stderr.contains("left out 3 matching findings"), "{stderr}");

    // `--for C` counts what C may see: also A's finding for C, still not the rest.
    let (for_c_report, _) = report_of(&a, "for-c.json", &["--for", c.key()]);
    assert_eq!(listed(&for_c_report), set(&[&shared_a, &shared_b, &for_c]));
    assert!(!for_c_report.contains(private_a.as_str()));
    assert!(!for_c_report.contains(b_for_a.as_str()));
    let v: Value = serde_json::from_str(&for_c_report).unwrap();
    assert_eq!(
        v["report"]["audience"],
        serde_json::json!({"kind": "member", "key": c.key()})
    );

    // An auditor reproduces each report from the bundle made for the same audience.
    let auditor = Org::empty();
    let coalition_bundle = a.export("bundle", "coalition.bundle", &[]);
    let (code, out) = verify_report(&auditor, &a.path("default.json"), &coalition_bundle);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audience: the whole coalition"), "{out}");
    assert!(
        out.contains("producer: a member of \"Test Coalition\""),
        "{out}"
    );
    let c_bundle = a.export("bundle", "for-c.bundle", &["--for", c.key()]);
    let (code, out) = verify_report(&auditor, &a.path("for-c.json"), &c_bundle);
    assert_eq!(code, 0, "{out}");

    // A member signs a report counting a record by an organisation outside the
    // coalition; the bundle carries that record too. The numbers reproduce, but the
    // counted record's author is judged against the membership and refused.
    let d = Org::init("Org D", "GE");
    let outsider = d.add_example("31-ge-marneuli-hate-crime-investigation.json", "coalition");
    let d_bundle = d.export("bundle", "d.bundle", &[]);
    let mut records = bundle_records(&coalition_bundle);
    records.extend(
        bundle_records(&d_bundle)
            .into_iter()
            .filter(|r| coalition::record::RecordId::of(r).to_hex() == outsider),
    );
    let mixed = a.path("mixed.bundle");
    write_bundle(&mixed, &records);
    let (plain, _) = report_of(&a, "plain.json", &[]);
    let mut forged: SignedReport = serde_json::from_str(&plain).unwrap();
    forged.report.records.push(outsider.clone());
    forged.report.records.sort();
    forged.report.total.findings += 1;
    forged.report.total.affected += 4;
    let identity = Identity::load(&a.home().join("key.enc"), PASSPHRASE).unwrap();
    let forged = forged.report.sign(&identity);
    let forged_path = a.write("forged.json", serde_json::to_vec_pretty(&forged).unwrap());
    let (code, out) = verify_report(&auditor, &forged_path, &mixed);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("counted record by a non-member: {outsider}"))
            && out.contains("was not a member under the epoch its record names"),
        "{out}"
    );
    assert!(
        out.contains("totals: report 3 findings / 40 affected; bundle gives 3 / 40"),
        "{out}"
    );
    assert!(
        out.contains("FAILED: the report is not a member's report"),
        "{out}"
    );

    // A report signed by an organisation outside the coalition is refused.
    report_of(&d, "by-d.json", &[]);
    let (code, out) = verify_report(&auditor, &d.path("by-d.json"), &coalition_bundle);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("producer: NOT ACCEPTED: the report names no membership epoch"),
        "{out}"
    );

    // C's report (of nothing: no finding is from North Macedonia) verifies while C is a
    // member, and no longer once A and B have removed C: a removed organisation cannot
    // date a report back to when it was a member.
    report_of(&c, "by-c.json", &["--country", "MK"]);
    let (code, out) = verify_report(&auditor, &c.path("by-c.json"), &coalition_bundle);
    assert_eq!(code, 0, "{out}");
    let proposal = a.run(["member", "propose", "remove", c.key()]).ok().line();
    coalition_tests::eventually("B received the proposal", SYNC, || {
        held(&b).contains(&proposal)
    });
    b.run(["member", "approve", &proposal]).ok();
    coalition_tests::eventually("A applied the removal", SYNC, || {
        a.run(["charter", "show", "--json"]).ok().json()["history"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let after = a.export("bundle", "after-removal.bundle", &[]);
    let (code, out) = verify_report(&auditor, &c.path("by-c.json"), &after);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "producer: NOT ACCEPTED: producer {} is no longer a member",
            c.key()
        )),
        "{out}"
    );
    // A's report made before the removal still verifies: A is a member then and now.
    let (code, out) = verify_report(&auditor, &a.path("default.json"), &after);
    assert_eq!(code, 0, "{out}");
    na.stop();
    nb.stop();
}
