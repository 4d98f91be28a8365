//! `coalition run` (the node daemon) and `coalition peers` / `status`, which ask the
//! running node over its local HTTP API.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::shared::{open, open_unlocked, out, out_json, Outcome};
use crate::config::Home;
use crate::daemon::{DaemonInfo, RunArgs};

/// `coalition peers`
#[derive(Debug, Args)]
pub struct PeersCmd {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `coalition replica …`: this organisation's other nodes that receive its PRIVATE
/// records. A PRIVATE record stays on this node unless the operator enrols another node
/// of the same organisation here (by its peer id, which `coalition status` prints on that
/// node). Enrolments live in this node's store and take effect at the next sync.
#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Enrol a node of this organisation (by libp2p peer id) as a replica.
    Add {
        /// The other node's peer id.
        peer_id: String,
    },
    /// Withdraw an enrolment (records already copied stay on that node).
    Remove {
        /// The peer id.
        peer_id: String,
    },
    /// List the enrolled replicas.
    List,
}

/// `coalition status`
#[derive(Debug, Args)]
pub struct StatusCmd {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Runs `coalition run` until SIGINT or SIGTERM.
pub(super) async fn run(home: &Home, args: RunArgs) -> Result<Outcome> {
    // The store is encrypted, so even `--api-only` needs the passphrase; only the
    // network keeps the organisation key after start-up.
    let (node, identity) = if args.api_only {
        (open(home).await?, None)
    } else {
        let (node, identity) = open_unlocked(home).await?;
        (node, Some(identity))
    };
    crate::daemon::run(home, node, identity, args).await?;
    Ok(Outcome::Success)
}

/// Runs `coalition replica …`.
pub(super) async fn replica(home: &Home, cmd: ReplicaCmd) -> Result<Outcome> {
    let node = open(home).await?;
    match cmd {
        ReplicaCmd::Add { peer_id } => {
            if node.add_replica(&peer_id).await? {
                eprintln!("enrolled {peer_id} as a replica: once it proves it belongs to this organisation, this node's PRIVATE records sync to it");
            } else {
                eprintln!("{peer_id} is already enrolled");
            }
        }
        ReplicaCmd::Remove { peer_id } => {
            if !node.remove_replica(&peer_id).await? {
                anyhow::bail!(
                    "{peer_id} is not an enrolled replica (see `coalition replica list`)"
                );
            }
            eprintln!("{peer_id} is no longer a replica; records it already received stay on it");
        }
        ReplicaCmd::List => {
            for p in node.replicas().await? {
                out(p)?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// Runs `coalition peers`.
pub(super) async fn peers(home: &Home, cmd: PeersCmd) -> Result<Outcome> {
    let mut peers = daemon_get(home, "/api/v1/peers")?;
    let replicas = open(home).await?.replicas().await?;
    for p in peers.as_array_mut().into_iter().flatten() {
        let enrolled = p["peer_id"]
            .as_str()
            .is_some_and(|id| replicas.iter().any(|r| r == id));
        p["replica"] = enrolled.into();
    }
    if cmd.json {
        out_json(&peers)?;
        return Ok(Outcome::Success);
    }
    let list = peers.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out("no peers connected")?;
    }
    for p in &list {
        out(format!(
            "{}{}  {}  {}{}  last sync {}",
            p["peer_id"].as_str().unwrap_or("?"),
            if p["replica"].as_bool() == Some(true) {
                " (replica)"
            } else {
                ""
            },
            p["organisation"].as_str().unwrap_or("(not verified)"),
            p["address"].as_str().unwrap_or(""),
            if p["relayed"].as_bool() == Some(true) {
                " (relayed)"
            } else {
                ""
            },
            p["last_sync_ms"]
                .as_i64()
                .map(|t| format!("{} s ago", (crate::now_ms() - t) / 1000))
                .unwrap_or_else(|| "never".into())
        ))?;
    }
    for r in &replicas {
        if !list
            .iter()
            .any(|p| p["peer_id"].as_str() == Some(r.as_str()))
        {
            out(format!("{r} (replica)  not connected"))?;
        }
    }
    Ok(Outcome::Success)
}

/// Runs `coalition status`.
pub(super) fn status(home: &Home, cmd: StatusCmd) -> Result<Outcome> {
    let s = daemon_get(home, "/api/v1/status")?;
    if cmd.json {
        out_json(&s)?;
        return Ok(Outcome::Success);
    }
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
    for e in s["chain_evidence"].as_array().into_iter().flatten() {
        out(format!(
            "WARNING equivocation: {}",
            e["description"].as_str().unwrap_or("?")
        ))?;
    }
    for e in s["chain_incomplete"].as_array().into_iter().flatten() {
        out(format!(
            "WARNING incomplete: {}",
            e["description"].as_str().unwrap_or("?")
        ))?;
    }
    for a in s["relayed_addrs"].as_array().into_iter().flatten() {
        out(format!("relayed at   {}", a.as_str().unwrap_or("?")))?;
    }
    if let Some(m) = s["records_per_author"].as_object() {
        for (k, n) in m {
            out(format!("  author {}  {n} records", &k[..12.min(k.len())]))?;
        }
    }
    Ok(Outcome::Success)
}

/// GETs `path` from the daemon running on `home`.
fn daemon_get(home: &Home, path: &str) -> Result<serde_json::Value> {
    let info = DaemonInfo::read(home).ok_or_else(|| {
        anyhow::anyhow!(
            "no node is running on {} (start it with `coalition run`)",
            home.dir().display()
        )
    })?;
    let api = info.api.context("the running node serves no HTTP API")?;
    let url = format!("http://{api}{path}");
    let mut req = ureq::get(&url);
    // Needed when the node listens off loopback; harmless otherwise.
    if let Some(token) = crate::api_server::read_token(&home.api_token_path())? {
        req = req.header("Authorization", format!("Bearer {}", token.as_str()));
    }
    let mut resp = req
        .call()
        .with_context(|| format!("cannot reach the running node at {url}"))?;
    let text = resp
        .body_mut()
        .read_to_string()
        .context("while reading the node's answer")?;
    Ok(serde_json::from_str(&text)?)
}
