//! Network benchmarks (issue 4): real `coalition run` processes (release build) on
//! loopback, each with its own temporary home and ports.
//!
//! `cargo bench -p coalition-tests --bench network` prints, in one run:
//!
//! 1. **Full sync**: a source node holding `COALITION_BENCH_RECORDS` (default 100,000)
//!    `finding/v1` records (shared with the coalition, authored by four members under the
//!    founding epoch, signed in-process and `coalition import`ed) and an empty node that
//!    dials it. Records/s from the empty node's start (its `peer` line) to the
//!    `received_at` of the last record it stored, and the ratio to the raw ed25519
//!    `verify_strict` rate on one core measured in the same run (target >= 0.50). Two
//!    full syncs, a (every signature verified first) and b (records taken on their
//!    authors' verified checkpoints; three times, each into a fresh copy of the empty
//!    node's home, taken at the median), each as a ratio to the SQLite insert floor,
//!    measured five times in the run (before a, between a and b, after each b) and taken
//!    at the median.
//! 2. **Incremental sync**: 10 new records `coalition import`ed into the source while both
//!    nodes hold the same 100,000; the syncs that carried them, from the `synced` log
//!    lines of the nodes: round trips and `/coalition/sync/1` bytes in both directions
//!    (target < 64 KiB and a handful of round trips).
//! 3. **Propagation**: `COALITION_BENCH_NODES` (default 10) nodes in a full mesh, then in a
//!    line; `COALITION_BENCH_PROPAGATIONS` (default 30) findings added one after another
//!    at node 0 (the end of the line). Latency of each record = `received_at` in each
//!    node's store minus `received_at` in node 0's store (same machine, same clock):
//!    p50/p99 until every node holds it, and per node.
//!
//! 4. **Sealed sync** (`network/sealed.rs`): full syncs of a set half sealed for the
//!    receiver, and through a relaying member that cannot read them, as ratios to a
//!    full sync of the same number of clear records in the same run.
//!
//! `-- sync` runs only 1 and 2, `-- propagation` only 3, `-- sealed` only 4. These are figures, not
//! assertions: the bench fails only if something does not arrive at all. Without
//! `--bench` (`cargo test --benches`/`--all-targets`) it runs a tiny smoke version with the
//! debug binary.
//!
//! `COALITION_BENCH_KEEP=1` keeps the homes and node logs afterwards.
//! `COALITION_BENCH_LOG` sets the nodes' log filter (default `warn,coalition::net=info`);
//! `warn,coalition=debug` adds each sync page's fetch, check and store times and each
//! background checkpoint, to see which stage bounds a run (the logs are in the
//! temporary root, removed at the end).

use std::path::Path;
use std::time::{Duration, Instant};

use coalition::finding::FindingInput;
use coalition::identity::Identity;
use coalition::merkle::{Checkpoint, Cosignature, CHECKPOINT_SCHEMA, COSIGNATURE_SCHEMA};
use coalition::node::Node;
use coalition::now_ms;
use coalition::record::{Audience, RecordId};
use coalition::sample::{env_count, thousands, varied};
use coalition_tests::write_bundle;
use rayon::prelude::*;

#[path = "network/nodes.rs"]
mod nodes;
#[path = "network/records.rs"]
mod records;
#[path = "network/sealed.rs"]
mod sealed;

use nodes::{
    cli, configure, findings_held, print_synced, reader, received_at, start, synced_lines,
    wait_until, Daemon, Synced,
};
use records::{chain, examples, found, verify_rate, Head};

/// The node's allocator (`node/src/main.rs`), so that the insert floor measured in this
/// process allocates as the nodes do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSPHRASE: &str = "network benchmark passphrase";
/// Authoring members of the synced records (they run no node).
const AUTHORS: usize = 4;
/// New records of the incremental sync.
const NEW_RECORDS: usize = 10;
/// Sync interval of the empty node in benchmarks 1 and 2 (the source's is an hour, so
/// only the empty node starts periodic syncs).
const PULL_INTERVAL_SECS: u64 = 2;

struct Settings {
    full: bool,
    records: usize,
    verify_min: Duration,
    nodes: usize,
    propagations: usize,
    sync_timeout: Duration,
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---- 1 and 2: full and incremental sync ----------------------------------------------------

async fn sync_benchmarks(bin: &Path, s: &Settings, root: &Path) {
    let n = s.records;
    let authors: Vec<Identity> = (0..AUTHORS)
        .map(|a| Identity::from_seed(&[a as u8 + 41; 32]))
        .collect();
    let (orgs, epoch) = found(
        root,
        &[
            ("Source Watch (fictional)".into(), "RS"),
            ("Empty Node Monitor (fictional)".into(), "XK"),
            ("Per-Record Verifier (fictional)".into(), "GE"),
        ],
        &authors,
    )
    .await;
    let (source, empty, baseline) = (&orgs[0], &orgs[1], &orgs[2]);

    let t = Instant::now();
    let examples = examples();
    // Each author's findings, then its checkpoint over them all (as its node signs one a
    // day): what a sync from checkpoints vouches for.
    let chains: Vec<(Vec<Vec<u8>>, Head)> = authors
        .par_iter()
        .enumerate()
        .map(|(a, id)| {
            let count = n / AUTHORS + usize::from(a < n % AUTHORS);
            let (mut records, head) =
                chain(id, (0, None), count, epoch, &examples, &format!("a{a}"));
            let ids: Vec<RecordId> = records.iter().map(|b| RecordId::of(b)).collect();
            let (cp, head) = checkpoint_record(id, head, epoch, Checkpoint::of(&ids, &|_| true));
            records.push(cp);
            (records, head)
        })
        .collect();
    let heads: Vec<Head> = chains.iter().map(|c| c.1).collect();
    // Author 0's ids in seq order, for its checkpoints in benchmark 2.
    let mut ids0: Vec<RecordId> = chains[0].0.iter().map(|b| RecordId::of(b)).collect();
    let first_size = chains[0].0.last().map_or(0, Vec::len);
    let mut iters: Vec<_> = chains.into_iter().map(|c| c.0.into_iter()).collect();
    let mut records = Vec::with_capacity(n);
    loop {
        let before = records.len();
        for it in &mut iters {
            records.extend(it.next());
        }
        if records.len() == before {
            break;
        }
    }
    let avg = records.iter().map(Vec::len).sum::<usize>() / n.max(1);
    println!(
        "signed {n} finding/v1 records (audience coalition, {AUTHORS} member authors, founding epoch) and a checkpoint of each author's in {:.1} s, avg {avg} B",
        t.elapsed().as_secs_f64()
    );
    let (verify, msg) = verify_rate(&records, s.verify_min);
    println!(
        "raw ed25519 verify_strict, 1 core: {} records/s ({msg}-byte messages, {:.1} µs each)",
        thousands(verify),
        1e6 / verify
    );
    // What the check stage costs per record on one core, with and without the signature.
    let sample: Vec<(coalition::identity::OrgKey, u64, &Vec<u8>)> = records
        .iter()
        .take(5_000)
        .map(|b| {
            let r = coalition::record::verify(b).expect("a valid record");
            (r.author, r.seq, b)
        })
        .collect();
    let t = Instant::now();
    for (_, _, b) in &sample {
        coalition::check::prepare(b).expect("a valid record");
    }
    let full = t.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    let t = Instant::now();
    for (author, seq, b) in &sample {
        coalition::check::prepare_vouched(b, author, *seq).expect("a valid record");
    }
    let vouched = t.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    println!(
        "check of one record on one core: {full:.1} µs in full (check::prepare), {vouched:.1} µs without the signature (check::prepare_vouched)"
    );
    let mut floor = Floor::new(&records);
    let first = floor.measure(root).await;
    println!(
        "SQLite multi-row insert floor: the same records, checked beforehand, inserted by Store::insert into an empty encrypted store in 8 000-record transactions: {} records/s (measured again between and after the full syncs)",
        thousands(first)
    );
    let bundle_path = root.join("records.bundle");
    write_bundle(&bundle_path, &records);
    drop(records);
    let t = Instant::now();
    cli(
        bin,
        &source.home,
        &["import", bundle_path.to_str().expect("utf-8 path")],
    );
    println!(
        "`coalition import` into the source node: {:.1} s (setup, not a figure of this bench)",
        t.elapsed().as_secs_f64()
    );

    // ---- 1. full sync ------------------------------------------------------------------
    configure(&source.home, &[], Some(3600), true);
    let src = start(bin, &source.home, &root.join("source.log"));
    // 1a: every signature verified before storing (`sync_from_checkpoints = false`).
    configure(
        &baseline.home,
        std::slice::from_ref(&src.tcp),
        Some(PULL_INTERVAL_SECS),
        false,
    );
    let base = start(bin, &baseline.home, &root.join("baseline.log"));
    let base_pool = reader(&baseline.home).await;
    let (base_rate, base_secs) = full_sync(&base, &src, &base_pool, n, s.sync_timeout).await;
    base_pool.close().await;
    base.stop();
    floor.measure(root).await;
    // 1b: the same records, taken on each author's verified checkpoint, B_RUNS times, each
    // into a fresh copy of the empty node's home (as it was before its first sync), with
    // the insert floor measured again after each: a single sync drifted as much as the
    // floor does within a run, so both are taken as medians.
    // Its first start signs what a node signs once (its encryption key, its node
    // certificate) and makes its peer key; it is started once alone for that, so that
    // every run begins from the same home (a copy taken before a first start would sign
    // a different record at the same seq in each run: a fork of its own chain).
    configure(&empty.home, &[], None, true);
    start(bin, &empty.home, &root.join("empty-first-start.log")).stop();
    configure(
        &empty.home,
        std::slice::from_ref(&src.tcp),
        Some(PULL_INTERVAL_SECS),
        true,
    );
    let pristine = root.join("empty-home-before-its-first-sync");
    copy_dir(empty.home.dir(), &pristine);
    let mut b_runs: Vec<BRun> = Vec::with_capacity(B_RUNS);
    let mut last: Option<(Daemon, sqlx::SqlitePool)> = None;
    for run in 0..B_RUNS {
        if let Some((dst, pool)) = last.take() {
            pool.close().await;
            dst.stop();
            std::fs::remove_dir_all(empty.home.dir()).expect("remove the empty node's home");
            copy_dir(&pristine, empty.home.dir());
        }
        let src_mark = src.log_lines().len();
        let log = match run {
            0 => root.join("empty.log"),
            _ => root.join(format!("empty-{}.log", run + 1)),
        };
        let dst = start(bin, &empty.home, &log);
        let pool = reader(&empty.home).await;
        let (rate, secs) = full_sync(&dst, &src, &pool, n, s.sync_timeout).await;
        let vouched: u64 = synced_lines(&dst.log_lines())
            .iter()
            .map(|r| r.vouched)
            .sum();
        // b verifies the signatures of what it took on checkpoints after its sync: the
        // next floor is measured once that is done, with both nodes idle.
        let signatures = Instant::now();
        if vouched > 0 {
            wait_until(
                "the empty node verified the signatures of the records it took on checkpoints",
                s.sync_timeout,
                || {
                    dst.log_lines()
                        .iter()
                        .any(|l| l.contains("signatures of records taken on checkpoints verified"))
                },
            );
        }
        let signed_after = signatures.elapsed().as_secs_f64();
        // The source's own sync with the empty node (it starts one when it verifies the
        // peer) may still be running: wait for it, so that the next run starts on an idle
        // source, and keep what each side's run carried.
        let t = Instant::now();
        wait_until(
            "the source's first sync with the empty node finished",
            s.sync_timeout,
            || {
                src.verified_peers().iter().any(|p| {
                    p["last_sync_ms"]
                        .as_i64()
                        .is_some_and(|at| at >= dst.node.started_ms())
                })
            },
        );
        let src_after = t.elapsed().as_secs_f64();
        floor.measure(root).await;
        b_runs.push(BRun {
            rate,
            secs,
            vouched,
            signed_after,
            src_after,
            pull: synced_lines(&dst.log_lines()).into_iter().next(),
            push: synced_lines(&src.log_lines()[src_mark..])
                .into_iter()
                .next(),
        });
        last = Some((dst, pool));
    }
    let (dst, pool) = last.expect("at least one run of b");
    println!();
    println!(
        "1. full sync of {n} records into an empty node, from the empty node's start to its last record stored:"
    );
    println!(
        "   insert floor before a, between a and b1, after each b: {}; the ratios below are to their median",
        floor.runs()
    );
    let floor = floor.median();
    println!(
        "   a. every signature verified before storing: {} records/s ({base_secs:.2} s); ratio to the insert floor {:.3}",
        thousands(base_rate),
        base_rate / floor
    );
    for (i, b) in b_runs.iter().enumerate() {
        println!(
            "   b{}. records taken on their authors' verified checkpoints: {} records/s ({:.2} s); ratio to the insert floor {:.3}",
            i + 1,
            thousands(b.rate),
            b.secs,
            b.rate / floor
        );
    }
    let rate = median(&b_runs.iter().map(|b| b.rate).collect::<Vec<_>>());
    let ratio = rate / verify;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "   b, median of {B_RUNS}: {} records/s; ratio to the insert floor {:.3} (issue 17's goal: >= 0.8); b / a = {:.2} (goal: >= 2)",
        thousands(rate),
        rate / floor,
        rate / base_rate
    );
    println!(
        "   b's ratio to single-core verify_strict: {ratio:.3}; target >= 0.50: {} ({cores} cores)",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    for (i, b) in b_runs.iter().enumerate() {
        if b.vouched == 0 {
            // A sync asks for leaves only for authors it lacks 1 024 records or more of.
            println!(
                "   b{} took no record on a checkpoint (too few records per author)",
                i + 1
            );
        } else {
            println!(
                "   b{} took {} records on checkpoints; their signatures, verified after the sync before any is served: done {:.1} s after the last record was stored",
                i + 1,
                b.vouched,
                b.signed_after
            );
        }
    }
    let b = &b_runs[0];
    if let Some(d) = &b.pull {
        print_synced("b1: empty node's sync (pull)", d);
    }
    match &b.push {
        Some(p) => print_synced("b1: source's sync (push), concurrently", p),
        None => println!("    b1: source's sync: moved nothing"),
    }
    println!(
        "   (the source's sync finished {:.1} s after the empty node held everything)",
        b.signed_after + b.src_after
    );

    // ---- 2. incremental sync -----------------------------------------------------------
    // Let an idle periodic sync pass, so the next one that moves records is ours.
    tokio::time::sleep(Duration::from_secs(PULL_INTERVAL_SECS + 1)).await;
    let (new, head0) = chain(&authors[0], heads[0], NEW_RECORDS, epoch, &examples, "new");
    ids0.extend(new.iter().map(|b| RecordId::of(b)));
    let plain = increment(bin, root, &source.home, &src, &dst, &pool, "new", &new).await;
    println!();
    println!(
        "2. incremental sync of {NEW_RECORDS} new records between nodes sharing {n} (imported into the source; the empty node pulls every {PULL_INTERVAL_SECS} s; stored {} ms after the import)",
        plain.took_ms
    );
    plain.print();
    println!(
        "   target < 64 KiB and a handful (<= 5) of round trips: {}",
        if plain.bytes() < 64 * 1024 && plain.round_trips() <= 5 && plain.round_trips() > 0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // ---- 2b. the same with checkpoints -------------------------------------------------
    // Author 0's first checkpoint (over its first records, synced in 1), then (as a day
    // later) ten new records, a checkpoint extending the first and the three other
    // authors' cosignatures of it: what checkpoints add to an incremental sync.
    tokio::time::sleep(Duration::from_secs(PULL_INTERVAL_SECS + 1)).await;
    let (mut day, head0) = chain(&authors[0], head0, NEW_RECORDS, epoch, &examples, "day");
    ids0.extend(day.iter().map(|b| RecordId::of(b)));
    // The first checkpoint is the record after the author's first findings.
    let first_seq = (n / AUTHORS + usize::from(!n.is_multiple_of(AUTHORS))) as u64 + 1;
    let cp = Checkpoint::after(&ids0, &|_| true, first_seq, first_seq - 1);
    let (second, _) = checkpoint_record(&authors[0], head0, epoch, cp.clone());
    let second_id = RecordId::of(&second);
    let second_size = second.len();
    day.push(second);
    for (a, id) in authors.iter().enumerate().skip(1) {
        let statement = Cosignature {
            author: authors[0].key(),
            checkpoint: second_id,
            size: cp.size,
            head: cp.head,
        };
        day.push(signed(id, heads[a], epoch, COSIGNATURE_SCHEMA, statement.payload()).0);
    }
    let with = increment(bin, root, &source.home, &src, &dst, &pool, "day", &day).await;
    println!();
    println!(
        "2b. incremental sync with checkpoints: author 0's first checkpoint covered its first {} records ({first_size} B record)",
        first_seq - 1
    );
    println!(
        "   then {NEW_RECORDS} new records + a checkpoint extending it ({second_size} B record, frontier of {} hashes) + {} cosignatures",
        cp.previous.as_ref().map_or(0, |p| p.frontier.len()),
        AUTHORS - 1
    );
    with.print();
    println!(
        "   incremental sync bytes with checkpoints / without, in this run: {} B / {} B = {:.2}",
        with.bytes(),
        plain.bytes(),
        with.bytes() as f64 / plain.bytes().max(1) as f64
    );
    pool.close().await;
    dst.stop();
    src.stop();
}

/// Full syncs from checkpoints (b) per run of the benchmark; the ratio is their median's.
const B_RUNS: usize = 3;

/// One full sync from checkpoints (b).
struct BRun {
    rate: f64,
    secs: f64,
    /// Records it took on checkpoints.
    vouched: u64,
    /// Seconds from its last record stored to their signatures all verified.
    signed_after: f64,
    /// Seconds from then to the source's own sync with it finished.
    src_after: f64,
    /// The figures of the empty node's sync, and of the source's.
    pull: Option<Synced>,
    push: Option<Synced>,
}

/// The middle value of `values` (the upper one of an even count); not empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Copies directory `from` (files and subdirectories) to `to`, which must not exist.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read a directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Waits until `node` (just started, empty) holds the `n` findings; its rate from its
/// start to the last one stored, and the seconds that took.
async fn full_sync(
    node: &Daemon,
    source: &Daemon,
    pool: &sqlx::SqlitePool,
    n: usize,
    timeout: Duration,
) -> (f64, f64) {
    let cpu = || (cpu_secs(node.node.pid()), cpu_secs(source.node.pid()));
    let (node0, source0) = cpu();
    let deadline = Instant::now() + timeout;
    let (mut held, mut last) = (0, 0);
    let mut report = Instant::now();
    // The store is read (by this process, decrypting its pages) when the node logs a
    // finished sync, and every few seconds in case one is missed: reading it every 200 ms
    // took CPU from the sync being measured. The figure itself is the `received_at` of
    // the last record stored, whenever it is read.
    let (mut syncs_seen, mut read_at) = (0, Instant::now());
    while (held as usize) < n {
        if Instant::now() > deadline {
            panic!("full sync: only {held} of {n} records after {timeout:?}");
        }
        if report.elapsed() > Duration::from_secs(30) {
            println!(
                "    … {held} of {n} records after {} s",
                (now_ms() - node.node.started_ms()) / 1000
            );
            report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let syncs = synced_lines(&node.log_lines()).len();
        if syncs > syncs_seen || read_at.elapsed() > Duration::from_secs(5) {
            syncs_seen = syncs;
            read_at = Instant::now();
            (held, last) = findings_held(pool, n as i64).await;
        }
    }
    let secs = (last - node.node.started_ms()) as f64 / 1000.0;
    let (node1, source1) = cpu();
    println!(
        "   CPU while it synced: the receiving node {:.1} s, the source {:.1} s, in {secs:.1} s on {} cores",
        node1 - node0,
        source1 - source0,
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    (n as f64 / secs, secs)
}

/// CPU seconds (user and system) process `pid` used so far, from /proc (0 elsewhere).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name in parentheses: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The SQLite multi-row insert floor: records per second that `Store::insert` alone
/// writes into an empty encrypted store, in the sync's transaction size, the records
/// checked beforehand; the most a sync that stores them could reach on this machine.
/// Measured several times in a run (before, between and after the full syncs), because
/// this shared machine's speed drifts by a fifth between minutes: one measurement taken
/// at a quiet moment would make every sync look slow, one at a busy moment fast.
struct Floor {
    prepared: Vec<coalition::check::Prepared>,
    rates: Vec<f64>,
}

impl Floor {
    fn new(records: &[Vec<u8>]) -> Self {
        Floor {
            prepared: records
                .par_iter()
                .map(|b| coalition::check::prepare(b).expect("a valid record"))
                .collect(),
            rates: Vec::new(),
        }
    }

    /// Measures the floor once more; its rate.
    async fn measure(&mut self, root: &Path) -> f64 {
        let path = root.join("insert-floor.db");
        let store = coalition::store::Store::create(&path, &coalition::store::StoreKey::random())
            .await
            .expect("store");
        // Owned batches, as a sync hands its pages to the write thread.
        let batches: Vec<std::sync::Arc<[_]>> =
            self.prepared.chunks(8_000).map(Into::into).collect();
        let t = Instant::now();
        for batch in batches {
            store
                .insert_vouched(batch, Default::default())
                .await
                .expect("insert");
        }
        let took = t.elapsed();
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            std::fs::remove_file(root.join(format!("insert-floor.db{suffix}"))).ok();
        }
        let rate = self.prepared.len() as f64 / took.as_secs_f64();
        self.rates.push(rate);
        rate
    }

    /// Every measurement, in the order taken.
    fn runs(&self) -> String {
        let each: Vec<String> = self.rates.iter().map(|r| thousands(*r)).collect();
        format!("{} records/s", each.join(" / "))
    }

    fn median(&self) -> f64 {
        median(&self.rates)
    }
}

/// What one incremental sync carried: the sync runs of both nodes after an import.
struct Increment {
    runs: Vec<(&'static str, Synced)>,
    took_ms: i64,
}

impl Increment {
    fn bytes(&self) -> u64 {
        self.runs
            .iter()
            .map(|(_, r)| r.bytes_sent + r.bytes_received)
            .sum()
    }

    fn round_trips(&self) -> u64 {
        self.runs.iter().map(|(_, r)| r.round_trips).sum()
    }

    fn print(&self) {
        for (who, r) in &self.runs {
            print_synced(who, r);
        }
        println!(
            "   total: {} sync run(s), {} round trips, {} B ({:.1} KiB) of /coalition/sync/1 frames both ways",
            self.runs.len(),
            self.round_trips(),
            self.bytes(),
            self.bytes() as f64 / 1024.0
        );
    }
}

/// Imports `records` into the source and waits until the empty node stored all of them;
/// returns the sync runs that carried them.
#[allow(clippy::too_many_arguments)]
async fn increment(
    bin: &Path,
    root: &Path,
    source: &coalition::config::Home,
    src: &Daemon,
    dst: &Daemon,
    pool: &sqlx::SqlitePool,
    name: &str,
    records: &[Vec<u8>],
) -> Increment {
    let (mark_src, mark_dst) = (src.log_lines().len(), dst.log_lines().len());
    let path = root.join(format!("{name}.bundle"));
    write_bundle(&path, records);
    cli(bin, source, &["import", path.to_str().expect("utf-8 path")]);
    let imported = now_ms();
    let ids: Vec<RecordId> = records.iter().map(|b| RecordId::of(b)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    for id in &ids {
        loop {
            if let Some(at) = received_at(pool, id).await {
                last = last.max(at);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "incremental sync: {name} not all stored after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut runs = Vec::new();
    for r in synced_lines(&dst.log_lines()[mark_dst..]) {
        runs.push(("empty node's sync", r));
    }
    for r in synced_lines(&src.log_lines()[mark_src..]) {
        runs.push(("source's sync", r));
    }
    Increment {
        runs,
        took_ms: last - imported,
    }
}

/// `author`'s next record after `head`: `schema` with `payload`, for the coalition.
fn signed(
    author: &Identity,
    head: Head,
    epoch: [u8; 32],
    schema: &str,
    payload: Vec<u8>,
) -> (Vec<u8>, Head) {
    let r = coalition::record::sign(
        author,
        head.0 + 1,
        head.1,
        coalition::record::Draft {
            schema: schema.into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: Some(epoch),
            payload,
            created_at_ms: now_ms(),
        },
    );
    (r.bytes, (r.seq, Some(r.id)))
}

/// `author`'s next record after `head`: the checkpoint `c`.
fn checkpoint_record(
    author: &Identity,
    head: Head,
    epoch: [u8; 32],
    c: Checkpoint,
) -> (Vec<u8>, Head) {
    signed(author, head, epoch, CHECKPOINT_SCHEMA, c.payload())
}

// ---- 3. propagation --------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Topology {
    Mesh,
    Line,
}

async fn propagation(bin: &Path, s: &Settings, root: &Path) {
    let k = s.nodes;
    let names: Vec<(String, &str)> = (0..k)
        .map(|i| (format!("Propagation Monitor {i} (fictional)"), "GE"))
        .collect();
    let (orgs, _) = found(root, &names, &[]).await;
    let examples = examples();
    println!();
    println!(
        "3. propagation of a new finding added at node 0 to all of {k} nodes ({} findings per topology, one at a time; default 30 s sync interval, so gossip carries them)",
        s.propagations
    );
    for (run, topology) in [Topology::Mesh, Topology::Line].into_iter().enumerate() {
        let mut daemons: Vec<Daemon> = Vec::new();
        for (i, o) in orgs.iter().enumerate() {
            let bootstrap: Vec<String> = match topology {
                Topology::Mesh => daemons.iter().map(|d| d.tcp.clone()).collect(),
                Topology::Line => daemons.last().map(|d| d.tcp.clone()).into_iter().collect(),
            };
            configure(&o.home, &bootstrap, None, true);
            daemons.push(start(
                bin,
                &o.home,
                &root.join(format!("prop{run}-node{i}.log")),
            ));
        }
        let expected = |i: usize| match topology {
            Topology::Mesh => k - 1,
            Topology::Line => usize::from(i > 0) + usize::from(i + 1 < k),
        };
        wait_until(
            "every node verified its neighbours",
            Duration::from_secs(120),
            || {
                daemons
                    .iter()
                    .enumerate()
                    .all(|(i, d)| d.verified_peers().len() >= expected(i))
            },
        );
        // Gossipsub grafts its mesh on heartbeats (500 ms).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut pools = Vec::new();
        for o in &orgs {
            pools.push(reader(&o.home).await);
        }
        let (origin, _) = Node::unlock_and_open(orgs[0].home.clone(), PASSPHRASE)
            .await
            .expect("open origin");
        // per_node[i]: latencies at node i; all: time until every node held the record.
        let mut per_node: Vec<Vec<i64>> = vec![Vec::new(); k];
        let mut all: Vec<i64> = Vec::new();
        let mut missing = 0;
        for r in 0..s.propagations {
            let input = FindingInput {
                finding: varied(&examples, r, &format!("propagation {run}-{r}")),
                sensitive: None,
            };
            let id = origin
                .add_finding(&orgs[0].id, &input, Audience::Coalition)
                .await
                .expect("add finding")
                .finding;
            let t0 = received_at(&pools[0], &id).await.expect("origin holds it");
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut at: Vec<Option<i64>> = vec![None; k];
            loop {
                for (i, p) in pools.iter().enumerate() {
                    if at[i].is_none() {
                        at[i] = received_at(p, &id).await;
                    }
                }
                if at.iter().all(Option::is_some) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if at.iter().any(Option::is_none) {
                missing += 1;
                continue;
            }
            let lat: Vec<i64> = at.iter().map(|t| t.expect("some") - t0).collect();
            for (i, l) in lat.iter().enumerate().skip(1) {
                per_node[i].push(*l);
            }
            all.push(*lat.iter().max().expect("nodes"));
            // De-phase from the origin's 200 ms announcement tick.
            tokio::time::sleep(Duration::from_millis(150 + (r as u64 * 37) % 200)).await;
        }
        origin.store().clone().close().await;
        for p in pools {
            p.close().await;
        }
        for d in daemons {
            d.stop();
        }
        all.sort_unstable();
        let name = match topology {
            Topology::Mesh => "full mesh",
            Topology::Line => "line (node 0 at one end)",
        };
        println!(
            "   {name}: reached all {k} nodes: p50 {} ms, p99 {} ms, max {} ms ({} findings{})",
            pct(&all, 0.5),
            pct(&all, 0.99),
            all.last().copied().unwrap_or(-1),
            all.len(),
            if missing > 0 {
                format!(", {missing} did not reach every node within 60 s")
            } else {
                String::new()
            }
        );
        let mut pooled: Vec<i64> = per_node.iter().flatten().copied().collect();
        pooled.sort_unstable();
        println!(
            "      any one node: p50 {} ms, p99 {} ms",
            pct(&pooled, 0.5),
            pct(&pooled, 0.99)
        );
        let by_node: Vec<String> = per_node
            .iter_mut()
            .enumerate()
            .skip(1)
            .map(|(i, v)| {
                v.sort_unstable();
                format!("{i}:{}", pct(v, 0.5))
            })
            .collect();
        println!("      p50 per node (ms): {}", by_node.join(" "));
        assert_eq!(missing, 0, "findings did not reach every node");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`/`--all-targets`)
    // run a tiny smoke version with the debug binary.
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wants = |part: &str| filters.is_empty() || filters.iter().any(|f| part.contains(f));
    let s = if full {
        Settings {
            full,
            records: env_count("COALITION_BENCH_RECORDS", 100_000),
            verify_min: Duration::from_secs(2),
            nodes: env_count("COALITION_BENCH_NODES", 10),
            propagations: env_count("COALITION_BENCH_PROPAGATIONS", 30),
            sync_timeout: Duration::from_secs(30 * 60),
        }
    } else {
        println!("(smoke run: not invoked by `cargo bench`)");
        Settings {
            full,
            records: env_count("COALITION_BENCH_RECORDS", 200),
            verify_min: Duration::from_millis(100),
            nodes: env_count("COALITION_BENCH_NODES", 3),
            propagations: env_count("COALITION_BENCH_PROPAGATIONS", 2),
            sync_timeout: Duration::from_secs(120),
        }
    };
    let bin_built = if s.full {
        coalition_tests::coalition_release_bin()
    } else {
        coalition_tests::coalition_bin()
    };
    let dir = tempfile::Builder::new()
        .prefix("coalition-netbench-")
        .tempdir()
        .expect("tempdir");
    // A private copy: another build in the same target directory cannot swap it mid-run.
    let bin = dir.path().join("coalition");
    std::fs::copy(bin_built, &bin).expect("copy the coalition binary");
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "coalition network benchmark: {} build, {cores} cores, loopback TCP, homes in {}",
        if s.full { "release" } else { "debug" },
        dir.path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut ran = false;
    if wants("sync") {
        runtime.block_on(sync_benchmarks(&bin, &s, &dir.path().join("sync")));
        ran = true;
    }
    if wants("propagation") {
        runtime.block_on(propagation(&bin, &s, &dir.path().join("propagation")));
        ran = true;
    }
    if wants("sealed") {
        runtime.block_on(sealed::sealed_sync(&bin, &s, &dir.path().join("sealed")));
        ran = true;
    }
    if !ran {
        println!("nothing matched {filters:?}; parts: sync, propagation, sealed");
    }
    if std::env::var_os("COALITION_BENCH_KEEP").is_some() {
        println!("kept the homes and node logs in {}", dir.keep().display());
    }
}
