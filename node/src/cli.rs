//! The `coalition` command line: parses arguments, calls the library, prints results.
//!
//! Exit codes follow ripgrep: 0 success, 1 a check failed (a record does not verify, an
//! import refused records), 2 a usage or environment error. A closed stdout exits quietly.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::charter::{self, Change, Member, Membership, SignedCharter};
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
        filters: analysis::QueryArgs,
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
        /// Judge membership by this charter id (from `coalition charter show`) instead of
        /// trusting the charter the bundle carries.
        #[arg(long, value_name = "CHARTER_ID")]
        charter: Option<String>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Found a coalition: draft, sign and adopt its charter; show the membership.
    #[command(subcommand)]
    Charter(CharterCmd),
    /// Propose and approve membership changes (take effect at the threshold).
    #[command(subcommand)]
    Member(MemberCmd),
    /// Node certificates binding a libp2p peer id to this organisation.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Run the node: join the coalition network and serve the local HTTP API.
    Run(crate::daemon::RunArgs),
    /// Peers of the running node and the organisations they speak for.
    Peers {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Status of the running node: peers, records per author, last sync, membership epoch.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Count and list findings: filters, grouping, table, JSON or CSV.
    Query(analysis::QueryCmd),
    /// Write a signed report: an aggregate with the ids of every record it counted.
    Report(analysis::ReportCmd),
    /// Check a report's signature and recompute it from a bundle's records.
    VerifyReport(analysis::VerifyReportCmd),
    /// Run a demonstration: two organisations record findings, exchange a bundle, and an
    /// auditor verifies it.
    Demo {
        /// Directory for the demo homes (default: a temporary directory, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

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

/// `coalition node …`
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Issue a certificate binding a libp2p peer id to this organisation.
    Cert {
        /// The node's libp2p peer id.
        #[arg(long)]
        peer_id: String,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
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
            out(serde_json::to_string_pretty(&node.member_card())?)?;
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
        Command::Verify {
            path,
            json,
            charter,
        } => {
            let expected = charter
                .map(|c| {
                    hex::decode(c.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| anyhow::anyhow!("--charter takes the 64-hex-character charter id that `coalition charter show` prints"))
                })
                .transpose()?;
            let (report, what) = match &path {
                Some(p) => (
                    node::verify_bundle_for(p, expected)?,
                    p.display().to_string(),
                ),
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
        Command::Charter(cmd) => charter(&home, cmd).await,
        Command::Member(cmd) => member(&home, cmd).await,
        Command::Node(NodeCmd::Cert { peer_id, days }) => {
            let node = open(&home).await?;
            let identity = unlock(&node)?;
            let expires = node::now_ms() + i64::from(days) * 86_400_000;
            let cert = node.issue_node_cert(&identity, &peer_id, expires).await?;
            out(cert.id.to_hex())?;
            eprintln!("certificate for peer {peer_id} valid for {days} days; it is shared with the coalition like any record");
            Ok(Outcome::Success)
        }
        Command::Run(args) => {
            let node = open(&home).await?;
            let identity = if args.api_only {
                None
            } else {
                Some(unlock(&node)?)
            };
            crate::daemon::run(&home, node, identity, args).await?;
            Ok(Outcome::Success)
        }
        Command::Peers { json } => {
            let peers = daemon_get(&home, "/api/v1/peers")?;
            if json {
                out(serde_json::to_string_pretty(&peers)?)?;
            } else {
                let list = peers.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    out("no peers connected")?;
                }
                for p in list {
                    out(format!(
                        "{}  {}  {}{}  last sync {}",
                        p["peer_id"].as_str().unwrap_or("?"),
                        p["organisation"].as_str().unwrap_or("(not verified)"),
                        p["address"].as_str().unwrap_or(""),
                        if p["relayed"].as_bool() == Some(true) {
                            " (relayed)"
                        } else {
                            ""
                        },
                        p["last_sync_ms"]
                            .as_i64()
                            .map(|t| format!("{} s ago", (node::now_ms() - t) / 1000))
                            .unwrap_or_else(|| "never".into())
                    ))?;
                }
            }
            Ok(Outcome::Success)
        }
        Command::Status { json } => {
            let s = daemon_get(&home, "/api/v1/status")?;
            if json {
                out(serde_json::to_string_pretty(&s)?)?;
            } else {
                out(format!(
                    "organisation {} ({})",
                    s["organisation"]["name"].as_str().unwrap_or("?"),
                    s["organisation"]["key"].as_str().unwrap_or("?")
                ))?;
                out(format!(
                    "coalition    {}",
                    s["coalition"].as_str().unwrap_or("-")
                ))?;
                out(format!(
                    "epoch        {}",
                    s["epoch"].as_str().unwrap_or("-")
                ))?;
                out(format!(
                    "peer id      {}",
                    s["peer_id"].as_str().unwrap_or("-")
                ))?;
                out(format!(
                    "records      {} (received from peers since start: {}, refused: {})",
                    s["records"], s["received"], s["refused"]
                ))?;
                out(format!(
                    "peers        {}",
                    s["peers"].as_array().map(Vec::len).unwrap_or(0)
                ))?;
                for a in s["relayed_addrs"].as_array().into_iter().flatten() {
                    out(format!("relayed at   {}", a.as_str().unwrap_or("?")))?;
                }
                if let Some(m) = s["records_per_author"].as_object() {
                    for (k, n) in m {
                        out(format!("  author {}  {n} records", &k[..12.min(k.len())]))?;
                    }
                }
            }
            Ok(Outcome::Success)
        }
        Command::Query(cmd) => analysis::query(&home, cmd).await,
        Command::Report(cmd) => analysis::report(&home, cmd).await,
        Command::VerifyReport(cmd) => analysis::verify_report(cmd).await,
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

fn read_card(path: &Path) -> Result<Member> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read member card {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{} is not a member card (expected what `coalition identity export` prints: organisation, country, key)", path.display())
    })
}

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

fn write_draft(path: &Path, draft: &SignedCharter) -> Result<()> {
    let text = serde_json::to_string_pretty(draft)? + "\n";
    node::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

async fn charter(home: &Home, cmd: CharterCmd) -> Result<Outcome> {
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
            let draft = SignedCharter::draft(&name, t, cards, allow_low_threshold, node::now_ms())?;
            match output {
                Some(p) => {
                    write_draft(&p, &draft)?;
                    eprintln!(
                        "draft written to {}; each founder runs `coalition charter sign {}`",
                        p.display(),
                        p.display()
                    );
                }
                None => out(serde_json::to_string_pretty(&draft)?)?,
            }
        }
        CharterCmd::Sign { draft } => {
            let mut d = read_draft(&draft)?;
            let node = open(home).await?;
            let identity = unlock(&node)?;
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
            let node = open(home).await?;
            let identity = unlock(&node)?;
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
            if json {
                out(serde_json::to_string_pretty(&m)?)?;
            } else {
                print_membership(&m)?;
            }
        }
    }
    Ok(Outcome::Success)
}

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

async fn member(home: &Home, cmd: MemberCmd) -> Result<Outcome> {
    let node = open(home).await?;
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
            let identity = unlock(&node)?;
            let id = node.propose(&identity, change, None).await?;
            out(id.to_hex())?;
            eprintln!("proposal recorded; it takes effect once enough members run `coalition member approve {}`", id.short());
        }
        MemberCmd::Approve { proposal } => {
            let identity = unlock(&node)?;
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

/// GETs `path` from the daemon running on `home`.
fn daemon_get(home: &Home, path: &str) -> Result<serde_json::Value> {
    let info = crate::daemon::DaemonInfo::read(home).ok_or_else(|| {
        anyhow::anyhow!(
            "no node is running on {} (start it with `coalition run`)",
            home.dir().display()
        )
    })?;
    let api = info.api.context("the running node serves no HTTP API")?;
    let url = format!("http://{api}{path}");
    let mut resp = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot reach the running node at {url}"))?;
    let text = resp
        .body_mut()
        .read_to_string()
        .context("while reading the node's answer")?;
    Ok(serde_json::from_str(&text)?)
}
