//! Do no harm in a running process: the passphrase given to `coalition run` through
//! `COALITION_PASSPHRASE` must not stay readable in `/proc/PID/environ` (which shows the
//! environment a process was started with, to the same user and to root, for as long as
//! it runs) once the node is up.

use coalition_tests::{found, Org, PASSPHRASE};

#[test]
fn a_running_node_does_not_keep_the_passphrase_in_its_environment() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Test Coalition", &[&a, &b], 2);
    // `start_node` passes the passphrase as COALITION_PASSPHRASE and waits until the
    // node prints its peer id: it has unlocked the key and joined the network.
    let node = a.start_node("a", "");
    // The process started (a restart in place keeps its pid).
    let pid = node.pid();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!environ.is_empty(), "read nothing from /proc/{pid}/environ");
    let has = |needle: &[u8]| environ.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(b"COALITION_PASSPHRASE="),
        "COALITION_PASSPHRASE is still in /proc/{pid}/environ"
    );
    assert!(
        !has(PASSPHRASE.as_bytes()),
        "the passphrase is readable in /proc/{pid}/environ"
    );
    // The same process still runs and serves: the restart kept its pid.
    let status = a.run(["status", "--json"]);
    status.ok();
    node.stop();
}
