//! Seeded randomness for the fault-injection tests (crash and partition runs): a small
//! deterministic generator (SplitMix64, not for cryptography), the run's seed (printed,
//! settable with `COALITION_SEED`) and nearest-rank percentiles for their figures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A deterministic generator: the same seed gives the same run of choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// An index into a slice of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration uniformly in `0..=max`, to the millisecond.
    pub fn upto(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.below(max.as_millis() as u64 + 1))
    }
}

/// The seed of this run: `COALITION_SEED` when set, else taken from the clock. Printed
/// either way, so that a failing run can be replayed with `COALITION_SEED=…`.
pub fn seed(what: &str) -> u64 {
    let seed = match std::env::var("COALITION_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            panic!("COALITION_SEED={s:?} is not a number; give e.g. COALITION_SEED=42")
        }),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("{what}: seed {seed} (replay with COALITION_SEED={seed})");
    seed
}

/// A count from the environment variable `name`, or `default` when unset.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a count; give a whole number")),
        Err(_) => default,
    }
}

/// Nearest-rank percentile `p` (0.0..=1.0) of `values` (sorted here); zero when empty.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
