//! Relay and hole punching, end to end: real `coalition run` processes on loopback. A
//! member (A) holds a reservation with a member that serves as relay (R); another member
//! (C) knows only R and A's circuit address through R, never A's direct address, and
//! still receives what A shares with it, while R, which is not in the audience, never
//! holds it.
//!
//! Each node logs to `node.log` in its directory (printed on failure). To keep the logs,
//! set `RELAY_TEST_LOG_DIR=DIR`; `RELAY_TEST_COALITION_LOG` overrides the log filter
//! (default `info,libp2p=warn`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coalition_tests::{coalition_bin, eventually, example, found, held, Org, PASSPHRASE};
use serde_json::Value;

struct Running {
    name: &'static str,
    child: Child,
    tcp: String,
    peer: String,
    lines: mpsc::Receiver<String>,
    /// Lines printed before the `api listening on` line that `start` did not use.
    early: Vec<String>,
    log: PathBuf,
}

impl Running {
    /// Waits until the node prints `line` on stdout.
    #[track_caller]
    fn wait_line(&self, line: &str, timeout: Duration) {
        if self.early.iter().any(|l| l == line) {
            return;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => {}
                Err(_) => panic!("{} did not print {line:?} within {timeout:?}", self.name),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(d) = std::env::var("RELAY_TEST_LOG_DIR") {
            let _ = std::fs::copy(&self.log, format!("{d}/{}.log", self.name));
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last log lines of {}", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Writes the `[network]` section: loopback TCP on a free port, fast syncs, and `extra`.
fn configure(org: &Org, extra: &str) {
    let path = org.home().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let base = text.split("\n[network]").next().unwrap().trim_end();
    std::fs::write(
        &path,
        format!(
            "{base}\n\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n{extra}\nsync_interval_secs = 1\nhello_timeout_secs = 3\n\n[api]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
}

fn list(addrs: &[&str]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn start(org: &Org, name: &'static str, extra: &str) -> Running {
    configure(org, extra);
    let log = org.path("node.log");
    let mut child = Command::new(coalition_bin())
        .arg("--home")
        .arg(org.home())
        .arg("run")
        .env("COALITION_PASSPHRASE", PASSPHRASE)
        .env(
            "COALITION_LOG",
            std::env::var("RELAY_TEST_COALITION_LOG").unwrap_or("info,libp2p=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start coalition run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut tcp, mut peer, mut api, mut early) = (None, None, false, Vec::new());
    while tcp.is_none() || peer.is_none() || !api {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{name} printed its addresses in time"));
        if let Some(p) = line.strip_prefix("peer ") {
            peer = Some(p.to_string());
        } else if let Some(a) = line.strip_prefix("listening on ") {
            tcp = Some(a.to_string());
        } else if line.starts_with("api listening on ") {
            api = true;
        } else {
            early.push(line);
        }
    }
    Running {
        name,
        child,
        tcp: tcp.unwrap(),
        peer: peer.unwrap(),
        lines: rx,
        early,
        log,
    }
}

fn stop(mut node: Running) {
    let pid = node.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if node.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not stop on SIGTERM within 20 s", node.name);
}

fn status(org: &Org) -> Value {
    org.run(["status", "--json"]).ok().json()
}

/// The entry of `peers --json` for `peer`, if connected.
fn peer_entry(org: &Org, peer: &str) -> Option<Value> {
    org.run(["peers", "--json"])
        .ok()
        .json()
        .as_array()
        .expect("peers is a JSON array")
        .iter()
        .find(|p| p["peer_id"] == peer)
        .cloned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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
    let nr = start(&r, "R", "relay_server = true");
    let na = start(
        &a,
        "A",
        &format!(
            "bootstrap = {}\nrelays = {}",
            list(&[&nr.tcp]),
            list(&[&nr.tcp])
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
    let for_c = a.add(&example("02-rs-novi-sad-student-detention.json"), c.key());
    let made_ms = now_ms();

    // C knows R and A's circuit address, never A's direct address.
    let c_bootstrap = list(&[&nr.tcp, &circuit]);
    assert!(!c_bootstrap.contains(&na.tcp));
    let nc = start(&c, "C", &format!("bootstrap = {c_bootstrap}"));
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
        stop(n);
    }
    for o in [&r, &a, &c] {
        o.run(["verify"]).ok();
    }
}
