//! Checkpoint figures for an author with 100 000 records (issue 17): what signing a
//! checkpoint costs the author, how large it is, and what checking it costs a member that
//! holds the author's records, against the same machine's raw `verify_strict` rate (the
//! price of authenticating those records one signature at a time).
//!
//! `cargo bench -p coalition-core --bench checkpoint`; three runs, min / median / max.

use std::time::{Duration, Instant};

use coalition_core::chain::{ChainReport, Link};
use coalition_core::identity::Identity;
use coalition_core::merkle::Checkpoint;
use coalition_core::record::RecordId;
use sha2::{Digest, Sha256};

const RECORDS: u64 = 100_000;
const RUNS: usize = 3;

fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{:.1} / {:.1} / {:.1} ms",
        v[0].as_secs_f64() * 1e3,
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

fn main() {
    let author = Identity::from_seed(&[3; 32]);
    let ids: Vec<RecordId> = (0..RECORDS)
        .map(|i| RecordId(Sha256::digest(i.to_be_bytes()).into()))
        .collect();
    // Every tenth record private: the worst spread of private records for a cover.
    let to_everyone = |i: u64| i % 10 != 3;
    let links = |cp: &Checkpoint| -> Vec<Link> {
        (0..RECORDS)
            .filter(|&i| to_everyone(i))
            .map(|i| Link {
                author: author.key(),
                seq: i + 1,
                prev: (i > 0).then(|| ids[i as usize - 1]),
                id: ids[i as usize],
                to_everyone: true,
                checkpoint: None,
                cosignature: None,
            })
            .chain([Link {
                author: author.key(),
                seq: RECORDS + 1,
                prev: Some(ids[RECORDS as usize - 1]),
                id: RecordId([0xcc; 32]),
                to_everyone: true,
                checkpoint: Some(cp.clone()),
                cosignature: None,
            }])
            .collect()
    };

    let (mut sign, mut check) = (Vec::new(), Vec::new());
    let mut cp = Checkpoint::of(&ids, &to_everyone);
    for _ in 0..RUNS {
        let t = Instant::now();
        cp = Checkpoint::of(&ids, &to_everyone);
        sign.push(t.elapsed());
        let held = links(&cp);
        let t = Instant::now();
        let report = ChainReport::check(held);
        check.push(t.elapsed());
        let seen = report.authors[0]
            .checkpoint
            .clone()
            .expect("the checkpoint");
        assert_eq!(seen.matches, Some(true), "{seen:?}");
    }
    let payload = cp.payload().len();

    // A day later: 1 000 more records, every tenth private again, and a checkpoint that
    // extends the first (frontier + cover of the new records only). A member witnesses the
    // author by checking both against the 90,901 records it holds, as `Node::witness`
    // does before it cosigns.
    const MORE: u64 = 1_000;
    let first_seq = RECORDS + 1;
    let mut all_ids = ids.clone();
    all_ids.push(RecordId([0xcc; 32]));
    all_ids.extend(
        (0..MORE).map(|i| RecordId(Sha256::digest((RECORDS + 1 + i).to_be_bytes()).into())),
    );
    let everyone_after = |i: u64| i == RECORDS || to_everyone(i);
    let mut extend = Vec::new();
    let mut next = Checkpoint::after(&all_ids, &everyone_after, first_seq, RECORDS);
    for _ in 0..RUNS {
        let t = Instant::now();
        next = Checkpoint::after(&all_ids, &everyone_after, first_seq, RECORDS);
        extend.push(t.elapsed());
    }
    let next_payload = next.payload().len();
    let frontier = next.previous.as_ref().map_or(0, |p| p.frontier.len());
    let witnessed_links = || -> Vec<Link> {
        let mut held = links(&cp);
        let total = all_ids.len() as u64;
        held.extend(
            (RECORDS + 1..total)
                .filter(|&i| everyone_after(i))
                .map(|i| Link {
                    author: author.key(),
                    seq: i + 1,
                    prev: Some(all_ids[i as usize - 1]),
                    id: all_ids[i as usize],
                    to_everyone: true,
                    checkpoint: None,
                    cosignature: None,
                }),
        );
        held.push(Link {
            author: author.key(),
            seq: total + 1,
            prev: Some(all_ids[total as usize - 1]),
            id: RecordId([0xdd; 32]),
            to_everyone: true,
            checkpoint: Some(next.clone()),
            cosignature: None,
        });
        held
    };
    let mut witness = Vec::new();
    for _ in 0..RUNS {
        let held = witnessed_links();
        let t = Instant::now();
        let report = ChainReport::check(held);
        witness.push(t.elapsed());
        let seen = report.authors[0]
            .checkpoint
            .clone()
            .expect("the checkpoint");
        assert!(seen.verified() && report.clean(), "{seen:?}");
    }

    // The same machine's price of authenticating records one signature at a time.
    let message = vec![7u8; 1_600];
    let signature = ed25519_dalek::Signature::from_bytes(&author.sign(&message));
    let key = ed25519_dalek::VerifyingKey::from_bytes(author.key().as_bytes()).unwrap();
    let n = 5_000;
    let t = Instant::now();
    for _ in 0..n {
        key.verify_strict(&message, &signature).unwrap();
    }
    let per_verify = t.elapsed() / n;
    let all_verify = per_verify * RECORDS as u32;

    let median = |v: &Vec<Duration>| {
        let mut v = v.clone();
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "checkpoint of an author with {RECORDS} records, every tenth private (2 cores, 1 used)"
    );
    println!(
        "  signing: Checkpoint::of (leaf hashes, head, cover)        {}",
        spread(sign)
    );
    println!(
        "  size: {payload} B of JSON payload, {} cover subtrees (one per private record here)",
        cp.cover.len()
    );
    println!(
        "  checking: ChainReport::check of 90,001 held links          {}",
        spread(check.clone())
    );
    println!(
        "  per-record verify_strict of the same 100,000 records:      {:.0} ms ({:.1} µs each)",
        all_verify.as_secs_f64() * 1e3,
        per_verify.as_secs_f64() * 1e6
    );
    println!(
        "  ratio checking / verifying every signature: {:.4}",
        median(&check).as_secs_f64() / all_verify.as_secs_f64()
    );
    println!("then {MORE} more records (every tenth private) and a checkpoint extending the first");
    println!(
        "  signing: Checkpoint::after                                 {}",
        spread(extend)
    );
    println!(
        "  size: {next_payload} B of JSON payload: frontier of {frontier} hashes (the consistency proof), {} cover subtrees",
        next.cover.len()
    );
    println!(
        "  witnessing: ChainReport::check of both checkpoints over {} held links  {}",
        witnessed_links().len(),
        spread(witness.clone())
    );
    println!(
        "  ratio witnessing / verifying every signature of the 101,000 records: {:.4}",
        median(&witness).as_secs_f64() / (per_verify * (RECORDS + MORE) as u32).as_secs_f64()
    );
}
