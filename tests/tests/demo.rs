//! `coalition demo` runs the whole story end to end and says so.

use coalition_tests::Org;

#[test]
fn demo_completes_in_a_temporary_directory() {
    let org = Org::empty();
    org.run_env(["demo"], &[])
        .ok()
        .says(&["Demo complete", "auditor"]);
    assert!(!org.home().exists(), "the demo touched --home");
}

#[test]
fn demo_completes_in_a_given_directory_and_leaves_verifiable_homes() {
    let org = Org::empty();
    let dir = org.path("demo");
    let out = org.run_env(["demo".as_ref(), "--dir".as_ref(), dir.as_os_str()], &[]);
    out.ok().says(&["Demo complete"]);
    let bundle = dir.join("coalition.bundle");
    assert!(bundle.is_file(), "no coalition.bundle in {}", dir.display());
    let (verified, report) = coalition_tests::verify_offline(&bundle);
    verified.ok();
    assert!(report["valid"].as_u64().unwrap() > 0, "{report}");
    let tampered = dir.join("tampered.bundle");
    coalition_tests::verify_offline(&tampered).0.code(1);
}
