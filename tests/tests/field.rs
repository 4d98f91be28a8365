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

/// Gossip carries a new record at once: with anti-entropy once an hour, a record written
/// after the two nodes met still reaches the other node within seconds, so only the
/// gossip announcement (and the fetch it triggers) can have carried it.
#[test]
fn gossip_delivers_a_new_record_without_waiting_for_the_next_sync() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Test Coalition", &[&a, &b], 2);
    let hourly = "sync_interval_secs = 3600";
    let first = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let nb = b.start_node("b", hourly);
    let _na = a.start_node(
        "a",
        &format!("bootstrap = {}\n{hourly}", toml_list(&[&nb.tcp])),
    );
    eventually(
        "the sync when the two nodes met carried A's first record",
        Duration::from_secs(30),
        || held(&b).contains(&first),
    );
    let second = a.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
    let took = eventually(
        "A's new record reached B through gossip",
        Duration::from_secs(20),
        || held(&b).contains(&second),
    );
    eprintln!("gossip delivered the new record in {took:?}");
}
