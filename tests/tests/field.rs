//! Network paths an operator relies on in the field, end to end with real nodes.

use std::time::Duration;

use coalition_tests::{eventually, found, held, toml_list, Org};

/// Compose files and real deployments name peers by host name (`/dns4/node-a/tcp/7400/…`).
/// A node whose only bootstrap entry is a name in the hosts file (`localhost`) must dial
/// it, prove membership and sync.
#[test]
fn a_node_bootstraps_from_a_dns_name() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Test Coalition", &[&a, &b], 2);
    let nb = b.start_node("b", "");
    let by_name = nb.tcp.replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1);
    assert!(
        by_name.starts_with("/dns4/localhost/tcp/"),
        "unexpected listen address {}",
        nb.tcp
    );
    let _na = a.start_node("a", &format!("bootstrap = {}", toml_list(&[&by_name])));
    let shared = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    eventually(
        "A's record reached B over the DNS bootstrap address",
        Duration::from_secs(30),
        || held(&b).contains(&shared),
    );
}
