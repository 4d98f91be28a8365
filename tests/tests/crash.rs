//! Crash consistency (issue 18): `coalition run` and the CLI writers (`finding add`,
//! `import`) are killed with SIGKILL at random, seeded moments while they author, import
//! and sync, and after every kill the store must pass `coalition verify`, hold every
//! record whose id was acknowledged, and hold nothing twice.
//!
//! Three organisations: A runs a node throughout (the sync source), B is the victim (its
//! node and its CLI writers are killed), and C is an author without a node whose records
//! are signed here, in-process, and reach B by `coalition import` of bundles or by sync
//! from A. "Acknowledged" means: an id `finding add` printed (a full line, even if the
//! process was killed right after), every record of a bundle `import --json` reported on,
//! every record B's store showed at an earlier check, and the count of records a node's
//! `synced` log lines said it stored.
//!
//! `crash_kills_lose_nothing` (default tests) does about 20 kills; the soak
//! `crash_soak` (ignored; `scripts/soak.sh`) a thousand, or `COALITION_SOAK_KILLS`, in
//! worlds of `WORLD_KILLS` kills each (a fresh coalition and store per world, so every
//! kill is checked against a store of the same size range and a thousand kills take
//! minutes, not hours: the full-store checks after each kill grow with the store).
//! `COALITION_SEED` replays a run.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coalition::finding::{to_payload, FINDING_SCHEMA};
use coalition::identity::Identity;
use coalition::now_ms;
use coalition::record::{self, Audience, Draft, RecordId};
use coalition::sample::{example_findings, varied};
use coalition_tests::chaos::{env_count, seed, Rng};
use coalition_tests::{
    all_examples, coalition_bin, examples_dir, found, is_hex, toml_list, write_bundle, Org,
    TestNode, PASSPHRASE,
};
use serde_json::Value;

/// Longest a node under test stays up before it is killed.
const NODE_WINDOW: Duration = Duration::from_millis(2000);

/// Kills per world of the soak: each world is a fresh coalition and store.
const WORLD_KILLS: usize = 250;

#[test]
fn crash_kills_lose_nothing() {
    let figures = Soak::new(seed("crash test")).run(20);
    figures.assert_clean();
}

#[test]
#[ignore = "a soak of a thousand kills (tens of minutes); run by scripts/soak.sh"]
fn crash_soak() {
    let kills = env_count("COALITION_SOAK_KILLS", 1000);
    let base = seed("crash soak");
    let start = Instant::now();
    let mut total = Figures {
        seed: base,
        ..Figures::default()
    };
    // World w runs with seed base + w, so the printed base seed replays all of them.
    for world in 0.. {
        let left = kills.saturating_sub(total.kills);
        if left == 0 {
            break;
        }
        let f = Soak::new(base.wrapping_add(world)).run(left.min(WORLD_KILLS));
        total.add(f);
        total.took = start.elapsed();
        total.print();
    }
    total.assert_clean();
}

/// What a soak counted.
#[derive(Debug, Default)]
struct Figures {
    seed: u64,
    kills: usize,
    node_kills: usize,
    add_kills: usize,
    import_kills: usize,
    acknowledged: usize,
    lost: usize,
    duplicated: usize,
    store_failures: usize,
    writer_errors: usize,
    details: Vec<String>,
    took: Duration,
}

impl Figures {
    /// Adds the figures of one more world (keeping this run's seed).
    fn add(&mut self, f: Figures) {
        self.kills += f.kills;
        self.node_kills += f.node_kills;
        self.add_kills += f.add_kills;
        self.import_kills += f.import_kills;
        self.acknowledged += f.acknowledged;
        self.lost += f.lost;
        self.duplicated += f.duplicated;
        self.store_failures += f.store_failures;
        self.writer_errors += f.writer_errors;
        for d in f.details {
            if self.details.len() < 20 {
                self.details.push(format!("(seed {}) {d}", f.seed));
            }
        }
    }

    fn problem(&mut self, what: String) {
        eprintln!("PROBLEM: {what}");
        if self.details.len() < 20 {
            self.details.push(what);
        }
    }

    fn print(&self) {
        println!(
            "crash consistency (seed {}): {} kills ({} coalition run, {} finding add, {} import), \
             {} acknowledged records, lost {}, duplicated {}, store failures {}, writer errors {}, in {:.0} s",
            self.seed,
            self.kills,
            self.node_kills,
            self.add_kills,
            self.import_kills,
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.store_failures,
            self.writer_errors,
            self.took.as_secs_f64()
        );
    }

    #[track_caller]
    fn assert_clean(&self) {
        self.print();
        assert!(
            self.lost == 0
                && self.duplicated == 0
                && self.store_failures == 0
                && self.writer_errors == 0,
            "crash consistency broken (replay with COALITION_SEED={}):\n{}",
            self.seed,
            self.details.join("\n")
        );
    }
}

/// How a killed-or-finished CLI writer ended.
struct Ended {
    killed: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

struct Soak {
    rng: Rng,
    a: Org,
    b: Org,
    c_id: Identity,
    c_head: (u64, Option<RecordId>),
    epoch: [u8; 32],
    examples: Vec<Value>,
    files: Vec<PathBuf>,
    na: TestNode,
    /// Ids B must hold.
    acked: BTreeSet<String>,
    /// Bundles of C's records B has not acknowledged yet (imported again later).
    pending: Vec<(PathBuf, Vec<String>)>,
    bundles: usize,
    /// Distinct records B's store held at the last check.
    held: usize,
    /// After a sync: B's count before it and the records its node logged as stored.
    floor: Option<(usize, usize)>,
    est_add: Duration,
    est_import: Duration,
    f: Figures,
}

impl Soak {
    fn new(seed: u64) -> Soak {
        let (a, b, c) = (
            Org::init("Crash Org A", "RS"),
            Org::init("Crash Org B", "XK"),
            Org::init("Crash Org C", "MK"),
        );
        found("Crash Coalition", &[&a, &b, &c], 2);
        // The current epoch, from a record A makes under it.
        let first = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
        let epoch_hex = a
            .all_records()
            .into_iter()
            .find(|r| r["id"] == first.as_str())
            .and_then(|r| r["epoch"].as_str().map(str::to_string))
            .expect("A's finding names its epoch");
        let epoch: [u8; 32] = hex::decode(&epoch_hex)
            .expect("hex epoch")
            .try_into()
            .expect("32-byte epoch");
        let c_id = Identity::load(&c.home().join("key.enc"), PASSPHRASE).expect("C's key");
        let c_head = c
            .all_records()
            .iter()
            .filter(|r| r["author"] == c.key())
            .map(|r| {
                let seq = r["seq"].as_u64().expect("seq");
                let id: RecordId = r["id"].as_str().expect("id").parse().expect("record id");
                (seq, Some(id))
            })
            .max_by_key(|(s, _)| *s)
            .unwrap_or((0, None));
        let na = a.start_node("A", "bootstrap = []");
        let examples = example_findings(&examples_dir()).expect("examples");
        let mut soak = Soak {
            rng: Rng::new(seed),
            a,
            b,
            c_id,
            c_head,
            epoch,
            examples,
            files: all_examples(),
            na,
            acked: BTreeSet::new(),
            pending: Vec::new(),
            bundles: 0,
            held: 0,
            floor: None,
            est_add: Duration::from_secs(1),
            est_import: Duration::from_millis(300),
            f: Figures {
                seed,
                ..Figures::default()
            },
        };
        // One unkilled add and import measure how long each takes here.
        soak.author(false);
        soak.import(false);
        soak.check("setup");
        soak
    }

    /// Kills until `kills` SIGKILLs were sent, checking B's store after each.
    fn run(mut self, kills: usize) -> Figures {
        let start = Instant::now();
        let mut round = 0;
        while self.f.kills < kills {
            round += 1;
            match self.rng.below(10) {
                0..=3 => self.author(true),
                4..=6 => self.import(true),
                _ => self.sync(),
            }
            self.check(&format!("round {round}"));
            if round % 50 == 0 {
                self.f.took = start.elapsed();
                self.f.acknowledged = self.acked.len();
                self.f.print();
            }
        }
        self.f.took = start.elapsed();
        self.f.acknowledged = self.acked.len();
        std::mem::take(&mut self.f)
    }

    /// Runs `coalition --home B ARGS` and, when `kill`, sends it SIGKILL after a random
    /// moment within `window` unless it ended first.
    fn writer(&mut self, args: &[OsString], window: Duration, kill: bool) -> Ended {
        let delay = if kill {
            self.rng.upto(window)
        } else {
            Duration::from_secs(60)
        };
        let start = Instant::now();
        let mut child = Command::new(coalition_bin())
            .arg("--home")
            .arg(self.b.home())
            .args(args)
            .env_remove("COALITION_HOME")
            .env_remove("COALITION_LOG")
            .env("COALITION_PASSPHRASE", PASSPHRASE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coalition");
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).ok();
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("stdout")));
        let err = drain(Box::new(child.stderr.take().expect("stderr")));
        let (killed, status) = loop {
            if let Some(status) = child.try_wait().expect("wait for coalition") {
                break (false, Some(status));
            }
            if start.elapsed() >= delay {
                child.kill().expect("SIGKILL");
                child.wait().ok();
                break (true, None);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        Ended {
            killed,
            code: status.and_then(|s| s.code()),
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
            took: start.elapsed(),
        }
    }

    fn writer_failed(&mut self, what: &str, e: &Ended) {
        self.f.writer_errors += 1;
        self.f.problem(format!(
            "{what} exited {:?} unkilled:\n{}\n{}",
            e.code, e.stdout, e.stderr
        ));
    }

    /// `finding add` on B, shared with the coalition, with A only, or kept private.
    fn author(&mut self, kill: bool) {
        let file = self.files[self.rng.index(self.files.len())].clone();
        let share = match self.rng.below(3) {
            0 => "coalition".to_string(),
            1 => format!("{},{}", self.a.key(), self.b.key()),
            _ => "private".to_string(),
        };
        let args: Vec<OsString> = vec![
            "finding".into(),
            "add".into(),
            file.into(),
            "--share".into(),
            share.into(),
        ];
        let window = self.est_add + self.est_add / 4;
        let e = self.writer(&args, window, kill);
        // An id printed in full is acknowledged, whether or not the process lived on.
        if let Some(line) = e.stdout.split_inclusive('\n').next() {
            let id = line.trim_end();
            if line.ends_with('\n') && is_hex(id, 64) {
                self.acked.insert(id.to_string());
            }
        }
        if e.killed {
            self.f.kills += 1;
            self.f.add_kills += 1;
        } else if e.code == Some(0) {
            self.est_add = (self.est_add * 3 + e.took) / 4;
        } else {
            self.writer_failed("finding add", &e);
        }
    }

    /// Signs the next `count` records of C's chain into a new bundle.
    fn c_bundle(&mut self, count: usize) -> (PathBuf, Vec<String>) {
        let (mut seq, mut prev) = self.c_head;
        let mut bytes = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            seq += 1;
            let r = record::sign(
                &self.c_id,
                seq,
                prev,
                Draft {
                    schema: FINDING_SCHEMA.into(),
                    audience: Audience::Coalition,
                    supersedes: None,
                    epoch: Some(self.epoch),
                    payload: to_payload(&varied(
                        &self.examples,
                        seq as usize,
                        &format!("crash-{seq}"),
                    )),
                    created_at_ms: now_ms(),
                },
            );
            prev = Some(r.id);
            ids.push(r.id.to_hex());
            bytes.push(r.bytes);
        }
        self.c_head = (seq, prev);
        self.bundles += 1;
        let path = self.b.path(&format!("c-{}.bundle", self.bundles));
        write_bundle(&path, &bytes);
        (path, ids)
    }

    /// `import` on B of a new bundle of C's records, or again of one not acknowledged.
    fn import(&mut self, kill: bool) {
        let (path, ids) = if !self.pending.is_empty() && self.rng.chance(30) {
            let i = self.rng.index(self.pending.len());
            self.pending.swap_remove(i)
        } else {
            let n = 1 + self.rng.index(80);
            self.c_bundle(n)
        };
        let args: Vec<OsString> = vec!["import".into(), path.clone().into(), "--json".into()];
        let window = self.est_import + self.est_import / 4;
        let e = self.writer(&args, window, kill);
        let report: Option<Value> = serde_json::from_str(&e.stdout).ok();
        match report {
            // A report printed is an acknowledgement of every record it did not refuse.
            Some(r) if r["failures"].as_array().is_some_and(Vec::is_empty) => {
                self.acked.extend(ids);
                if !e.killed {
                    self.est_import = (self.est_import * 3 + e.took) / 4;
                }
            }
            Some(r) => {
                self.f.writer_errors += 1;
                self.f.problem(format!("import refused records of C: {r}"));
            }
            None if e.killed => self.pending.push((path, ids)),
            None => self.writer_failed("import", &e),
        }
        if e.killed {
            self.f.kills += 1;
            self.f.import_kills += 1;
        }
    }

    /// B's node syncs from A (which was just given new records of C) and is killed at a
    /// random moment, sometimes while a `finding add` on B runs beside it.
    fn sync(&mut self) {
        let n = 10 + self.rng.index(110);
        let (bundle, _) = self.c_bundle(n);
        self.a.import(&bundle).ok();
        let before = self.held;
        let log = self.b.path("node.log");
        let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
        let mut nb = self
            .b
            .start_node("B", &format!("bootstrap = {}", toml_list(&[&self.na.tcp])));
        let up = self.rng.upto(NODE_WINDOW);
        let since = Instant::now();
        if self.rng.chance(40) {
            self.author(true);
        }
        std::thread::sleep(up.saturating_sub(since.elapsed()));
        nb.kill();
        drop(nb);
        self.f.kills += 1;
        self.f.node_kills += 1;
        let text = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[log_from.min(text.len())..]).into_owned();
        let stored: usize = text
            .lines()
            .filter(|l| l.contains("synced"))
            .filter_map(|l| {
                let at = l.find("stored=")? + "stored=".len();
                l[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        // The store must now hold at least what it held plus what the node said it stored;
        // `check` (next) counts it.
        self.floor = Some((before, stored));
    }

    /// After a kill: B's store verifies, holds every acknowledged id, holds nothing twice.
    fn check(&mut self, when: &str) {
        let verify = self.b.run(["verify", "--json"]);
        let report: Option<Value> = serde_json::from_str(&verify.stdout).ok();
        let clean = report.as_ref().is_some_and(|r| {
            ["failures", "evidence", "equivocations"]
                .iter()
                .all(|k| r[k].as_array().is_some_and(Vec::is_empty))
        });
        if verify.code != 0 || !clean {
            self.f.store_failures += 1;
            self.f.problem(format!(
                "{when}: `coalition verify` of B's store exited {}:\n{}\n{}",
                verify.code, verify.stdout, verify.stderr
            ));
            return;
        }
        let records = self.b.all_records();
        let ids: Vec<String> = records
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect();
        let held: BTreeSet<String> = ids.iter().cloned().collect();
        self.held = held.len();
        if let Some((before, stored)) = self.floor.take() {
            if held.len() < before + stored {
                self.f.lost += before + stored - held.len();
                self.f.problem(format!(
                    "{when}: B held {before} records, its node logged {stored} stored by sync, and after the kill it holds {}",
                    held.len()
                ));
            }
        }
        if held.len() != ids.len() {
            self.f.duplicated += ids.len() - held.len();
            self.f
                .problem(format!("{when}: B's export lists a record twice"));
        }
        let slots: BTreeSet<(String, u64)> = records
            .iter()
            .map(|r| {
                (
                    r["author"].as_str().unwrap_or_default().to_string(),
                    r["seq"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        if slots.len() != records.len() {
            self.f.duplicated += records.len() - slots.len();
            self.f.problem(format!(
                "{when}: B holds two records at one author's sequence number"
            ));
        }
        let lost: Vec<&String> = self.acked.difference(&held).collect();
        if !lost.is_empty() {
            self.f.lost += lost.len();
            self.f.problem(format!(
                "{when}: B lost {} acknowledged records, e.g. {}",
                lost.len(),
                lost[0]
            ));
            // Each loss is counted once.
            let lost: Vec<String> = lost.into_iter().cloned().collect();
            for id in lost {
                self.acked.remove(&id);
            }
        }
        // What B showed once is acknowledged from now on.
        self.acked.extend(held);
    }
}
