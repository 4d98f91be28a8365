//! The `coalition` command line: parses arguments, calls the library, prints results.
//!
//! Exit codes follow ripgrep: 0 success, 1 a check failed (a record does not verify, an
//! import refused records), 2 a usage or environment error. A closed stdout exits quietly.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::Home;
use crate::finding::FindingInput;
use crate::identity::{Identity, OrgKey};
use crate::node::{self, Node, VerifyReport};
use crate::record::Audience;

mod analysis;

/// Coalition: pool signed findings on security-sector conduct without a central authority.
#[derive(Debug, Parser)]
#[command(name = "coalition", version, about, propagate_version = true)]
pub struct Cli {
    /// Node home directory (config, encrypted key, store).
    #[arg(long, global = true, env = "COALITION_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new home: organisation key (encrypted with your passphrase), config, store.
    Init {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// ISO 3166-1 alpha-2 country code (Kosovo: XK).
        #[arg(long)]
        country: String,
    },
    /// This organisation's identity.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Record, list, show, correct and retract findings.
    #[command(subcommand)]
    Finding(FindingCmd),
    /// Widen who may receive one of your records (signs an audience grant).
    Share {
        /// Record id (or unique prefix).
        id: String,
        /// `coalition` or KEY[,KEY…] of member organisations.
        #[arg(long = "with", value_name = "AUDIENCE")]
        with: String,
    },
    /// Write records to a file: a signed bundle for auditors, JSON Lines or CSV.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Bundle)]
        format: Format,
        /// Output file.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
        /// Include private records and annexes (for your own backups only).
        #[arg(long)]
        include_private: bool,
        /// Also include records shared with this member organisation only.
        #[arg(long = "for", value_name = "KEY")]
        recipient: Option<OrgKey>,
        /// CSV: add the HXL hashtag row under the header.
        #[arg(long)]
        hxl: bool,
        /// Filters (JSON Lines, CSV and GeoJSON exports).
        #[command(flatten)]
        filters: crate::query::QueryArgs,
    },
    /// Import a bundle: verify every record, store the valid ones, report the rest.
    Import {
        /// Bundle file.
        path: PathBuf,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle offline, or (without PATH) every record in the local store.
    Verify {
        /// Bundle file; omit to verify the local store.
        path: Option<PathBuf>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Count and list findings: filters, grouping, table, JSON or CSV.
    Query(analysis::QueryCmd),
    /// Write a signed report: an aggregate with the ids of every record it counted.
    Report(analysis::ReportCmd),
    /// Check a report's signature and recompute it from a bundle's records.
    VerifyReport(analysis::VerifyReportCmd),
    /// Run the node: the local HTTP API and dashboard.
    Run(crate::daemon::RunArgs),
    /// Run a demonstration: two organisations record findings, exchange a bundle, and an
    /// auditor verifies it.
    Demo {
        /// Directory for the demo homes (default: a temporary directory, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `coalition identity …`
#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Print this organisation's member card (name, country, key) as JSON.
    Export,
}

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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COALITION_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn out(text: impl AsRef<str>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_ref().as_bytes())?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// The passphrase: `COALITION_PASSPHRASE`, else an interactive prompt.
fn passphrase(confirm: bool) -> Result<String> {
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

fn parse_input(file: &str) -> Result<FindingInput> {
    let (bytes, name) = read_input(file)?;
    Ok(FindingInput::parse(&bytes, &name)?)
}

async fn open(home: &Home) -> Result<Node> {
    Ok(Node::open(home.clone()).await?)
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<Outcome> {
    let home = Home::new(cli.home);
    match cli.command {
        Command::Init { org, country } => {
            let p = passphrase(true)?;
            let (node, identity) = Node::init(home.clone(), &org, &country, &p).await?;
            eprintln!(
                "Created Coalition home {} for {} ({}).\nKeep the passphrase safe: without it the key cannot be recovered.\nOrganisation key:",
                home.dir().display(),
                node.config().organisation.name,
                node.config().organisation.country
            );
            out(identity.key().to_hex())?;
            Ok(Outcome::Success)
        }
        Command::Identity(IdentityCmd::Export) => {
            let node = open(&home).await?;
            let o = &node.config().organisation;
            out(serde_json::to_string_pretty(&json!({
                "organisation": o.name, "country": o.country, "key": o.key,
            }))?)?;
            Ok(Outcome::Success)
        }
        Command::Finding(cmd) => finding(&home, cmd).await,
        Command::Share { id, with } => {
            let node = open(&home).await?;
            let audience = Audience::parse_cli(&with).map_err(anyhow::Error::msg)?;
            let identity = unlock(&node)?;
            let grant = node.share(&identity, &id, audience).await?;
            out(grant.to_hex())?;
            Ok(Outcome::Success)
        }
        Command::Export {
            format,
            output,
            include_private,
            recipient,
            hxl,
            filters,
        } => {
            let node = open(&home).await?;
            if format == Format::Bundle && !filters.to_query()?.is_empty() {
                bail!("filters apply to jsonl, csv and geojson exports; a bundle holds every shareable record");
            }
            let n = analysis::export(
                &node,
                format,
                &output,
                include_private,
                recipient,
                &filters,
                hxl,
            )
            .await?;
            eprintln!("wrote {n} records to {}", output.display());
            Ok(Outcome::Success)
        }
        Command::Import { path, json } => {
            let node = open(&home).await?;
            let report = node.import(&path).await?;
            if json {
                out(serde_json::to_string_pretty(&report)?)?;
            } else {
                out(format!(
                    "read {} records from {}: {} stored, {} already held, {} refused",
                    report.read,
                    path.display(),
                    report.stored,
                    report.duplicates,
                    report.failures.len()
                ))?;
                for f in &report.failures {
                    out(format!(
                        "  record #{}{}: {}",
                        f.index,
                        f.id.as_deref()
                            .map(|i| format!(" ({i})"))
                            .unwrap_or_default(),
                        f.reason
                    ))?;
                }
            }
            Ok(if report.failures.is_empty() {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            })
        }
        Command::Verify { path, json } => {
            let (report, what) = match &path {
                Some(p) => (node::verify_bundle(p)?, p.display().to_string()),
                None => {
                    let node = open(&home).await?;
                    (
                        node.verify_store().await?,
                        format!("store {}", home.db_path().display()),
                    )
                }
            };
            print_verify(&report, &what, json)?;
            Ok(if report.ok() {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            })
        }
        Command::Query(cmd) => analysis::query(&home, cmd).await,
        Command::Report(cmd) => analysis::report(&home, cmd).await,
        Command::VerifyReport(cmd) => analysis::verify_report(cmd).await,
        Command::Run(args) => {
            crate::daemon::run(open(&home).await?, args).await?;
            Ok(Outcome::Success)
        }
        Command::Demo { dir } => {
            crate::demo::run(dir.as_deref()).await?;
            Ok(Outcome::Success)
        }
    }
}

fn unlock(node: &Node) -> Result<Identity> {
    let p = passphrase(false)?;
    Ok(node.unlock(&p)?)
}

fn print_verify(report: &VerifyReport, what: &str, json: bool) -> Result<()> {
    if json {
        return out(serde_json::to_string_pretty(report)?);
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
        for f in &report.failures {
            out(format!(
                "  record #{}{}: {}",
                f.index,
                f.id.as_deref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default(),
                f.reason
            ))?;
        }
    }
    for fork in &report.forks {
        out(format!("WARNING equivocation: {fork}"))?;
    }
    Ok(())
}

async fn finding(home: &Home, cmd: FindingCmd) -> Result<Outcome> {
    match cmd {
        FindingCmd::Add { file, share } => {
            let audience = Audience::parse_cli(&share).map_err(anyhow::Error::msg)?;
            let input = parse_input(&file)?;
            let node = open(home).await?;
            let identity = unlock(&node)?;
            let added = node.add_finding(&identity, &input, audience).await?;
            out(added.finding.to_hex())?;
            if let Some(a) = added.annex {
                eprintln!("sensitive details stored as private annex {a} (never shared unless you run `coalition share {a} --with …`)");
            }
        }
        FindingCmd::List { all, json } => {
            let node = open(home).await?;
            let rows = node.store().findings(all).await?;
            if json {
                out(serde_json::to_string_pretty(&rows)?)?;
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
                out(serde_json::to_string_pretty(&v)?)?;
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
                out(serde_json::to_string_pretty(&v.payload)?)?;
            }
        }
        FindingCmd::Correct { id, file } => {
            let input = parse_input(&file)?;
            let node = open(home).await?;
            let identity = unlock(&node)?;
            let added = node.correct(&identity, &id, &input).await?;
            out(added.finding.to_hex())?;
        }
        FindingCmd::Retract { id, reason } => {
            let node = open(home).await?;
            let identity = unlock(&node)?;
            out(node.retract(&identity, &id, &reason).await?.to_hex())?;
        }
    }
    Ok(Outcome::Success)
}

/// Reads every `*.json` file in `dir`, sorted by name.
pub fn example_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read examples directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}
