//! The `coalition` command line: parses arguments, calls the library, prints results.
//!
//! Exit codes follow ripgrep: 0 success, 1 a check failed (a record does not verify, an
//! import refused records), 2 a usage or environment error. A closed stdout exits quietly.
//!
//! This file holds the top-level [`Cli`], the dispatch and the exit codes; what every
//! command shares (printing, the passphrase, opening a home) is in `shared`, and each
//! command group has its own submodule: [`init`] (home, identity, node certificates),
//! [`finding`], [`charter`] (charter and membership), [`store`] (export, import,
//! verify), [`backup`] (backup, restore), [`net`] (run, peers, status) and `analysis`
//! (query, report, verify-report).
//! clap and anyhow stay in this layer; the library below it returns typed errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Home;

mod analysis;
pub mod backup;
pub mod charter;
pub mod doctor;
pub mod finding;
pub mod init;
pub mod net;
mod progress;
mod shared;
pub mod store;

// `analysis` reaches these through `super::`.
use shared::{open, out};
pub use shared::{Format, Outcome};

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
    Init(init::InitCmd),
    /// This organisation's identity.
    #[command(subcommand)]
    Identity(init::IdentityCmd),
    /// Record, list, show, correct and retract findings.
    #[command(subcommand)]
    Finding(finding::FindingCmd),
    /// Widen who may receive one of your records (signs an audience grant).
    Share(finding::ShareCmd),
    /// Write records to a file: a signed bundle for auditors, JSON Lines or CSV.
    Export(store::ExportCmd),
    /// Import a bundle: verify every record, store the valid ones, report the rest.
    Import(store::ImportCmd),
    /// Verify a bundle offline, or (without PATH) every record in the local store.
    Verify(store::VerifyCmd),
    /// Write the whole home (config, encrypted key, store snapshot) to one backup file.
    Backup(backup::BackupCmd),
    /// Restore a backup file into a new or empty home (--home DIR).
    Restore(backup::RestoreCmd),
    /// The store file itself: encrypt one written before stores were encrypted.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Found a coalition: draft, sign and adopt its charter; show the membership.
    #[command(subcommand)]
    Charter(charter::CharterCmd),
    /// Propose and approve membership changes (take effect at the threshold).
    #[command(subcommand)]
    Member(charter::MemberCmd),
    /// Sign a checkpoint of this organisation's own log: the Merkle tree head over every
    /// record so far (private and sealed ones too), which members hold it to.
    Checkpoint(charter::CheckpointCmd),
    /// Witness other members' checkpoints: cosign each author's latest checkpoint that the
    /// records held verify, and say why any is not cosigned (`coalition run` does this
    /// every `witness_interval_secs`).
    Witness(charter::CheckpointCmd),
    /// Node certificates binding a libp2p peer id to this organisation.
    #[command(subcommand)]
    Node(init::NodeCmd),
    /// Check a home (config, key, store, certificates, bootstrap peers, clock) and say
    /// what to fix.
    Doctor(doctor::DoctorCmd),
    /// Run the node: join the coalition network and serve the local HTTP API.
    Run(crate::daemon::RunArgs),
    /// Peers of the running node and the organisations they speak for.
    Peers(net::PeersCmd),
    /// This organisation's other nodes that receive its PRIVATE records (replicas).
    #[command(subcommand)]
    Replica(net::ReplicaCmd),
    /// Status of the running node: peers, records per author, last sync, membership epoch.
    Status(net::StatusCmd),
    /// Count and list findings: filters, grouping, table, JSON or CSV.
    Query(analysis::QueryCmd),
    /// Write a signed report: an aggregate with the ids of every record it counted.
    Report(analysis::ReportCmd),
    /// Check a report's signature and recompute it from a bundle's records.
    VerifyReport(analysis::VerifyReportCmd),
    /// Run a demonstration: four organisations found a coalition and run their nodes on
    /// loopback.
    ///
    /// Four fictional organisations (RS, XK, MK, GE) create identities and sign a charter
    /// (threshold 3 of 4); each records some of the shipped example findings
    /// (`schemas/examples/`) for the whole coalition, for one chosen member or privately,
    /// and starts its node as a separate `coalition run` process (one node reaches the
    /// first only through another). The demo waits until every node holds exactly what it
    /// is entitled to, prints what an analyst sees, and verifies a bundle offline as an
    /// auditor would (and a copy with one flipped bit, which fails). It then stops the
    /// nodes; the homes are removed unless --dir was given.
    Demo {
        /// Directory for the demo homes (default: a temporary directory, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Everything this process creates (store, WAL, temporary files, exports, logs) is
    // its owner's only, whatever the shell's umask.
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    // Before any thread starts: the passphrase leaves the environment (and `run`, which
    // lives long, restarts itself so its initial environment no longer holds it).
    shared::take_env_passphrase(matches!(cli.command, Command::Run(_)));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COALITION_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // The store's writer is preferred over every other thread (`priority`): the thread
    // it is started from is started first, from this main thread before it is lowered;
    // every thread started afterwards (the runtime's, sqlx's readers, the verification
    // pool) inherits the lowered priority.
    crate::priority::keep_spawner();
    crate::priority::lower_this_thread();
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

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<Outcome> {
    let home = Home::new(cli.home);
    match cli.command {
        Command::Init(cmd) => init::init(&home, cmd).await,
        Command::Identity(cmd) => init::identity(&home, cmd).await,
        Command::Node(cmd) => init::node(&home, cmd).await,
        Command::Finding(cmd) => finding::finding(&home, cmd).await,
        Command::Share(cmd) => finding::share(&home, cmd).await,
        Command::Export(cmd) => store::export(&home, cmd).await,
        Command::Import(cmd) => store::import(&home, cmd).await,
        Command::Verify(cmd) => store::verify(&home, cmd).await,
        Command::Backup(cmd) => backup::backup(&home, cmd).await,
        Command::Restore(cmd) => backup::restore(&home, cmd).await,
        Command::Store(cmd) => store::store(&home, cmd).await,
        Command::Charter(cmd) => charter::charter(&home, cmd).await,
        Command::Member(cmd) => charter::member(&home, cmd).await,
        Command::Checkpoint(cmd) => charter::checkpoint(&home, cmd).await,
        Command::Witness(cmd) => charter::witness(&home, cmd).await,
        Command::Doctor(cmd) => doctor::doctor(&home, cmd).await,
        Command::Run(args) => net::run(&home, args).await,
        Command::Peers(cmd) => net::peers(&home, cmd).await,
        Command::Replica(cmd) => net::replica(&home, cmd).await,
        Command::Status(cmd) => net::status(&home, cmd),
        Command::Query(cmd) => analysis::query(&home, cmd).await,
        Command::Report(cmd) => analysis::report(&home, cmd).await,
        Command::VerifyReport(cmd) => analysis::verify_report(cmd).await,
        Command::Demo { dir } => {
            crate::demo::run(dir.as_deref()).await?;
            Ok(Outcome::Success)
        }
    }
}
