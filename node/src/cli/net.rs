//! `coalition run` (the node daemon) and `coalition peers` / `status`, which ask the
//! running node over its local HTTP API.

use anyhow::{Context, Result};
use clap::Args;

use super::shared::{open, out, out_json, unlock, Outcome};
use crate::config::Home;
use crate::daemon::{DaemonInfo, RunArgs};

/// `coalition peers`
#[derive(Debug, Args)]
pub struct PeersCmd {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
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
    let node = open(home).await?;
    let identity = if args.api_only {
        None
    } else {
        Some(unlock(&node)?)
    };
    crate::daemon::run(home, node, identity, args).await?;
    Ok(Outcome::Success)
}

/// Runs `coalition peers`.
pub(super) fn peers(home: &Home, cmd: PeersCmd) -> Result<Outcome> {
    let peers = daemon_get(home, "/api/v1/peers")?;
    if cmd.json {
        out_json(&peers)?;
        return Ok(Outcome::Success);
    }
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
                .map(|t| format!("{} s ago", (crate::now_ms() - t) / 1000))
                .unwrap_or_else(|| "never".into())
        ))?;
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
