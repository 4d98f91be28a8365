//! `coalition finding add|list|show|correct|retract` and `coalition share`: the
//! operator's own records.

use std::io::Read;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::shared::{open, open_unlocked, out, out_json, Outcome};
use crate::config::Home;
use crate::finding::FindingInput;
use crate::record::Audience;

/// `coalition finding …`
#[derive(Debug, Subcommand)]
pub enum FindingCmd {
    /// Validate, sign and store a finding from a JSON file (or - for stdin).
    Add {
        /// Input file, or `-`.
        file: String,
        /// Who may receive it: private (default), coalition, or KEY[,KEY…].
        #[arg(long, default_value = "private", value_name = "AUDIENCE")]
        share: String,
    },
    /// List current findings (latest versions, not retracted).
    List {
        /// Include retracted findings.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one record: author, signature status, audience, versions, payload.
    Show {
        /// Record id or unique prefix.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Record a corrected version of one of your findings.
    Correct {
        /// Finding id or prefix.
        id: String,
        /// Input file with the corrected finding, or `-`.
        file: String,
    },
    /// Retract one of your findings.
    Retract {
        /// Finding id or prefix.
        id: String,
        /// Why it is retracted (kept with the record).
        #[arg(long)]
        reason: String,
    },
}

/// `coalition share`
#[derive(Debug, Args)]
pub struct ShareCmd {
    /// Record id (or unique prefix).
    pub id: String,
    /// `coalition` or KEY[,KEY…] of member organisations.
    #[arg(long = "with", value_name = "AUDIENCE")]
    pub with: String,
}

/// Runs `coalition share`.
pub(super) async fn share(home: &Home, cmd: ShareCmd) -> Result<Outcome> {
    let audience = Audience::parse_cli(&cmd.with).map_err(anyhow::Error::msg)?;
    let (node, identity) = open_unlocked(home).await?;
    let grant = node.share(&identity, &cmd.id, audience).await?;
    out(grant.to_hex())?;
    Ok(Outcome::Success)
}

/// Runs `coalition finding …`.
pub(super) async fn finding(home: &Home, cmd: FindingCmd) -> Result<Outcome> {
    match cmd {
        FindingCmd::Add { file, share } => {
            let audience = Audience::parse_cli(&share).map_err(anyhow::Error::msg)?;
            let input = parse_input(&file)?;
            let (node, identity) = open_unlocked(home).await?;
            let added = node.add_finding(&identity, &input, audience).await?;
            out(added.finding.to_hex())?;
            if let Some(why) = &added.unsealed {
                eprintln!("note: not sealed: {why}; until then this finding goes only to its audience, directly, never through other members");
            }
            if let Some(a) = added.annex {
                eprintln!("sensitive details stored as private annex {a} (never shared unless you run `coalition share {a} --with …`)");
            }
        }
        FindingCmd::List { all, json } => {
            let node = open(home).await?;
            let rows = node.store().findings(all).await?;
            if json {
                out_json(&rows)?;
            } else if rows.is_empty() {
                eprintln!("no findings yet (add one with `coalition finding add FILE`)");
            } else {
                out(format!(
                    "{:<12}  {:<10}  {:<2}  {:<26}  {:<12}  {}",
                    "ID", "DATE", "CC", "CATEGORY", "AUTHOR", "TITLE"
                ))?;
                for r in rows {
                    out(format!(
                        "{:<12}  {:<10}  {:<2}  {:<26}  {:<12}  {}{}",
                        r.id.short(),
                        r.occurred_start,
                        r.country,
                        r.category,
                        r.author.short(),
                        r.title,
                        if r.retracted { "  [retracted]" } else { "" }
                    ))?;
                }
            }
        }
        FindingCmd::Show { id, json } => {
            let node = open(home).await?;
            let v = node.show(&id).await?;
            if json {
                out_json(&v)?;
            } else {
                let when = v.created_at_ms;
                out(format!("record     {}", v.id))?;
                out(format!(
                    "author     {}{}",
                    v.author,
                    if v.own { " (this organisation)" } else { "" }
                ))?;
                out(format!("signature  {}", v.signature))?;
                out(format!(
                    "schema     {} (seq {}, created {} ms)",
                    v.schema, v.seq, when
                ))?;
                out(format!("audience   {}", v.audience))?;
                if let Some(s) = v.supersedes {
                    out(format!("supersedes {s}"))?;
                }
                for s in &v.superseded_by {
                    out(format!("superseded by {s} (newer version)"))?;
                }
                if let Some(r) = &v.retracted {
                    out(format!("RETRACTED  {r}"))?;
                }
                for a in &v.annexes {
                    out(format!("annex      {a} (private sensitive details)"))?;
                }
                out_json(&v.payload)?;
            }
        }
        FindingCmd::Correct { id, file } => {
            let input = parse_input(&file)?;
            let (node, identity) = open_unlocked(home).await?;
            let added = node.correct(&identity, &id, &input).await?;
            out(added.finding.to_hex())?;
        }
        FindingCmd::Retract { id, reason } => {
            let (node, identity) = open_unlocked(home).await?;
            out(node.retract(&identity, &id, &reason).await?.to_hex())?;
        }
    }
    Ok(Outcome::Success)
}

/// The bytes of `file` (`-`: stdin) and the name to report it by.
fn read_input(file: &str) -> Result<(Vec<u8>, String)> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("while reading the finding from stdin")?;
        Ok((buf, "<stdin>".into()))
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
        Ok((bytes, file.to_string()))
    }
}

/// Reads and parses a finding input file (`-`: stdin).
fn parse_input(file: &str) -> Result<FindingInput> {
    let (bytes, name) = read_input(file)?;
    Ok(FindingInput::parse(&bytes, &name)?)
}
