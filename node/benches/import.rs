//! Import throughput benchmark.
//!
//! `cargo bench -p coalition-node --bench import` prints, in one run:
//!
//! * the raw ed25519 `verify_strict` rate on one core, for messages the size of a
//!   typical finding record body (prefix + body bytes, ~1.2 KB), measured over >= 2 s;
//! * `Node::import` of a bundle of realistic `finding/v1` records (default 100,000; set
//!   `COALITION_BENCH_RECORDS` to scale it down for a smoke run) into an empty store,
//!   wall clock, in records/s;
//! * the ratio import rate / single-core verify rate against the target (>= 0.50, using
//!   every core), and the number of cores;
//! * a breakdown of where the import time goes: reading the bundle, verify + schema
//!   check (`check::prepare`, single core and in parallel), and the SQLite inserts.
//!
//! These are figures, not assertions: the bench never fails on a threshold.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use coalition::bundle;
use coalition::check::{self, Prepared};
use coalition::config::Home;
use coalition::finding::{to_payload, FINDING_SCHEMA};
use coalition::identity::{Identity, OrgKey};
use coalition::node::Node;
use coalition::record::{self, Audience, Draft, Record, RecordId};
use coalition::sample::{self, env_count, measure_one_core, thousands, varied};
use coalition::store::{Store, StoreKey};
use coalition_proto::v1::BundleHeader;
use rayon::prelude::*;
use serde_json::Value;

/// Records in the import bundle unless `COALITION_BENCH_RECORDS` says otherwise.
const DEFAULT_RECORDS: usize = 100_000;
/// Authoring organisations in the bundle.
const AUTHORS: usize = 4;
/// Minimum measuring time of the single-core loops (under `cargo bench`).
const MIN_MEASURE: Duration = Duration::from_secs(2);
/// Records and measuring time when not run by `cargo bench` (e.g. `cargo test --benches`).
const SMOKE_RECORDS: usize = 2_000;
const SMOKE_MEASURE: Duration = Duration::from_millis(200);
/// Batch size used by the insert-only measurement (same as `Node::import`).
const INSERT_BATCH: usize = 8192;

/// The shipped example findings, without their `sensitive` part.
fn examples() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples");
    sample::example_findings(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Signs `n` finding records spread over `authors`, each author with a proper seq/prev
/// chain. Authors are signed in parallel; each chain is sequential. About one record in
/// twenty is a correction of the author's previous finding, one in ten is shared with
/// listed members instead of the whole coalition.
fn make_records(n: usize, authors: &[Identity]) -> Vec<Vec<u8>> {
    let examples = examples();
    let keys: Vec<OrgKey> = authors.iter().map(Identity::key).collect();
    let per_author: Vec<Vec<Record>> = authors
        .par_iter()
        .enumerate()
        .map(|(a, id)| {
            let count = n / authors.len() + usize::from(a < n % authors.len());
            let mut out: Vec<Record> = Vec::with_capacity(count);
            let mut prev: Option<RecordId> = None;
            for j in 0..count {
                let i = j * authors.len() + a;
                let supersedes = (j > 0 && j % 20 == 0).then(|| out[j - 1].id);
                let audience = if j % 10 == 3 {
                    Audience::members(
                        keys.iter()
                            .copied()
                            .filter(|k| *k != id.key())
                            .take(2)
                            .collect(),
                    )
                } else {
                    Audience::Coalition
                };
                let r = record::sign(
                    id,
                    j as u64 + 1,
                    prev,
                    Draft {
                        schema: FINDING_SCHEMA.into(),
                        audience,
                        supersedes,
                        epoch: None,
                        payload: to_payload(&varied(&examples, i, &format!("a{a}-{j}"))),
                        created_at_ms: 1_735_689_600_000 + i as i64 * 60_000,
                    },
                );
                prev = Some(r.id);
                out.push(r);
            }
            out
        })
        .collect();
    // Interleave the authors, as a bundle exported from a node that received them would.
    let mut iters: Vec<_> = per_author.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(n);
    loop {
        let before = out.len();
        for it in &mut iters {
            if let Some(r) = it.next() {
                out.push(r.bytes);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// CPU seconds used so far by each thread of this process, summed by thread name (Linux
/// `/proc/self/task/*/stat`; empty elsewhere). Threads that ended are not counted.
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    // Clock ticks are 100 per second (USER_HZ) on every Linux this runs on.
    let tick = 100.0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
        });
        *out.entry(name).or_insert(0.0) += ticks / tick;
    }
    out
}

/// CPU seconds each thread name used between two `cpu_by_thread` readings.
fn cpu_between(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.1} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`. Without it (`cargo test --benches`/`--all-targets`)
    // run a quick smoke version so the test suite stays fast.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (n, min) = if full {
        (
            env_count("COALITION_BENCH_RECORDS", DEFAULT_RECORDS),
            MIN_MEASURE,
        )
    } else {
        println!("(smoke run: not invoked by `cargo bench`)");
        (
            env_count("COALITION_BENCH_RECORDS", SMOKE_RECORDS),
            SMOKE_MEASURE,
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("coalition import benchmark: {n} records, {AUTHORS} authors, {cores} cores");

    // ---- bundle generation (not timed as part of anything reported) --------------------
    let authors: Vec<Identity> = (0..AUTHORS)
        .map(|a| Identity::from_seed(&[a as u8 + 11; 32]))
        .collect();
    let t = Instant::now();
    let records = make_records(n, &authors);
    let total_bytes: usize = records.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle_path = dir.path().join("bench.bundle");
    {
        let f = std::fs::File::create(&bundle_path).expect("create bundle");
        let mut w = std::io::BufWriter::new(f);
        bundle::write(&mut w, BundleHeader::default(), &records).expect("write bundle");
    }
    let bundle_size = std::fs::metadata(&bundle_path).map_or(0, |m| m.len());
    println!(
        "generated {n} signed finding/v1 records in {:.2} s: avg record {} B, bundle {:.1} MiB",
        t.elapsed().as_secs_f64(),
        total_bytes / n.max(1),
        bundle_size as f64 / (1024.0 * 1024.0)
    );

    // ---- (a) raw verify_strict, one core ------------------------------------------------
    // Messages exactly as record::verify checks them: prefix + the body bytes of real
    // records (a sample of 256 of them, so the loop does not verify one message only).
    let (calls, el, avg_msg) = sample::raw_verify(&records, min);
    let verify_rate = rate(calls, el);
    println!();
    println!(
        "(a) raw ed25519 verify_strict, 1 core: {} records/s  ({calls} verifications of {avg_msg}-byte messages in {:.2} s, {:.1} µs each)",
        thousands(verify_rate),
        el.as_secs_f64(),
        1e6 / verify_rate
    );

    // Single-core cost of the rest of the per-record pipeline, for the breakdown.
    let (calls, el) = measure_one_core(min, |i| {
        black_box(record::verify(black_box(&records[i % records.len()]))).expect("valid");
    });
    let record_verify_rate = rate(calls, el);
    let (calls, el) = measure_one_core(min, |i| {
        black_box(check::prepare(black_box(&records[i % records.len()]))).expect("valid");
    });
    let prepare_rate = rate(calls, el);
    println!(
        "    record::verify (decode + canonical check + verify_strict + hash), 1 core: {} records/s ({:.1} µs each)",
        thousands(record_verify_rate),
        1e6 / record_verify_rate
    );
    println!(
        "    check::prepare (record::verify + JSON parse + schema check + columns), 1 core: {} records/s ({:.1} µs each; schema part ≈ {:.1} µs)",
        thousands(prepare_rate),
        1e6 / prepare_rate,
        1e6 / prepare_rate - 1e6 / record_verify_rate
    );

    // ---- (b) Node::import into an empty store -------------------------------------------
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (import_time, report) = runtime.block_on(async {
        let home = Home::new(Some(dir.path().join("home")));
        let (node, _identity) = Node::init(home, "Bench Org", "RS", "bench passphrase")
            .await
            .expect("Node::init");
        let cpu = cpu_by_thread();
        let t = Instant::now();
        let report = node.import(&bundle_path).await.expect("import");
        let el = t.elapsed();
        println!(
            "    import CPU by thread: {}",
            cpu_between(&cpu, &cpu_by_thread())
        );
        node.store().clone().close().await;
        (el, report)
    });
    let import_rate = rate(n as u64, import_time);
    println!();
    println!(
        "(b) Node::import of {n} records into an empty store: {} records/s  ({:.2} s wall clock; stored {}, duplicates {}, failures {})",
        thousands(import_rate),
        import_time.as_secs_f64(),
        report.stored,
        report.duplicates,
        report.failures.len()
    );
    if let Some(f) = report.failures.first() {
        println!("    first failure: record {}: {}", f.index, f.reason);
    }

    // ---- (c) ratio --------------------------------------------------------------------
    let ratio = import_rate / verify_rate;
    println!();
    println!("(c) ratio import_rate / single_core_verify_rate: {ratio:.3}");
    println!("    target: >= 0.50 (using every core)");
    println!("    cores (std::thread::available_parallelism): {cores}");
    println!(
        "    {} ({} cores; a perfectly parallel verify-only pipeline would reach {cores}.0)",
        if ratio >= 0.5 {
            "meets the target"
        } else {
            "BELOW the target"
        },
        cores
    );

    // ---- breakdown: where the import time goes -----------------------------------------
    // 1. Reading and framing the bundle alone.
    let t = Instant::now();
    let file = std::fs::File::open(&bundle_path).expect("open");
    let reader =
        bundle::Reader::new(std::io::BufReader::with_capacity(1 << 20, file)).expect("reader");
    let entries: Vec<bundle::Entry> = reader.map(|e| e.expect("frame")).collect();
    let read_time = t.elapsed();
    // 2. Verify + schema check, in parallel on every core (rayon's global pool, as import).
    let t = Instant::now();
    let prepared: Vec<Prepared> = entries
        .par_iter()
        .map(|e| {
            let _ = RecordId::of(&e.bytes);
            check::prepare(&e.bytes).expect("valid")
        })
        .collect();
    let prepare_time = t.elapsed();
    // 2b. The signature check alone, in parallel (upper bound of the verify part).
    let t = Instant::now();
    entries
        .par_iter()
        .for_each(|e| drop(black_box(record::verify(&e.bytes)).expect("valid")));
    let verify_par_time = t.elapsed();
    drop(entries);
    // 3. SQLite inserts alone, same batches as import, into another empty store:
    //    encrypted (as every node's) and, to measure what SQLCipher costs, in clear,
    //    three times each, interleaved.
    let insert_into = |encrypted: bool, run: usize| {
        runtime.block_on(async {
            let path = dir.path().join(format!("insert-only-{encrypted}-{run}.db"));
            let store = if encrypted {
                Store::create(&path, &StoreKey::random()).await
            } else {
                Store::create_unencrypted(&path).await
            }
            .expect("store");
            // Owned batches, as the import hands them to the write thread.
            let batches: Vec<std::sync::Arc<[_]>> =
                prepared.chunks(INSERT_BATCH).map(Into::into).collect();
            let cpu = cpu_by_thread();
            let t = Instant::now();
            for batch in batches {
                store
                    .insert_vouched(batch, Default::default())
                    .await
                    .expect("insert");
            }
            let el = t.elapsed();
            if run == 0 {
                println!(
                    "    insert-only ({}) CPU by thread: {}",
                    if encrypted { "encrypted" } else { "in clear" },
                    cpu_between(&cpu, &cpu_by_thread())
                );
            }
            store.close().await;
            el
        })
    };
    let (mut enc, mut clear) = (Vec::new(), Vec::new());
    for run in 0..3 {
        enc.push(insert_into(true, run));
        clear.push(insert_into(false, run));
    }
    let insert_time = enc[0];
    let mut ratios: Vec<f64> = enc
        .iter()
        .zip(&clear)
        .map(|(e, c)| c.as_secs_f64() / e.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let secs = |v: &[Duration]| {
        let mut v: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        format!("{:.2} / {:.2} / {:.2} s", v[0], v[1], v[2])
    };
    println!(
        "(e) the write stage of the import (every batch, {n} records) into an encrypted store against the same into a store in clear, min / median / max of 3 interleaved runs: encrypted {}, in clear {}; rate ratio encrypted / clear {:.3} / {:.3} / {:.3} (goal >= 0.85; the whole import also verifies, so its ratio is higher still)",
        secs(&enc),
        secs(&clear),
        ratios[0],
        ratios[1],
        ratios[2]
    );
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / import_time.as_secs_f64();
    println!();
    println!("breakdown (measured separately, same {n} records):");
    println!(
        "    read + frame bundle               {:>8.2} s  {:>5.1}% of import   ({} records/s)",
        read_time.as_secs_f64(),
        pct(read_time),
        thousands(rate(n as u64, read_time))
    );
    println!(
        "    verify + schema check (prepare)   {:>8.2} s  {:>5.1}% of import   ({} records/s on {cores} cores, par_iter)",
        prepare_time.as_secs_f64(),
        pct(prepare_time),
        thousands(rate(n as u64, prepare_time))
    );
    println!(
        "      of which record::verify alone   {:>8.2} s  {:>5.1}% of import   ({} records/s on {cores} cores)",
        verify_par_time.as_secs_f64(),
        pct(verify_par_time),
        thousands(rate(n as u64, verify_par_time))
    );
    println!(
        "    SQLite insert ({INSERT_BATCH}-record txns)  {:>8.2} s  {:>5.1}% of import   ({} records/s)",
        insert_time.as_secs_f64(),
        pct(insert_time),
        thousands(rate(n as u64, insert_time))
    );
    let sum = read_time + prepare_time + insert_time;
    println!(
        "    sum of the parts                  {:>8.2} s  {:>5.1}% of import   (import runs these one after another per batch)",
        sum.as_secs_f64(),
        pct(sum)
    );
    println!(
        "    total Node::import                {:>8.2} s  100.0%",
        import_time.as_secs_f64()
    );
    println!();
    println!(
        "ceilings at {cores} cores: verify_strict only {} records/s (ratio {:.2}); prepare only {} records/s (ratio {:.2}); prepare then insert, not overlapped {} records/s (ratio {:.2}); overlapped max(prepare, insert) {} records/s (ratio {:.2})",
        thousands(verify_rate * cores as f64),
        cores as f64,
        thousands(rate(n as u64, prepare_time)),
        rate(n as u64, prepare_time) / verify_rate,
        thousands(rate(n as u64, prepare_time + insert_time)),
        rate(n as u64, prepare_time + insert_time) / verify_rate,
        thousands(rate(n as u64, prepare_time.max(insert_time))),
        rate(n as u64, prepare_time.max(insert_time)) / verify_rate,
    );
}
