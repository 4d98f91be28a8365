//! Backups: `coalition backup` of a home while its node runs and writes, `coalition
//! restore` into a fresh home, and what a restore refuses.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use coalition_tests::node::toml_list;
use coalition_tests::{eventually, found, held, Org};

const NOVI_SAD: &str = "02-rs-novi-sad-student-detention.json";
const PRESEVO: &str = "03-rs-presevo-checkpoint-harassment.json";
const SUBOTICA: &str = "04-rs-subotica-border-migrants.json";
const NIS: &str = "05-rs-nis-roma-children-profiling.json";
const CONVERGE: Duration = Duration::from_secs(60);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_backup_taken_while_the_node_writes_restores_the_same_home_as_a_node_of_its_own() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    let b = Org::init("Safety Forum Prizren", "XK");
    found("Balkan Monitoring Coalition", &[&a, &b], 2);
    a.add_example(NOVI_SAD, "coalition");
    let private = a.add_example(PRESEVO, "private");
    let from_b = b.add_example(SUBOTICA, "coalition");

    let node_a = a.start_node("a", "");
    let node_b = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&node_a.tcp])));
    // B's finding is written into A's store by the running node: it sits in the WAL
    // (the node checkpoints every ~40 MiB), where a copy of coalition.db would miss it.
    eventually("A's node stored B's finding", CONVERGE, || {
        held(&a).contains(&from_b)
    });
    let file = a.path("a.backup");
    let out = a.run(["backup", "-o", file.to_str().unwrap()]);
    out.ok().says(&["backed up", a.key()]);
    assert_eq!(mode(&file), 0o600);
    let original = a.snapshot();
    assert!(original.record_ids.contains(&from_b));

    let r = Org::empty();
    r.run(["restore", file.to_str().unwrap()])
        .ok()
        .says(&["restored", a.key(), "new peer id"]);
    assert_eq!(mode(&r.home()), 0o700);
    for name in ["config.toml", "key.enc", "coalition.db"] {
        assert_eq!(mode(&r.home().join(name)), 0o600, "{name}");
    }
    // Same records, same findings, and verify passes with the same report.
    let restored = r.snapshot();
    assert_eq!(restored, original);
    assert!(restored.record_ids.contains(&private));
    // The key inside is the same encrypted file, still opened by the passphrase only.
    assert_eq!(
        std::fs::read(r.home().join("key.enc")).unwrap(),
        std::fs::read(a.home().join("key.enc")).unwrap()
    );
    r.run(["identity", "export"]).ok().says(&[a.key()]);

    // The restored node has a peer id of its own, joins as a second node of A's
    // organisation, and is not a replica for A's private records: a private finding
    // recorded before a shared one never reaches it, though the shared one does.
    let node_r = r.start_node(
        "restored",
        &format!("bootstrap = {}", toml_list(&[&node_a.tcp])),
    );
    assert_ne!(
        node_r.peer, node_a.peer,
        "the restored node cloned the peer id"
    );
    let new_private = a.add_example(NIS, "private");
    let new_shared = a.add_example(NOVI_SAD, "coalition");
    eventually(
        "the restored node received A's new shared finding",
        CONVERGE,
        || held(&r).contains(&new_shared),
    );
    assert!(
        !held(&r).contains(&new_private),
        "a private record reached the restored node"
    );
    for node in [node_r, node_b, node_a] {
        node.stop();
    }
}

#[test]
fn restore_refuses_a_used_home_an_existing_output_and_a_damaged_file() {
    let a = Org::init("Civic Watch Belgrade", "RS");
    a.add_example(NOVI_SAD, "coalition");
    a.add_example(PRESEVO, "private");
    let file = a.path("a.backup");
    a.run(["backup", "-o", file.to_str().unwrap()]).ok();
    let bytes = std::fs::read(&file).unwrap();

    // An existing output is kept unless --force.
    a.run(["backup", "-o", file.to_str().unwrap()])
        .code(2)
        .says(&["already exists", "--force"]);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    a.run(["backup", "-o", file.to_str().unwrap(), "--force"])
        .ok();

    // Restoring over a home: refused, nothing in it altered.
    let before = a.snapshot();
    let files = |org: &Org| -> Vec<Vec<u8>> {
        ["config.toml", "key.enc"]
            .iter()
            .map(|n| std::fs::read(org.home().join(n)).unwrap())
            .collect()
    };
    let kept = files(&a);
    a.run(["restore", file.to_str().unwrap()])
        .code(2)
        .says(&["not empty", "--home"]);
    assert_eq!(a.snapshot(), before);
    assert_eq!(files(&a), kept);

    // A truncated copy and a store altered inside the archive: refused, no home made.
    let r = Org::empty();
    let truncated = r.write("truncated.backup", &bytes[..bytes.len() / 2]);
    r.run(["restore", truncated.to_str().unwrap()])
        .code(2)
        .says(&[
            "not a usable Coalition backup",
            "truncated",
            "nothing was restored",
        ]);
    assert!(!r.home().exists());
    let mut altered = bytes.clone();
    // The store is the last member: flip a byte in its body (past the tar header).
    let at = altered.len() - 4096 - 1024;
    altered[at] ^= 0x01;
    let altered = r.write("altered.backup", &altered);
    r.run(["restore", altered.to_str().unwrap()])
        .code(2)
        .says(&[
            "coalition.db does not match its SHA-256",
            "nothing was restored",
        ]);
    assert!(!r.home().exists());
    // The intact file still restores there.
    r.run(["restore", file.to_str().unwrap()]).ok();
    assert_eq!(r.snapshot(), a.snapshot());
}
