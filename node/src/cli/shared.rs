//! What every command shares: its [`Outcome`], the export [`Format`] (plain and analyst
//! exports), printing to stdout, the passphrase, and opening and unlocking the node of a
//! home.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::config::Home;
use crate::identity::Identity;
use crate::node::Node;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Signed bundle (docs/FORMATS.md), what auditors verify.
    Bundle,
    /// One JSON object per record.
    Jsonl,
    /// One row per current finding, columns close to ACLED's.
    Csv,
    /// GeoJSON FeatureCollection of current findings.
    Geojson,
}

/// A command's result when it did not fail outright.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// A check failed (exit 1).
    CheckFailed,
}

impl Outcome {
    /// [`Outcome::Success`] when `ok`, else [`Outcome::CheckFailed`].
    pub(super) fn from_check(ok: bool) -> Self {
        if ok {
            Self::Success
        } else {
            Self::CheckFailed
        }
    }
}

/// Prints one line on stdout (a closed stdout surfaces as `BrokenPipe`).
pub(super) fn out(text: impl AsRef<str>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_ref().as_bytes())?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// Prints `value` as pretty JSON on stdout.
pub(super) fn out_json(value: &impl serde::Serialize) -> Result<()> {
    out(serde_json::to_string_pretty(value)?)
}

/// The passphrase: `COALITION_PASSPHRASE`, else an interactive prompt.
pub(super) fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("COALITION_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set COALITION_PASSPHRASE or run in a terminal to be prompted");
    }
    let p = rpassword::prompt_password("Passphrase for the organisation key: ")
        .context("while reading the passphrase")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat the passphrase: ")?;
        if again != p {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(p)
}

/// Opens the node of `home`.
pub(super) async fn open(home: &Home) -> Result<Node> {
    Ok(Node::open(home.clone()).await?)
}

/// Unlocks the organisation key of `node` with the passphrase.
pub(super) fn unlock(node: &Node) -> Result<Identity> {
    let p = passphrase(false)?;
    Ok(node.unlock(&p)?)
}
