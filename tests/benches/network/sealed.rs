//! 4. Sealed sync (issue 16): the cost of sealed records to a full sync, in one run.
//!
//! Two sets of `COALITION_BENCH_RECORDS` records by four member authors each, signed
//! in-process: *plain*, every record a coalition finding; *mixed*, every second record a
//! finding sealed for two receiving members (B and D: three wraps with the author's) and
//! the others coalition findings. Four full syncs into an empty node, each timed from the
//! receiver's start to the `received_at` of the last record it stored:
//!
//! - a. plain, from a source node, into a member (the baseline);
//! - b. mixed, from a source node, into B, which opens and indexes the sealed half;
//! - c. mixed, from the same source, into C, a member outside the sealed half's audience
//!   that stores their ciphertext unread (a relay);
//! - d. mixed, from C alone (its source is stopped), into D, which opens them: the sealed
//!   records reach their reader only through a member that cannot read them.
//!
//! Figures: records/s of each, and b, c, d as ratios to a (same run, same machine).

use std::path::Path;
use std::time::{Duration, Instant};

use coalition::finding::{to_payload, FINDING_SCHEMA};
use coalition::identity::Identity;
use coalition::record::{self, Audience, Draft};
use coalition::sample::{thousands, varied};
use coalition::sealed::{self, Recipient, SEALED_SCHEMA};
use coalition_tests::write_bundle;
use rayon::prelude::*;
use serde_json::Value;
use sqlx::SqlitePool;

use super::nodes::{cli, configure, reader, start};
use super::records::{chain, examples, found, Head};
use super::{Settings, AUTHORS, PULL_INTERVAL_SECS};

/// Records of the sync sets held by a node (findings and sealed records, opened or not)
/// and, once `want` are held, the latest `received_at` among them.
async fn records_held(pool: &SqlitePool, want: i64) -> (i64, i64) {
    let sql = format!(
        "SELECT COUNT(*), MAX(received_at) FROM records \
         WHERE sealed = 1 OR schema = '{FINDING_SCHEMA}'"
    );
    let (held, last): (i64, Option<i64>) = sqlx::query_as(&sql)
        .fetch_one(pool)
        .await
        .expect("query store");
    (held, if held >= want { last.unwrap_or(0) } else { 0 })
}

/// How many of the node's findings it can read (clear ones and the sealed ones it opened).
async fn readable(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM findings")
        .fetch_one(pool)
        .await
        .expect("query store")
}

/// `count` records of `author` continuing `head`: every second one sealed for
/// `readers`, the others for the coalition.
fn mixed_chain(
    author: &Identity,
    count: usize,
    epoch: [u8; 32],
    examples: &[Value],
    readers: &[Recipient],
    tag: &str,
) -> (Vec<Vec<u8>>, Head) {
    let mut recipients = vec![Recipient {
        org: author.key(),
        key: author.encryption_key(),
    }];
    recipients.extend_from_slice(readers);
    let audience = Audience::members(readers.iter().map(|r| r.org).collect());
    let (mut seq, mut prev) = (0, None);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        seq += 1;
        let payload = to_payload(&varied(examples, seq as usize, &format!("{tag}-{seq}")));
        let (schema, audience, payload) = if seq % 2 == 0 {
            let s =
                sealed::seal(&author.key(), FINDING_SCHEMA, &payload, &recipients).expect("seal");
            (SEALED_SCHEMA, audience.clone(), s.payload)
        } else {
            (FINDING_SCHEMA, Audience::Coalition, payload)
        };
        let r = record::sign(
            author,
            seq,
            prev,
            Draft {
                schema: schema.into(),
                audience,
                supersedes: None,
                epoch: Some(epoch),
                payload,
                created_at_ms: 1_735_689_600_000 + seq as i64 * 60_000,
            },
        );
        prev = Some(r.id);
        out.push(r.bytes);
    }
    (out, (seq, prev))
}

/// Interleaves the authors' chains, so each author's records arrive in order.
fn interleave(chains: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
    let mut iters: Vec<_> = chains.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for it in &mut iters {
            out.extend(it.next());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// One full sync: `from` (already running) serves, `into` starts empty and dials it.
/// Returns records/s from `into`'s start to its last record stored, and what it can read.
async fn full_sync(
    bin: &Path,
    from: &str,
    into: &coalition::config::Home,
    log: &Path,
    n: usize,
    timeout: Duration,
) -> (f64, i64) {
    configure(into, &[from.to_string()], Some(PULL_INTERVAL_SECS), true);
    let dst = start(bin, into, log);
    let pool = reader(into).await;
    let deadline = Instant::now() + timeout;
    let (mut held, mut last) = (0, 0);
    while (held as usize) < n {
        assert!(
            Instant::now() < deadline,
            "sealed sync: only {held} of {n} records after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        (held, last) = records_held(&pool, n as i64).await;
    }
    let rate = n as f64 / ((last - dst.node.started_ms()) as f64 / 1000.0);
    let can_read = readable(&pool).await;
    pool.close().await;
    dst.stop();
    (rate, can_read)
}

pub(super) async fn sealed_sync(bin: &Path, s: &Settings, root: &Path) {
    let n = s.records;
    let authors: Vec<Identity> = (0..2 * AUTHORS)
        .map(|a| Identity::from_seed(&[a as u8 + 61; 32]))
        .collect();
    let (orgs, epoch) = found(
        root,
        &[
            ("Plain Source (fictional)".into(), "RS"),
            ("Plain Receiver (fictional)".into(), "RS"),
            ("Mixed Source (fictional)".into(), "XK"),
            ("Reader B (fictional)".into(), "XK"),
            ("Relay C (fictional)".into(), "MK"),
            ("Reader D (fictional)".into(), "GE"),
        ],
        &authors,
    )
    .await;
    let readers: Vec<Recipient> = [&orgs[3], &orgs[5]]
        .iter()
        .map(|o| Recipient {
            org: o.id.key(),
            key: o.id.encryption_key(),
        })
        .collect();

    let t = Instant::now();
    let examples = examples();
    let per = |a: usize| n / AUTHORS + usize::from(a < n % AUTHORS);
    let plain = interleave(
        authors[..AUTHORS]
            .par_iter()
            .enumerate()
            .map(|(a, id)| chain(id, (0, None), per(a), epoch, &examples, &format!("p{a}")).0)
            .collect(),
    );
    let mixed = interleave(
        authors[AUTHORS..]
            .par_iter()
            .enumerate()
            .map(|(a, id)| mixed_chain(id, per(a), epoch, &examples, &readers, &format!("m{a}")).0)
            .collect(),
    );
    let sealed_count: usize = (0..AUTHORS).map(|a| per(a) / 2).sum();
    println!(
        "signed {n} plain and {n} mixed records ({} sealed for B and D, three wraps each) in {:.1} s",
        thousands(sealed_count as f64),
        t.elapsed().as_secs_f64()
    );
    for (set, org, name) in [(&plain, &orgs[0], "plain"), (&mixed, &orgs[2], "mixed")] {
        let path = root.join(format!("{name}.bundle"));
        write_bundle(&path, set);
        cli(
            bin,
            &org.home,
            &["import", path.to_str().expect("utf-8 path")],
        );
    }
    drop((plain, mixed));

    let timeout = s.sync_timeout;
    configure(&orgs[0].home, &[], Some(3600), true);
    let src = start(bin, &orgs[0].home, &root.join("plain-source.log"));
    let (a, _) = full_sync(
        bin,
        &src.tcp,
        &orgs[1].home,
        &root.join("a.log"),
        n,
        timeout,
    )
    .await;
    src.stop();

    configure(&orgs[2].home, &[], Some(3600), true);
    let src = start(bin, &orgs[2].home, &root.join("mixed-source.log"));
    let (b, b_reads) = full_sync(
        bin,
        &src.tcp,
        &orgs[3].home,
        &root.join("b.log"),
        n,
        timeout,
    )
    .await;
    let (c, c_reads) = full_sync(
        bin,
        &src.tcp,
        &orgs[4].home,
        &root.join("c.log"),
        n,
        timeout,
    )
    .await;
    src.stop();
    configure(&orgs[4].home, &[], Some(3600), true);
    let relay = start(bin, &orgs[4].home, &root.join("relay.log"));
    let (d, d_reads) = full_sync(
        bin,
        &relay.tcp,
        &orgs[5].home,
        &root.join("d.log"),
        n,
        timeout,
    )
    .await;
    relay.stop();

    println!();
    println!(
        "4. full sync of {n} records, {} sealed in the mixed set:",
        thousands(sealed_count as f64)
    );
    println!(
        "   a. plain, source -> member:                 {} records/s (baseline)",
        thousands(a)
    );
    println!(
        "   b. mixed, source -> B (opens {} sealed):     {} records/s, ratio to a {:.3} (reads {b_reads} findings)",
        thousands(sealed_count as f64),
        thousands(b),
        b / a
    );
    println!(
        "   c. mixed, source -> C (relay, reads none):  {} records/s, ratio to a {:.3} (reads {c_reads} findings)",
        thousands(c),
        c / a
    );
    println!(
        "   d. mixed, relay C -> D (opens them):        {} records/s, ratio to a {:.3} (reads {d_reads} findings)",
        thousands(d),
        d / a
    );
    assert_eq!(b_reads as usize, n, "B reads every record of the mixed set");
    assert_eq!(
        c_reads as usize,
        n - sealed_count,
        "C reads only the clear half"
    );
    assert_eq!(d_reads as usize, n, "D reads every record, received from C");
}
