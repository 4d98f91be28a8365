//! `coalition charter draft|sign|adopt|show` and `coalition member propose|approve`:
//! founding a coalition and changing its membership, with the files founders exchange
//! (member cards and charter drafts).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::shared::{open, open_unlocked, out, out_json, unlock, Outcome};
use crate::charter::{self, Change, Member, Membership, SignedCharter};
use crate::config::Home;
use crate::identity::OrgKey;

/// `coalition charter …`
#[derive(Debug, Subcommand)]
pub enum CharterCmd {
    /// Write an unsigned charter draft listing the founding members.
    Draft {
        /// Coalition name.
        #[arg(long)]
        name: String,
        /// Approvals a membership change needs (default: a strict majority).
        #[arg(long)]
        threshold: Option<u32>,
        /// A founder's member card (what `coalition identity export` prints); repeat per founder.
        #[arg(long = "member", value_name = "FILE", required = true)]
        members: Vec<PathBuf>,
        /// Accept a threshold at or below half the members.
        #[arg(long)]
        allow_low_threshold: bool,
        /// Output file (default: stdout).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Add this organisation's signature to a draft (edits the file in place).
    Sign {
        /// Draft file.
        draft: PathBuf,
    },
    /// Store a charter every founder has signed: this node joins the coalition.
    Adopt {
        /// Draft file with all signatures.
        draft: PathBuf,
    },
    /// Current members, threshold, epoch, history, open proposals, equivocation evidence.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `coalition member …`
#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Propose a change for the current epoch (counts as your approval).
    #[command(subcommand)]
    Propose(ProposeCmd),
    /// Approve a proposal for the current epoch.
    Approve {
        /// Proposal record id (or prefix).
        proposal: String,
    },
}

/// `coalition member propose …`
#[derive(Debug, Subcommand)]
pub enum ProposeCmd {
    /// Admit an organisation (FILE: its member card).
    Add {
        /// Member card file.
        file: PathBuf,
        /// Accept a resulting threshold at or below half the members.
        #[arg(long)]
        allow_low_threshold: bool,
    },
    /// Remove a member organisation.
    Remove {
        /// Its organisation key.
        key: OrgKey,
        /// Accept a resulting threshold at or below half the members.
        #[arg(long)]
        allow_low_threshold: bool,
    },
    /// Replace a member's key (NEWFILE: its card with the new key).
    Rotate {
        /// Key being retired.
        old: OrgKey,
        /// Member card with the new key.
        new_file: PathBuf,
    },
    /// Change the threshold.
    Threshold {
        /// New threshold.
        threshold: u32,
        /// Accept a threshold at or below half the members.
        #[arg(long)]
        allow_low_threshold: bool,
    },
}

/// Runs `coalition charter …`.
pub(super) async fn charter(home: &Home, cmd: CharterCmd) -> Result<Outcome> {
    match cmd {
        CharterCmd::Draft {
            name,
            threshold,
            members,
            allow_low_threshold,
            output,
        } => {
            let cards = members
                .iter()
                .map(|p| read_card(p))
                .collect::<Result<Vec<_>>>()?;
            let t = threshold.unwrap_or(cards.len() as u32 / 2 + 1);
            if !charter::is_majority(t, cards.len()) {
                eprintln!("WARNING: threshold {t} of {} is not a strict majority: two conflicting changes could both pass", cards.len());
            }
            let draft =
                SignedCharter::draft(&name, t, cards, allow_low_threshold, crate::now_ms())?;
            match output {
                Some(p) => {
                    write_draft(&p, &draft)?;
                    eprintln!(
                        "draft written to {}; each founder runs `coalition charter sign {}`",
                        p.display(),
                        p.display()
                    );
                }
                None => out_json(&draft)?,
            }
        }
        CharterCmd::Sign { draft } => {
            let mut d = read_draft(&draft)?;
            let identity = unlock(home)?;
            d.sign(&identity)?;
            write_draft(&draft, &d)?;
            let missing = d.missing();
            if missing.is_empty() {
                out("signed; every founder has signed: each founder can now run `coalition charter adopt`")?;
            } else {
                out(format!(
                    "signed; still missing: {}",
                    missing
                        .iter()
                        .map(|m| m.organisation.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
            }
        }
        CharterCmd::Adopt { draft } => {
            let d = read_draft(&draft)?;
            let (node, identity) = open_unlocked(home).await?;
            let id = node.adopt_charter(&identity, &d).await?;
            out(id.to_hex())?;
            eprintln!(
                "coalition {:?} adopted with {} members, threshold {}",
                d.charter.name,
                d.charter.members.len(),
                d.charter.threshold
            );
        }
        CharterCmd::Show { json } => {
            let node = open(home).await?;
            let Some(m) = node.membership().await? else {
                bail!("no coalition charter on this node yet (draft one with `coalition charter draft`, or import a bundle that carries it)");
            };
            // Members' chains as held: a fork or a broken link is evidence against a member.
            let chains = node.chains().await?;
            if json {
                let mut v = serde_json::to_value(&m)?;
                v["chain_evidence"] = serde_json::to_value(&chains.evidence)?;
                out_json(&v)?;
            } else {
                print_membership(&m)?;
                super::store::print_chains(&chains.evidence, &[], "held")?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// Options of `coalition checkpoint`.
#[derive(clap::Args, Debug)]
pub struct CheckpointCmd {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `coalition checkpoint`.
pub(super) async fn checkpoint(home: &Home, cmd: CheckpointCmd) -> Result<Outcome> {
    let (node, identity) = open_unlocked(home).await?;
    let (record, c) = node.checkpoint(&identity).await?;
    if cmd.json {
        out_json(&serde_json::json!({
            "id": record.id,
            "seq": record.seq,
            "size": c.size,
            "head": hex::encode(c.head),
        }))?;
    } else {
        out(record.id.to_hex())?;
        eprintln!(
            "checkpoint of this organisation's first {} records (head {}) signed as its record {}; members receive it at the next sync",
            c.size,
            hex::encode(c.head),
            record.seq
        );
    }
    Ok(Outcome::Success)
}

/// Runs `coalition witness`.
pub(super) async fn witness(home: &Home, cmd: CheckpointCmd) -> Result<Outcome> {
    let (node, identity) = open_unlocked(home).await?;
    let done = node.witness(&identity).await?;
    if cmd.json {
        out_json(&done)?;
        return Ok(Outcome::Success);
    }
    if done.is_empty() {
        out("nothing to witness: every member's latest checkpoint held is cosigned by this organisation already, or none is held")?;
    }
    for w in &done {
        match (&w.cosignature, &w.refused) {
            (Some(id), _) => out(format!(
                "cosigned checkpoint {} of {} (its first {} records) as record {}",
                w.checkpoint.short(),
                w.author,
                w.size,
                id.short()
            ))?,
            (None, Some(why)) => out(format!(
                "WARNING not cosigned: checkpoint {} of {} (its first {} records): {why}",
                w.checkpoint.short(),
                w.author,
                w.size
            ))?,
            (None, None) => {}
        }
    }
    Ok(Outcome::Success)
}

/// Runs `coalition member …`.
pub(super) async fn member(home: &Home, cmd: MemberCmd) -> Result<Outcome> {
    let (node, identity) = open_unlocked(home).await?;
    match cmd {
        MemberCmd::Propose(p) => {
            let change = match p {
                ProposeCmd::Add {
                    file,
                    allow_low_threshold,
                } => Change::Add {
                    member: read_card(&file)?,
                    low_threshold_acknowledged: allow_low_threshold,
                },
                ProposeCmd::Remove {
                    key,
                    allow_low_threshold,
                } => Change::Remove {
                    key,
                    low_threshold_acknowledged: allow_low_threshold,
                },
                ProposeCmd::Rotate { old, new_file } => Change::Rotate {
                    old,
                    new: read_card(&new_file)?,
                },
                ProposeCmd::Threshold {
                    threshold,
                    allow_low_threshold,
                } => Change::Threshold {
                    threshold,
                    low_threshold_acknowledged: allow_low_threshold,
                },
            };
            let id = node.propose(&identity, change, None).await?;
            out(id.to_hex())?;
            eprintln!("proposal recorded; it takes effect once enough members run `coalition member approve {}`", id.short());
        }
        MemberCmd::Approve { proposal } => {
            let id = node.approve(&identity, &proposal).await?;
            out(id.to_hex())?;
            if let Some(m) = node.membership().await? {
                eprintln!(
                    "approval recorded; membership epoch is now {}",
                    &hex::encode(m.current().epoch)[..12]
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// Reads a member card (what `coalition identity export` prints).
fn read_card(path: &Path) -> Result<Member> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read member card {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{} is not a member card (expected what `coalition identity export` prints: organisation, country, key)", path.display())
    })
}

/// Reads a charter draft (made by `coalition charter draft`).
fn read_draft(path: &Path) -> Result<SignedCharter> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read charter draft {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a charter draft (made by `coalition charter draft`)",
            path.display()
        )
    })
}

/// Writes a charter draft, replacing the file atomically.
fn write_draft(path: &Path, draft: &SignedCharter) -> Result<()> {
    let text = serde_json::to_string_pretty(draft)? + "\n";
    crate::node::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// Prints the membership as `coalition charter show` does without `--json`.
fn print_membership(m: &Membership) -> Result<()> {
    let cur = m.current();
    out(format!("coalition  {}", m.name))?;
    out(format!("charter    {}", hex::encode(m.charter_id)))?;
    out(format!(
        "epoch      {} (after {} changes)",
        hex::encode(cur.epoch),
        cur.height
    ))?;
    out(format!(
        "threshold  {} of {} members{}",
        cur.threshold,
        cur.members.len(),
        if charter::is_majority(cur.threshold, cur.members.len()) {
            ""
        } else {
            "  WARNING: not a strict majority"
        }
    ))?;
    out("members:")?;
    for mem in cur.members.values() {
        out(format!(
            "  {}  {}  {}",
            mem.key, mem.country, mem.organisation
        ))?;
    }
    out("history:")?;
    out("  charter adopted")?;
    for a in &m.applied {
        out(format!(
            "  {} (proposal {}, approved by {})",
            a.change,
            a.proposal.short(),
            a.approvers
                .iter()
                .map(|k| k.short())
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    for p in &m.pending {
        out(format!(
            "pending: {} (proposal {}, {}/{} approvals){}",
            p.change,
            p.proposal.short(),
            p.approvers.len(),
            cur.threshold,
            p.problem
                .as_deref()
                .map(|x| format!(" cannot apply: {x}"))
                .unwrap_or_default()
        ))?;
    }
    for e in &m.equivocations {
        out(format!(
            "EQUIVOCATION: member {} supported {} proposals for epoch {}; evidence records: {}",
            e.member,
            e.proposals.len(),
            &hex::encode(e.epoch)[..12],
            e.evidence
                .iter()
                .map(|r| r.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    for (id, why) in &m.ignored {
        out(format!("ignored {}: {why}", id.short()))?;
    }
    Ok(())
}
