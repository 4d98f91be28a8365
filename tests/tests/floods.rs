//! Floods and slow peers (issue 18): against one node, while a member keeps syncing and an
//! analyst uses its API, each attack of [`coalition_tests::adversary::measure::attacks`]
//! in turn, a few seconds each: a dishonest member's request flood, a member that opens
//! streams and never reads, gossip floods by a member (announcements of records nobody
//! has; junk) and by strangers, max+1 and garbage frames, strangers' request floods and
//! stalled frames, and 1 000 concurrent dials from 200 addresses.
//!
//! During each the node must stay up, a member's record must reach it, its API must
//! answer, and its RSS must stay under 512 MiB. The bounds are loose (a busy 2-core
//! machine); the figures come from `cargo bench -p coalition-tests --bench floods`.

use std::time::Duration;

use coalition_tests::adversary::measure::{
    attacks, figure_run, flood_secs, measure, Figures, Fixture,
};

/// The target's memory goal.
const RSS_LIMIT_KIB: u64 = 512 * 1024;
/// The longest a member's record may take to reach the target during an attack.
const SYNC_BOUND: Duration = Duration::from_secs(45);
/// The slowest an API call may be during an attack.
const API_BOUND: Duration = Duration::from_secs(8);

#[test]
fn floods_and_slow_peers_neither_crash_nor_stall_the_node() {
    let mut fx = Fixture::start();
    let mut figures = Vec::new();
    for (name, start) in attacks() {
        let f = measure(&mut fx, name, Duration::from_secs(4), SYNC_BOUND, start);
        eprintln!("{}\n  adversary: {}", f.row(), f.adversary);
        assert!(
            f.alive,
            "{name}: the node died or its API stopped answering"
        );
        assert!(
            f.sync.is_some(),
            "{name}: a member's record did not reach the node within {SYNC_BOUND:?}"
        );
        assert!(
            f.api_errors.is_empty() && f.api_calls > 0,
            "{name}: the API failed during the attack: {:?}",
            f.api_errors
        );
        assert!(
            f.api_max < API_BOUND,
            "{name}: an API call took {:?}",
            f.api_max
        );
        assert!(
            f.rss_peak_kib < RSS_LIMIT_KIB,
            "{name}: RSS peaked at {} KiB",
            f.rss_peak_kib
        );
        figures.push(f);
    }
    eprintln!("{}", Figures::HEADER);
    for f in &figures {
        eprintln!("{}", f.row());
    }
    fx.na.stop();
    fx.nb.stop();
}

/// The figures of docs/RELIABILITY.md on the debug build: every attack held 30 s
/// (`FLOOD_SECS`). `cargo test -p coalition-tests --test floods -- --ignored --nocapture`
#[test]
#[ignore = "a figure-producing run of several minutes"]
fn flood_figures() {
    let rows = figure_run(flood_secs(30));
    assert!(rows.iter().all(|f| f.alive), "the node went down");
}
