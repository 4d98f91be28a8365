//! `coalition backup` and `coalition restore`: a whole home in one file (see
//! [`crate::backup`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::shared::passphrase;
use super::{out, Outcome};
use crate::backup;
use crate::config::{Config, Home};
use crate::node::Node;
use crate::store::StoreKey;

/// `coalition backup`.
#[derive(Debug, Args)]
pub struct BackupCmd {
    /// The backup file to write (created with mode 0600).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `coalition restore`.
#[derive(Debug, Args)]
pub struct RestoreCmd {
    /// A file written by `coalition backup`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs `coalition backup`.
pub(super) async fn backup(home: &Home, cmd: BackupCmd) -> Result<Outcome> {
    Config::load(home)?;
    let key = StoreKey::of(&Node::unlock_home(home, &passphrase(false)?)?);
    let manifest = backup::create(home, &cmd.output, cmd.force, &key)
        .await
        .with_context(|| format!("cannot back up the home {}", home.dir().display()))?;
    let bytes: u64 = manifest.members.values().map(|m| m.size).sum();
    out(format!(
        "backed up the home of {} ({bytes} bytes: config, encrypted key, store) to {}",
        manifest.org_key,
        cmd.output.display()
    ))?;
    eprintln!(
        "keep it as safe as the home: the key inside stays encrypted with your passphrase, and the store with the key"
    );
    Ok(Outcome::Success)
}

/// Runs `coalition restore`.
pub(super) async fn restore(home: &Home, cmd: RestoreCmd) -> Result<Outcome> {
    let p = passphrase(false)?;
    let manifest = backup::restore(&cmd.file, home, &p)
        .await
        .with_context(|| format!("cannot restore {}", cmd.file.display()))?;
    out(format!(
        "restored the home of {} into {} (backup made at {} ms); this node will get a new peer id at its first run: check it with `coalition verify --home {}`",
        manifest.org_key,
        home.dir().display(),
        manifest.created_at_ms,
        home.dir().display()
    ))
    .map(|()| Outcome::Success)
}
