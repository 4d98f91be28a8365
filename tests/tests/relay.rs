//! Relay and hole punching, end to end: real `coalition run` processes on loopback. A
//! member (A) holds a reservation with a member that serves as relay (R); another member
//! (C) knows only R and A's circuit address through R, never A's direct address, and
//! still receives what A shares with it, while R, which is not in the audience, never
//! holds it.
//!
//! Each node logs to `node.log` in its directory (printed on failure). To keep the logs,
//! set `COALITION_TEST_LOG_DIR=DIR`; `COALITION_TEST_LOG` overrides the log filter
//! (default `info,libp2p=warn`).

use std::time::{Duration, Instant};

use coalition::now_ms;
use coalition_tests::{eventually, found, held, toml_list, Org};
use serde_json::Value;

fn status(org: &Org) -> Value {
    org.run(["status", "--json"]).ok().json()
}

/// The entry of `peers --json` for `peer`, if connected.
fn peer_entry(org: &Org, peer: &str) -> Option<Value> {
    org.peer(peer)
}

/// Whether `org` completed a sync it started with `peer` after `after_ms`.
fn synced_after(org: &Org, peer: &str, after_ms: i64) -> bool {
    peer_entry(org, peer)
        .and_then(|p| p["last_sync_ms"].as_i64())
        .is_some_and(|t| t > after_ms)
}

#[test]
fn a_member_behind_a_relay_is_reached_through_its_circuit_address_only() {
    let (r, a, c) = (
        Org::init("Org R", "RS"),
        Org::init("Org A", "XK"),
        Org::init("Org C", "MK"),
    );
    found("Relay Coalition", &[&r, &a, &c], 2);
    let nr = r.start_node("R", "relay_server = true");
    let mut na = a.start_node(
        "A",
        &format!(
            "bootstrap = {}\nrelays = {}",
            toml_list(&[&nr.tcp]),
            toml_list(&[&nr.tcp])
        ),
    );

    // A holds a reservation with R and says where it can be reached.
    let circuit = format!("{}/p2p-circuit/p2p/{}", nr.tcp, na.peer);
    let took = eventually(
        "A reports a relayed address in `status --json`",
        Duration::from_secs(30),
        || {
            status(&a)["relayed_addrs"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == circuit.as_str()))
        },
    );
    na.wait_line(
        &format!("reachable through relay {circuit}"),
        Duration::from_secs(10),
    );
    println!("A's reservation with R accepted within {took:?}: {circuit}");

    // Shared with C only: R is not in the audience and must never hold it.
    let for_c = a.add_example("02-rs-novi-sad-student-detention.json", c.key());
    let made_ms = now_ms();

    // C knows R and A's circuit address, never A's direct address.
    let c_bootstrap = toml_list(&[&nr.tcp, &circuit]);
    assert!(!c_bootstrap.contains(&na.tcp));
    let nc = c.start_node("C", &format!("bootstrap = {c_bootstrap}"));
    let took = eventually(
        "C received A's record for C",
        Duration::from_secs(60),
        || held(&c).contains(&for_c),
    );
    println!("C received A's record within {took:?} of starting");
    let got_ms = now_ms();

    let mut at_c = Value::Null;
    eventually(
        "`peers --json` at C lists A as verified",
        Duration::from_secs(30),
        || {
            at_c = peer_entry(&c, &na.peer).unwrap_or_default();
            !at_c["organisation_key"].is_null()
        },
    );
    assert_eq!(at_c["organisation_key"], a.key(), "{at_c}");
    assert_eq!(at_c["organisation"], "Org A", "{at_c}");

    // R syncs with both every second; once it has completed a sync with A after the
    // record existed and with C after C held it, it had every chance to get it.
    eventually(
        "R completed syncs with A and C after the record spread",
        Duration::from_secs(30),
        || synced_after(&r, &na.peer, made_ms) && synced_after(&r, &nc.peer, got_ms),
    );
    assert!(
        !held(&r).contains(&for_c),
        "the relay holds a record it is not in the audience of"
    );

    // Reported, not asserted: whether DCUtR replaced the relayed connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut entry = at_c;
    while entry["relayed"] == true && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        entry = peer_entry(&c, &na.peer).unwrap_or(entry);
    }
    println!(
        "DCUtR on loopback: C reaches A {} (address {})",
        if entry["relayed"] == false {
            "over a direct connection"
        } else {
            "still only through the relay"
        },
        entry["address"]
    );

    for n in [nc, na, nr] {
        n.stop();
    }
    for o in [&r, &a, &c] {
        o.run(["verify"]).ok();
    }
}
