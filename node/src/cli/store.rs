//! `coalition export`, `import` and `verify`: moving records in and out of the store in
//! files, and checking a bundle or the store offline; `coalition store encrypt`:
//! encrypting a store written before stores were encrypted.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::analysis;
use super::progress::{Progress, Unit};
use super::shared::{charter_id, open, out, out_json, passphrase, Format, Outcome};
use crate::config::{Config, Home};
use crate::daemon::DaemonInfo;
use crate::identity::OrgKey;
use crate::node::Node;
use crate::store::{Encryption, Store, StoreKey};
use crate::verify::{verify_bundle_observed, Failure, VerifyReport};

/// `coalition export`
#[derive(Debug, Args)]
pub struct ExportCmd {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Bundle)]
    pub format: Format,
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// Include private records and annexes (for your own backups only).
    #[arg(long)]
    pub include_private: bool,
    /// Also include records shared with this member organisation only.
    #[arg(long = "for", value_name = "KEY")]
    pub recipient: Option<OrgKey>,
    /// CSV: add the HXL hashtag row under the header.
    #[arg(long)]
    pub hxl: bool,
    /// Filters (JSON Lines, CSV and GeoJSON exports).
    #[command(flatten)]
    pub filters: super::analysis::QueryArgs,
}

/// `coalition import`
#[derive(Debug, Args)]
pub struct ImportCmd {
    /// Bundle file.
    pub path: PathBuf,
    /// Machine-readable report.
    #[arg(long)]
    pub json: bool,
}

/// `coalition verify`
#[derive(Debug, Args)]
pub struct VerifyCmd {
    /// Bundle file; omit to verify the local store.
    pub path: Option<PathBuf>,
    /// Judge membership by this charter id (from `coalition charter show`) instead of
    /// trusting the charter the bundle carries.
    #[arg(long, value_name = "CHARTER_ID")]
    pub charter: Option<String>,
    /// Machine-readable report.
    #[arg(long)]
    pub json: bool,
}

/// `coalition store …`
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Encrypt this home's store in place, if it was written before stores were
    /// encrypted (stop `coalition run` first). Atomic: interrupted, it leaves the old
    /// store as it was, and running it again finishes the job.
    Encrypt,
}

/// Runs `coalition store …`.
pub(super) async fn store(home: &Home, cmd: StoreCmd) -> Result<Outcome> {
    match cmd {
        StoreCmd::Encrypt => {
            Config::load(home)?;
            if let Some(running) = DaemonInfo::read(home) {
                bail!(
                    "the node of this home is running (pid {}): stop `coalition run` first; nothing was changed",
                    running.pid
                );
            }
            let p = passphrase(false)?;
            let identity = Node::unlock_home(home, &p)?;
            let db = home.db_path();
            match Store::encrypt_in_place(&db, &StoreKey::of(&identity)).await? {
                Encryption::Encrypted { records } => {
                    out(format!(
                        "encrypted {} in place ({records} records); it opens only with this home's key file and passphrase",
                        db.display()
                    ))?;
                    eprintln!(
                        "backups made before now hold the store in clear: replace them (`coalition backup`) and destroy the old ones; the old unencrypted pages may remain in this disk's free space"
                    );
                }
                Encryption::AlreadyEncrypted => out(format!(
                    "{} is already encrypted; nothing to do",
                    db.display()
                ))?,
            }
            Ok(Outcome::Success)
        }
    }
}

/// Runs `coalition export`.
pub(super) async fn export(home: &Home, cmd: ExportCmd) -> Result<Outcome> {
    let node = open(home).await?;
    if cmd.format == Format::Bundle && !cmd.filters.to_query()?.is_empty() {
        bail!("filters apply to jsonl, csv and geojson exports; a bundle holds every shareable record");
    }
    let n = analysis::export(
        &node,
        cmd.format,
        &cmd.output,
        cmd.include_private,
        cmd.recipient,
        &cmd.filters,
        cmd.hxl,
    )
    .await?;
    eprintln!("wrote {n} records to {}", cmd.output.display());
    Ok(Outcome::Success)
}

/// Runs `coalition import`.
pub(super) async fn import(home: &Home, cmd: ImportCmd) -> Result<Outcome> {
    let node = open(home).await?;
    let report = {
        let bar = Progress::new("importing", Unit::Records);
        node.import_observed(&cmd.path, &bar.observer()).await?
    };
    if cmd.json {
        out_json(&report)?;
    } else {
        out(format!(
            "read {} records from {}: {} stored, {} already held, {} refused",
            report.read,
            cmd.path.display(),
            report.stored,
            report.duplicates,
            report.failures.len()
        ))?;
        print_failures(&report.failures)?;
    }
    Ok(Outcome::from_check(report.failures.is_empty()))
}

/// Runs `coalition verify`.
pub(super) async fn verify(home: &Home, cmd: VerifyCmd) -> Result<Outcome> {
    let expected = charter_id(cmd.charter.as_deref())?;
    let (report, what) = match &cmd.path {
        Some(p) => {
            let bar = Progress::new("verifying", Unit::Records);
            let report = verify_bundle_observed(p, expected, &bar.observer())?;
            (report, p.display().to_string())
        }
        None => {
            let node = open(home).await?;
            let bar = Progress::new("verifying", Unit::Records);
            (
                node.verify_store_observed(&bar.observer()).await?,
                format!("store {}", home.db_path().display()),
            )
        }
    };
    let held = if cmd.path.is_some() {
        "in the bundle"
    } else {
        "held"
    };
    print_verify(&report, &what, held, cmd.json)?;
    Ok(Outcome::from_check(report.ok()))
}

/// Prints a verification report (`what`: the bundle or store it is about).
fn print_verify(report: &VerifyReport, what: &str, held: &str, json: bool) -> Result<()> {
    if json {
        return out_json(report);
    }
    if report.ok() {
        out(format!(
            "OK: all {} records in {what} verify (signatures, encoding, schemas); {} authors",
            report.valid,
            report.authors.len()
        ))?;
    } else {
        out(format!(
            "FAILED: {} of {} records in {what} do not verify:",
            report.failures.len(),
            report.checked.max(report.failures.len() as u64)
        ))?;
        print_failures(&report.failures)?;
    }
    match (&report.coalition, &report.epoch) {
        (Some(c), Some(e)) => out(format!(
            "membership: every author checked against coalition {c:?} (charter {}, current epoch {})",
            report.charter.as_deref().unwrap_or("?"),
            &e[..12]
        ))?,
        _ => {
            out("membership: no charter present, so authors were not checked against a coalition")?
        }
    }
    for e in &report.equivocations {
        out(format!("WARNING equivocation: {e}"))?;
    }
    print_chains(&report.evidence, &report.chains, held)?;
    Ok(())
}

/// Prints chain evidence (one `WARNING equivocation:` line each, with every record it
/// consists of) and, per author whose chain has gaps, the seqs that are not `held` (a word
/// for where they are missing from: "held" by a node, "in the bundle").
pub(super) fn print_chains(
    evidence: &[crate::chain::Evidence],
    chains: &[crate::chain::AuthorChain],
    held: &str,
) -> Result<()> {
    for e in evidence {
        out(format!("WARNING equivocation: {e}"))?;
    }
    for c in chains {
        let Some(cp) = &c.checkpoint else { continue };
        let witnessed = match &c.witnessed {
            Some(w) if w.record == cp.record => format!(
                "witnessed by {} member{}",
                w.witnesses.len(),
                if w.witnesses.len() == 1 { "" } else { "s" }
            ),
            Some(w) => format!(
                "not witnessed yet; the latest witnessed one covers its first {} records (record {}, {} witness{})",
                w.size,
                w.record,
                w.witnesses.len(),
                if w.witnesses.len() == 1 { "" } else { "es" }
            ),
            None => "not witnessed yet".to_string(),
        };
        out(format!(
            "checkpoint of {}: its first {} records (record {}), {witnessed}; {}",
            c.author,
            cp.size,
            cp.record,
            match (cp.matches, &cp.problem) {
                (Some(true), _) => "the records held give its head".to_string(),
                (Some(false), _) => "CONTRADICTED by the records held".to_string(),
                (None, Some(p)) => format!("not checked: {p}"),
                (None, None) => format!(
                    "INCOMPLETE: seq {} not {held} (every member receives them)",
                    crate::chain::seqs(&cp.missing)
                ),
            }
        ))?;
    }
    for c in chains.iter().filter(|c| !c.gaps.is_empty()) {
        out(format!(
            "chain of {}: {} records up to seq {}; not {held}: seq {} (outside this audience, or withheld)",
            c.author,
            c.held,
            c.highest,
            crate::chain::seqs(&c.gaps)
        ))?;
    }
    Ok(())
}

/// One line per refused or failing record: position, id if known, reason.
fn print_failures(failures: &[Failure]) -> Result<()> {
    for f in failures {
        out(format!(
            "  record #{}{}: {}",
            f.index,
            f.id.as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default(),
            f.reason
        ))?;
    }
    Ok(())
}
