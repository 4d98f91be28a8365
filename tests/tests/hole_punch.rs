//! DCUtR hole punching through NAT, end to end: a relay on a "public" network and two
//! members each behind its own masquerading NAT, every host a network namespace the test
//! creates (one thread per namespace; the processes a thread starts inherit it). The
//! members reach each other first through the relay, then directly. Where namespaces,
//! `ip` or `iptables` are not available the test prints `SKIPPED: …` and passes.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use coalition_tests::{eventually, found, held, toml_list, Org, TestNode};
use serde_json::Value;

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a network namespace of its own (loopback up), running the jobs
/// sent to it; the namespace ends with the thread and the processes it started.
struct Netns {
    tid: i32,
    jobs: mpsc::Sender<Job>,
}

impl Netns {
    fn new() -> Result<Self, String> {
        let (ready_tx, ready) = mpsc::channel();
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map(|()| nix::unistd::gettid().as_raw())
                .map_err(|e| {
                    format!("cannot create a network namespace ({e}); needs root or CAP_SYS_ADMIN")
                });
            let ok = made.is_ok();
            ready_tx.send(made).ok();
            if ok {
                for job in rx {
                    job();
                }
            }
        });
        let tid = ready.recv().map_err(|e| e.to_string())??;
        let ns = Self { tid, jobs };
        ns.sh(&["ip link set lo up"])?;
        Ok(ns)
    }

    /// Runs `f` in the namespace and returns its result (a panic in it is re-raised).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move || {
                tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
                    .ok();
            }))
            .expect("namespace thread alive");
        match rx.recv().expect("namespace thread answered") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs each command line (split on spaces; `{}` → nothing) in the namespace.
    fn sh(&self, lines: &[&str]) -> Result<(), String> {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        self.run(move || {
            for line in lines {
                let words: Vec<&str> = line.split_whitespace().collect();
                let out = std::process::Command::new(words[0])
                    .args(&words[1..])
                    .output()
                    .map_err(|e| format!("cannot run `{line}` ({e})"))?;
                if !out.status.success() {
                    return Err(format!(
                        "`{line}` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            Ok(())
        })
    }
}

/// A veth pair: `a_end` in `a` with `a_addr`, `b_end` in `b` with `b_addr` (CIDR).
fn link(
    a: &Netns,
    a_end: &str,
    a_addr: &str,
    b: &Netns,
    b_end: &str,
    b_addr: &str,
) -> Result<(), String> {
    a.sh(&[&format!(
        "ip link add {a_end} type veth peer name {b_end} netns {}",
        b.tid
    )])?;
    a.sh(&[
        &format!("ip addr add {a_addr} dev {a_end}"),
        &format!("ip link set {a_end} up"),
    ])?;
    b.sh(&[
        &format!("ip addr add {b_addr} dev {b_end}"),
        &format!("ip link set {b_end} up"),
    ])
}

/// The hosts: relay `r` on the public network (10.0.1.1 towards NAT A, 10.0.2.1 towards
/// NAT B), NAT boxes `nat_a` (public 10.0.1.2) and `nat_b` (10.0.2.2) masquerading for
/// `a` (192.168.1.2) and `b` (192.168.2.2), dropping what comes from outside unasked.
/// Nothing routes to the private networks.
struct World {
    r: Netns,
    a: Netns,
    b: Netns,
    _nats: [Netns; 2],
}

fn world() -> Result<World, String> {
    let (r, nat_a, nat_b, a, b) = (
        Netns::new()?,
        Netns::new()?,
        Netns::new()?,
        Netns::new()?,
        Netns::new()?,
    );
    r.sh(&["sysctl -q -w net.ipv4.ip_forward=1"])?;
    link(&r, "pa", "10.0.1.1/24", &nat_a, "wan", "10.0.1.2/24")?;
    link(&r, "pb", "10.0.2.1/24", &nat_b, "wan", "10.0.2.2/24")?;
    link(
        &nat_a,
        "lan",
        "192.168.1.1/24",
        &a,
        "eth0",
        "192.168.1.2/24",
    )?;
    link(
        &nat_b,
        "lan",
        "192.168.2.1/24",
        &b,
        "eth0",
        "192.168.2.2/24",
    )?;
    for (nat, up) in [(&nat_a, "10.0.1.1"), (&nat_b, "10.0.2.1")] {
        nat.sh(&[
            "sysctl -q -w net.ipv4.ip_forward=1",
            &format!("ip route add default via {up}"),
            "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE",
            // Like most home routers: unsolicited packets from outside are dropped (not
            // answered with a reset), so a hole punch's first SYN waits for the other's.
            "iptables -A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP",
        ])?;
    }
    a.sh(&["ip route add default via 192.168.1.1"])?;
    b.sh(&["ip route add default via 192.168.2.1"])?;
    Ok(World {
        r,
        a,
        b,
        _nats: [nat_a, nat_b],
    })
}

/// Starts `org`'s node in `ns` with `[network]` lines `extra`.
fn start(ns: &Netns, org: &Arc<Org>, name: &'static str, extra: String) -> TestNode {
    let org = Arc::clone(org);
    ns.run(move || org.start_node(name, &extra))
}

/// `peers --json` at `org` (run where its API is), the entry for `peer`.
fn peer_entry(ns: &Netns, org: &Arc<Org>, peer: &str) -> Option<Value> {
    let (org, peer) = (Arc::clone(org), peer.to_string());
    ns.run(move || org.peer(&peer).filter(|p| !p["organisation_key"].is_null()))
}

#[test]
fn members_behind_two_nats_meet_through_the_relay_then_punch_a_direct_connection() {
    let w = match world() {
        Ok(w) => w,
        Err(why) => {
            eprintln!("SKIPPED: DCUtR through NAT was not tested: {why}");
            return;
        }
    };
    let (r, a, b) = (
        Arc::new(Org::init("Org R", "RS")),
        Arc::new(Org::init("Org A", "XK")),
        Arc::new(Org::init("Org B", "MK")),
    );
    found("Relay Coalition", &[&r, &a, &b], 2);
    let lan = "listen = [\"/ip4/0.0.0.0/tcp/0\"]";
    let nr = start(&w.r, &r, "R", format!("{lan}\nrelay_server = true"));
    let relay_at = |net: &str| {
        nr.addrs
            .iter()
            .find(|x| x.starts_with(&format!("/ip4/{net}/tcp/")))
            .unwrap_or_else(|| panic!("R listens on no {net} address: {:?}", nr.addrs))
            .clone()
    };
    let (r_for_a, r_for_b) = (relay_at("10.0.1.1"), relay_at("10.0.2.1"));
    let na = start(
        &w.a,
        &a,
        "A",
        format!(
            "{lan}\nbootstrap = {}\nrelays = {}",
            toml_list(&[&r_for_a]),
            toml_list(&[&r_for_a])
        ),
    );
    let for_b = a.add_example("02-rs-novi-sad-student-detention.json", b.key());
    // B reaches A's reservation through R's address on its side of the network.
    let circuit = format!("{r_for_b}/p2p-circuit/p2p/{}", na.peer);
    let nb = start(
        &w.b,
        &b,
        "B",
        format!("{lan}\nbootstrap = {}", toml_list(&[&r_for_b, &circuit])),
    );
    eventually(
        "B received A's record for B (relayed or direct)",
        Duration::from_secs(60),
        || held(&b).contains(&for_b),
    );
    let mut entry = Value::Null;
    let took = eventually(
        "B reaches A over a direct (hole-punched) connection",
        Duration::from_secs(60),
        || {
            entry = peer_entry(&w.b, &b, &na.peer).unwrap_or_default();
            entry["relayed"] == false
        },
    );
    let address = entry["address"].as_str().unwrap_or_default().to_string();
    eprintln!("B reached A directly within {took:?} at {address}");
    assert!(
        address.starts_with("/ip4/10.0.1.2/"),
        "the direct connection is not to A's NAT: {entry}"
    );
    for (ns, n) in [(&w.b, nb), (&w.a, na), (&w.r, nr)] {
        ns.run(move || n.stop());
    }
}
