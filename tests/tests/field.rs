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

/// `peers --json` at `org`: the entry for `peer`, once that peer's certificate verified.
fn verified_peer(org: &Org, peer: &str) -> Option<serde_json::Value> {
    // The peer list is the node's last published status, which may lag the sync that
    // the caller waited for: poll it for a while before concluding.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = org.peer(peer).filter(|p| !p["organisation_key"].is_null());
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two nodes that listen on QUIC only (no TCP listener exists, so nothing can be dialled
/// over TCP) and know each other only by a `/udp/…/quic-v1` address: they connect,
/// verify each other and sync both ways, and each side's `peers` shows the QUIC address.
#[test]
fn two_nodes_reachable_only_over_quic_sync() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Test Coalition", &[&a, &b], 2);
    let quic_only = r#"listen = ["/ip4/127.0.0.1/udp/0/quic-v1"]"#;
    let nb = b.start_node("b", quic_only);
    assert!(nb.tcp.is_empty(), "B listens on TCP: {:?}", nb.addrs);
    let b_quic = nb
        .addrs
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/udp/") && a.contains("/quic-v1/p2p/"))
        .unwrap_or_else(|| panic!("B printed no QUIC address: {:?}", nb.addrs))
        .clone();
    let na = a.start_node(
        "a",
        &format!("{quic_only}\nbootstrap = {}", toml_list(&[&b_quic])),
    );
    assert!(na.tcp.is_empty(), "A listens on TCP: {:?}", na.addrs);
    let from_a = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let from_b = b.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
    eventually(
        "A's record reached B over QUIC",
        Duration::from_secs(30),
        || held(&b).contains(&from_a),
    );
    eventually(
        "B's record reached A over QUIC",
        Duration::from_secs(30),
        || held(&a).contains(&from_b),
    );
    for (org, peer) in [(&a, &nb.peer), (&b, &na.peer)] {
        let entry = verified_peer(org, peer)
            .unwrap_or_else(|| panic!("{} does not list its peer as verified", org.name()));
        let address = entry["address"].as_str().unwrap_or_default();
        assert!(
            address.starts_with("/ip4/127.0.0.1/udp/") && address.contains("/quic-v1"),
            "{} reaches its peer at {address:?}, not over QUIC: {entry}",
            org.name()
        );
        assert_eq!(entry["relayed"], false, "{entry}");
    }
    na.stop();
    nb.stop();
}

/// Runs `body` on a thread of its own in a new network namespace (its children inherit
/// it) whose loopback is up and which has one multicast-capable interface, `mdns0`
/// (10.77.0.1/24, one end of a veth pair whose other end is in the same namespace), so
/// that mDNS has a non-loopback interface that reaches no other host.
/// Returns why not, without running `body`, where namespaces cannot be made here.
fn in_private_lan(body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            format!("cannot create a network namespace ({e}); needs root or CAP_SYS_ADMIN")
        })?;
        for args in [
            &["link", "set", "lo", "up"][..],
            &[
                "link", "add", "mdns0", "type", "veth", "peer", "name", "mdns1",
            ],
            &["addr", "add", "10.77.0.1/24", "dev", "mdns0"],
            &["link", "set", "mdns1", "up"],
            &["link", "set", "mdns0", "up"],
        ] {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run `ip` ({e}); install iproute2"))?;
            if !out.status.success() {
                return Err(format!(
                    "`ip {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        body();
        Ok(())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Two nodes with no bootstrap address on a LAN of their own find each other by mDNS,
/// verify each other and sync both ways. The LAN is a veth pair in a network
/// namespace the test creates (mDNS ignores loopback); without namespaces the test says
/// why and passes without running.
#[test]
fn two_nodes_without_bootstrap_find_each_other_by_mdns_and_sync() {
    let ran = in_private_lan(|| {
        let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
        found("Test Coalition", &[&a, &b], 2);
        let lan = "listen = [\"/ip4/10.77.0.1/tcp/0\"]\nmdns = true";
        let na = a.start_node("a", lan);
        let nb = b.start_node("b", lan);
        let from_a = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
        let from_b = b.add_example("07-xk-mitrovica-bridge-tension.json", "coalition");
        let took = eventually(
            "A and B found each other by mDNS and synced both ways",
            Duration::from_secs(60),
            || held(&b).contains(&from_a) && held(&a).contains(&from_b),
        );
        eprintln!("mDNS discovery and sync took {took:?}");
        for (org, peer) in [(&a, &nb.peer), (&b, &na.peer)] {
            let entry = verified_peer(org, peer)
                .unwrap_or_else(|| panic!("{} does not list its peer as verified", org.name()));
            assert!(
                entry["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("/ip4/10.77.0.1/tcp/")),
                "{entry}"
            );
        }
        na.stop();
        nb.stop();
    });
    if let Err(why) = ran {
        eprintln!("SKIPPED: mDNS discovery was not tested: {why}");
    }
}
