//! Figures for "Floods and slow peers" (docs/RELIABILITY.md): each attack of
//! [`coalition_tests::adversary::measure::attacks`] held for 30 s (`FLOOD_SECS` to
//! change) against one node while a member syncs and an analyst calls the API; prints a
//! Markdown table of the target's RSS, the member's sync time and the API latency.
//!
//! `cargo bench -p coalition-tests --bench floods` (release build). The same run on the
//! debug build: `cargo test -p coalition-tests --test floods -- --ignored --nocapture`.
//! Without `--bench` (`cargo test --benches`/`--all-targets`) it does nothing: the
//! bounded version is `tests/tests/floods.rs`.

use coalition_tests::adversary::measure::{figure_run, flood_secs};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("floods: figures only under `cargo bench`; the bounded run is tests/floods.rs");
        return;
    }
    figure_run(flood_secs(30));
}
