//! Figures for "Floods and slow peers" (docs/RELIABILITY.md): each attack of
//! [`coalition_tests::adversary::measure::attacks`] held for 30 s (`FLOOD_SECS` to
//! change) against one node while a member syncs and an analyst calls the API; prints a
//! Markdown table of the target's RSS, the member's sync time and the API latency.
//!
//! `cargo bench -p coalition-tests --bench floods`

use std::time::Duration;

use coalition_tests::adversary::measure::{attacks, measure, Figures, Fixture};

fn main() {
    let secs = std::env::var("FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut fx = Fixture::start();
    let quiet = fx.sync_time(Duration::from_secs(120));
    eprintln!("member sync without attack: {quiet:?}");
    let mut rows = Vec::new();
    for (name, start) in attacks() {
        let f = measure(
            &mut fx,
            name,
            Duration::from_secs(secs),
            Duration::from_secs(secs.max(60)),
            start,
        );
        eprintln!(
            "{}\n  adversary: {}\n  alive: {}",
            f.row(),
            f.adversary,
            f.alive
        );
        if !f.api_errors.is_empty() {
            eprintln!("  API errors: {:?}", f.api_errors);
        }
        rows.push(f);
    }
    println!(
        "member sync without attack: {}",
        quiet.map_or("not within 120 s".into(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        ))
    );
    println!("{}", Figures::HEADER);
    for f in &rows {
        println!("{}{}", f.row(), if f.alive { "" } else { " NODE DOWN" });
    }
    fx.na.stop();
    fx.nb.stop();
}
