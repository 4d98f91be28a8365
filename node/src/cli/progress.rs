//! Progress bars for long commands (`import`, `export`, `verify` of large bundles or
//! stores): counts, rate and time left, drawn on stderr, and only when stderr is a
//! terminal. Scripts, tests and logs (stderr redirected) see exactly what they saw before:
//! nothing is drawn and no line is added.
//!
//! The library reports `(done, total)` through plain callbacks (`Node::import_observed`
//! and the like); this module turns them into an `indicatif` bar.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar counts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// Records.
    Records,
    /// Bytes.
    Bytes,
}

/// A progress bar on stderr, hidden unless stderr is a terminal.
#[derive(Debug)]
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `verb` (e.g. "importing"), counting `unit`.
    pub(super) fn new(verb: &str, unit: Unit) -> Self {
        Self::with_target(verb, unit, std::io::stderr().is_terminal())
    }

    fn with_target(verb: &str, unit: Unit, terminal: bool) -> Self {
        let target = if terminal {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let counts = match unit {
            Unit::Records => "{human_pos}/{human_len} records ({per_sec}, {eta} left)",
            Unit::Bytes => "{bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        };
        let template = format!("{verb} [{{elapsed_precise}}] {{wide_bar}} {counts}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        if terminal {
            // Rate and time left keep moving while a batch is being written.
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Self { bar }
    }

    /// The callback the library calls with `(done, total)`.
    pub(super) fn observer(&self) -> impl Fn(u64, u64) + Sync + 'static {
        let bar = self.bar.clone();
        move |done, total| {
            if bar.length() != Some(total) {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }
}

impl Drop for Progress {
    /// The bar leaves no line behind: the command's own summary follows.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_nothing_is_drawn_and_counts_still_move() {
        let p = Progress::with_target("importing", Unit::Records, false);
        assert!(p.bar.is_hidden());
        let observe = p.observer();
        observe(5, 10);
        assert_eq!(p.bar.position(), 5);
        assert_eq!(p.bar.length(), Some(10));
    }
}
