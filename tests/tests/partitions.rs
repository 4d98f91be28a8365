//! Partitions (issue 18): 5 to 7 real `coalition run` processes that reach each other
//! only through controllable TCP forwarders (`coalition_tests::forwarder`), whose links
//! are cut and healed at random (seeded) while records are authored on several nodes,
//! for the whole coalition, for chosen members, or kept private. After the final heal
//! every node must hold exactly the records it is entitled to: none lost, none
//! duplicated, none outside its audience.
//!
//! Topology: a full mesh of links, one forwarder per pair; node j dials every node i < j
//! through the forwarder of link (i, j) (its bootstrap list names only forwarders; mDNS
//! is off and the nodes listen on TCP only, so a cut link carries nothing).
//!
//! `partitions_heal_to_exactly_what_each_node_may_hold` (default tests) is one bounded
//! run of 5 nodes; `partition_convergence_figures` (ignored) repeats seeded runs and
//! prints the convergence time after the final heal, p50 and p99
//! (`COALITION_PARTITION_RUNS`, `COALITION_PARTITION_NODES`, `COALITION_SEED`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use coalition_tests::chaos::{env_count, percentile, seed, Rng};
use coalition_tests::forwarder::Forwarder;
use coalition_tests::{all_examples, found, toml_list, Org, TestNode};
use serde_json::Value;

/// How long the nodes may take to converge after the final heal.
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);

const COUNTRIES: [&str; 7] = ["RS", "XK", "MK", "AL", "BA", "ME", "GE"];

#[test]
fn partitions_heal_to_exactly_what_each_node_may_hold() {
    let seed = seed("partitions");
    let took = run(seed, 5, 4);
    println!(
        "partitions (seed {seed}, 5 nodes, 4 rounds): converged {took:?} after the final heal"
    );
}

#[test]
#[ignore = "figure run: repeated seeded partition runs (minutes); run with --ignored"]
fn partition_convergence_figures() {
    let runs = env_count("COALITION_PARTITION_RUNS", 10);
    let nodes = env_count("COALITION_PARTITION_NODES", 6).clamp(5, 7);
    let rounds = env_count("COALITION_PARTITION_ROUNDS", 6);
    let first = seed("partition figures");
    let mut times = Vec::new();
    for i in 0..runs {
        let s = first.wrapping_add(i as u64);
        let took = run(s, nodes, rounds);
        println!("run {}/{runs} (seed {s}): converged in {took:?}", i + 1);
        times.push(took);
    }
    println!(
        "partitions: {runs} runs of {nodes} nodes, {rounds} cut/heal rounds each (first seed {first}): \
         convergence after the final heal p50 {:.1} s, p99 {:.1} s, max {:.1} s",
        percentile(&times, 0.50).as_secs_f64(),
        percentile(&times, 0.99).as_secs_f64(),
        percentile(&times, 1.0).as_secs_f64()
    );
}

/// The network of one run: organisations, their nodes, and one forwarder per link.
struct Net {
    orgs: Vec<Org>,
    nodes: Vec<TestNode>,
    links: BTreeMap<(usize, usize), Forwarder>,
}

/// One seeded run: `n` nodes, `rounds` rounds of random cuts and heals with records
/// authored during each, then a final heal. Returns how long convergence took after it.
fn run(seed: u64, n: usize, rounds: usize) -> Duration {
    let mut rng = Rng::new(seed);
    let net = start(n);
    let files = all_examples();
    let mut authored: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..rounds {
        // Cut about half the links, heal the others.
        let mut cut = Vec::new();
        for (&(i, j), f) in &net.links {
            if rng.chance(50) {
                f.cut();
                cut.push(format!("{i}-{j}"));
            } else {
                f.heal();
            }
        }
        eprintln!("round {round}: cut {}", cut.join(" "));
        for _ in 0..2 + rng.index(2) {
            let author = rng.index(n);
            let share = match rng.below(10) {
                0..=4 => "coalition".to_string(),
                5..=8 => {
                    let mut keys = vec![net.orgs[(author + 1 + rng.index(n - 1)) % n].key()];
                    if rng.chance(50) {
                        keys.push(net.orgs[(author + 1 + rng.index(n - 1)) % n].key());
                    }
                    keys.join(",")
                }
                _ => "private".to_string(),
            };
            let file = &files[rng.index(files.len())];
            let id = net.orgs[author].add(file, &share);
            authored.insert(id, author);
        }
        // Let the partition sync what it can before the links change again.
        std::thread::sleep(Duration::from_millis(500) + rng.upto(Duration::from_millis(1500)));
    }
    for f in net.links.values() {
        f.heal();
    }
    let healed = Instant::now();
    while let Some(why) = divergence(&net.orgs) {
        assert!(
            healed.elapsed() < CONVERGE_WITHIN,
            "seed {seed}: not converged {CONVERGE_WITHIN:?} after the final heal: {why}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = healed.elapsed();
    // Every acknowledged record is held by its author, so it is in the union divergence
    // compared against; check that explicitly, and that every link was really used.
    let union = union(&net.orgs);
    for (id, author) in &authored {
        assert!(
            union.contains_key(id),
            "seed {seed}: record {id} authored on node {author} is held nowhere"
        );
    }
    for ((i, j), f) in &net.links {
        assert!(f.forwarded() > 0, "link {i}-{j} never carried a connection");
    }
    // The cuts really cut: they closed connections the nodes were using.
    let dropped: u64 = net.links.values().map(Forwarder::dropped).sum();
    assert!(dropped > 0, "no cut closed a live connection");
    for (k, org) in net.orgs.iter().enumerate() {
        let listed = org.list(true);
        let ids: BTreeSet<&str> = listed.iter().filter_map(|f| f["id"].as_str()).collect();
        assert_eq!(ids.len(), listed.len(), "node {k} lists a finding twice");
        org.run(["verify"]).ok();
    }
    let Net { nodes, .. } = net;
    for node in nodes {
        node.stop();
    }
    took
}

/// Founds a coalition of `n` organisations and starts their nodes, each dialling the
/// earlier ones through a forwarder of its own per link.
fn start(n: usize) -> Net {
    let orgs: Vec<Org> = (0..n)
        .map(|i| Org::init(&format!("Partition Org {i}"), COUNTRIES[i]))
        .collect();
    let refs: Vec<&Org> = orgs.iter().collect();
    found("Partition Coalition", &refs, (n / 2 + 1) as u32);
    let mut nodes: Vec<TestNode> = Vec::new();
    let mut links = BTreeMap::new();
    for (j, org) in orgs.iter().enumerate() {
        let mut bootstrap = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let f = Forwarder::to_node(&node.tcp);
            bootstrap.push(f.addr_for(&node.peer));
            links.insert((i, j), f);
        }
        let refs: Vec<&str> = bootstrap.iter().map(String::as_str).collect();
        // Every inbound connection comes from 127.0.0.1 (a forwarder): lift the per-IP
        // limits meant for the open internet.
        let extra = format!(
            "bootstrap = {}\nmax_connections_per_ip = 64\nhello_timeouts_per_ip = 1000",
            toml_list(&refs)
        );
        nodes.push(org.start_node(&format!("node{j}"), &extra));
    }
    Net { orgs, nodes, links }
}

/// Every record any store holds, by id.
fn union(orgs: &[Org]) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for org in orgs {
        for r in org.all_records() {
            all.insert(r["id"].as_str().expect("id").to_string(), r);
        }
    }
    all
}

/// Whether `key`'s organisation may hold `r`: its own, the coalition's, one that lists it
/// among its members, or a sealed one (every member relays those, reading only its own).
fn entitled(key: &str, r: &Value) -> bool {
    r["author"] == key
        || r["sealed"] == true
        || match r["audience"]["kind"].as_str() {
            Some("coalition") => true,
            Some("members") => r["audience"]["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|k| k == key)),
            _ => false,
        }
}

/// `None` once every node holds exactly what it is entitled to (once each); else what
/// differs first.
fn divergence(orgs: &[Org]) -> Option<String> {
    let stores: Vec<Vec<Value>> = orgs.iter().map(Org::all_records).collect();
    let mut union: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in stores.iter().flatten() {
        union.insert(r["id"].as_str().expect("id"), r);
    }
    for (k, (org, records)) in orgs.iter().zip(&stores).enumerate() {
        let held: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
        let set: BTreeSet<&str> = held.iter().copied().collect();
        // Duplicates and records outside the audience are never tolerated, converged
        // or not.
        assert_eq!(set.len(), held.len(), "node {k} holds a record twice");
        if let Some(r) = records.iter().find(|r| !entitled(org.key(), r)) {
            panic!("node {k} holds a record outside its audience: {r}");
        }
        // A sealed record opens only for its author and its audience.
        let reads = |r: &Value| {
            r["author"] == org.key()
                || r["audience"]["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|k| k == org.key()))
        };
        if let Some(r) = records
            .iter()
            .find(|r| r["sealed"] == true && r["schema"] != "sealed/v1" && !reads(r))
        {
            panic!("node {k} reads a sealed record that is not for it: {r}");
        }
        let want: BTreeSet<&str> = union
            .iter()
            .filter(|(_, r)| entitled(org.key(), r))
            .map(|(id, _)| *id)
            .collect();
        if want != set {
            let missing = want.difference(&set).count();
            return Some(format!("node {k} misses {missing} records"));
        }
    }
    None
}
