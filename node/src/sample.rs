//! Sample data and figure formatting shared by the demo, the benchmarks and the tests:
//! the shipped example findings made into many distinct records, and counts read from
//! the environment and printed the way a reader of a benchmark expects.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use coalition_proto::v1::{RecordBody, SignedRecord};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use serde_json::Value;

use crate::demo::example_files;
use crate::finding::{to_payload, FINDING_SCHEMA};
use crate::identity::{Identity, OrgKey};
use crate::record::{self, Audience, Draft, RecordId, SIGNING_PREFIX};

/// The example findings in `dir` (every `*.json`, by file name), without their
/// `sensitive` part: what a finding shared with the coalition carries.
pub fn example_findings(dir: &Path) -> std::io::Result<Vec<Value>> {
    let mut out = Vec::new();
    for path in example_files(dir)? {
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path)?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        if let Some(o) = v.as_object_mut() {
            o.remove("sensitive");
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no example findings in {}", dir.display()),
        ));
    }
    Ok(out)
}

/// Example `i % n` with its title made unique by `tag`, so each copy is its own record
/// (the title stays within the schema's length limit).
pub fn varied(examples: &[Value], i: usize, tag: &str) -> Value {
    let mut v = examples[i % examples.len()].clone();
    let title: String = v["title"]
        .as_str()
        .unwrap_or("Finding")
        .chars()
        .take(170)
        .collect();
    v["title"] = Value::String(format!("{title} [{tag}]"));
    v
}

/// An author's chain head: its latest seq and record id (`(0, None)` before its first).
pub type Head = (u64, Option<RecordId>);

/// Signs `count` coalition-wide findings of `author` under `epoch` continuing `head`,
/// each an example [`varied`] by `tag` and its seq: their bytes in seq order, and the
/// new head.
pub fn chain(
    author: &Identity,
    head: Head,
    count: usize,
    epoch: [u8; 32],
    examples: &[Value],
    tag: &str,
) -> (Vec<Vec<u8>>, Head) {
    let (mut seq, mut prev) = head;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        seq += 1;
        let r = record::sign(
            author,
            seq,
            prev,
            Draft {
                schema: FINDING_SCHEMA.into(),
                audience: Audience::Coalition,
                supersedes: None,
                epoch: Some(epoch),
                payload: to_payload(&varied(examples, seq as usize, &format!("{tag}-{seq}"))),
                created_at_ms: 1_735_689_600_000 + seq as i64 * 60_000,
            },
        );
        prev = Some(r.id);
        out.push(r.bytes);
    }
    (out, (seq, prev))
}

/// A positive count from the environment variable `name` (`100_000` is allowed), or
/// `default` when it is unset; a value that is not a positive number is said and ignored.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                eprintln!("{name}={v:?} is not a positive number; using {default}");
                default
            }),
        Err(_) => default,
    }
}

/// A rate rounded to a whole number, with thousands separated: `12,345`.
pub fn thousands(rate: f64) -> String {
    let s = format!("{rate:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && c.is_ascii_digit() && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A single-core ceiling for checking these records, measured on this machine now: the
/// rate of raw ed25519 `verify_strict` calls over exactly the messages `record::verify`
/// checks (signing prefix + body) of up to 256 of `records`, for at least `min`.
/// Returns the calls, the time they took, and the messages' average size in bytes.
///
/// # Panics
/// On a record that is not a validly signed envelope: the samples are the caller's own.
pub fn raw_verify(records: &[Vec<u8>], min: Duration) -> (u64, Duration, usize) {
    let sample: Vec<(VerifyingKey, Vec<u8>, Signature)> = records
        .iter()
        .step_by((records.len() / 256).max(1))
        .take(256)
        .map(|bytes| {
            let env = SignedRecord::decode(bytes.as_slice()).expect("a signed record");
            let author = RecordBody::decode(env.body.as_ref())
                .expect("a body")
                .author;
            let key = OrgKey::from_bytes(&author).expect("a key").verifying_key();
            let mut msg = SIGNING_PREFIX.to_vec();
            msg.extend_from_slice(&env.body);
            let sig = Signature::from_bytes(env.signature.as_ref().try_into().expect("64 bytes"));
            (key, msg, sig)
        })
        .collect();
    assert!(!sample.is_empty(), "no records to measure");
    let avg = sample.iter().map(|s| s.1.len()).sum::<usize>() / sample.len();
    let (calls, took) = measure_one_core(min, |i| {
        let (k, m, s) = &sample[i % sample.len()];
        black_box(k.verify_strict(black_box(m), s)).expect("valid signature");
    });
    (calls, took, avg)
}

/// Runs `f(0)`, `f(1)`, ... on this thread (after a warm-up) for at least `min`;
/// returns the calls and the time they took.
pub fn measure_one_core(min: Duration, mut f: impl FnMut(usize)) -> (u64, Duration) {
    for i in 0..64 {
        f(i);
    }
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..256 {
            f(calls as usize);
            calls += 1;
        }
        let took = start.elapsed();
        if took >= min {
            return (calls, took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.6), "1,234,568");
    }

    #[test]
    fn varied_copies_differ_and_stay_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples");
        let examples = example_findings(&dir).unwrap();
        assert!(examples.iter().all(|v| v.get("sensitive").is_none()));
        let a = varied(&examples, 0, "a");
        let b = varied(&examples, examples.len(), "b");
        assert_ne!(a, b);
        for v in [a, b] {
            crate::schema::schemas()
                .validate(crate::finding::FINDING_SCHEMA, &v, "sample")
                .unwrap();
        }
    }
}
