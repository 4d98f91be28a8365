//! `coalition run`: the long-running node. It joins the coalition network and serves the
//! local HTTP API, and shuts down in order on SIGINT or SIGTERM: stop the network (running
//! syncs finish their transaction), stop the API, close the store. Nothing acknowledged is
//! lost: every record is committed before anything announces it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::api_server::{self, ApiServerError};
use crate::config::Home;
use crate::identity::Identity;
use crate::net::{self, NetConfig, Network};
use crate::node::{Node, NodeError};

/// Flags of `coalition run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Serve only the local HTTP API and dashboard (no network, no passphrase needed).
    #[arg(long)]
    pub api_only: bool,
    /// Address of the HTTP API and dashboard (default from `[api] listen`, else
    /// 127.0.0.1:7878; port 0 picks a free port). Keep it on 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Errors that stop the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The HTTP API could not be served.
    #[error(transparent)]
    Api(#[from] ApiServerError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Node failure.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Network failure.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another daemon runs on this home.
    #[error("a node already runs on this home (pid {0}); stop it first, or remove {1} if that process is gone")]
    AlreadyRunning(u32, String),
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a running daemon tells CLI commands about itself (`daemon.json` in the home).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Process id.
    pub pid: u32,
    /// HTTP API address, if served.
    pub api: Option<String>,
    /// libp2p peer id, if the network runs.
    pub peer_id: Option<String>,
}

impl DaemonInfo {
    fn path(home: &Home) -> std::path::PathBuf {
        home.dir().join("daemon.json")
    }

    /// The running daemon of `home`, if any.
    pub fn read(home: &Home) -> Option<Self> {
        let info: Self =
            serde_json::from_str(&std::fs::read_to_string(Self::path(home)).ok()?).ok()?;
        process_alive(info.pid).then_some(info)
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Resolves when the process receives SIGINT or SIGTERM.
async fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signals)?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutting down");
    })
}

/// Prints `reachable through relay ADDR` for each new relayed address, until shutdown.
async fn print_relayed_addrs(mut net: Network, mut stop: watch::Receiver<bool>) {
    let mut printed = std::collections::BTreeSet::new();
    loop {
        let now: std::collections::BTreeSet<String> =
            net.status().relayed_addrs.into_iter().collect();
        for addr in now.difference(&printed) {
            say(&format!("reachable through relay {addr}"));
        }
        printed = now;
        tokio::select! {
            _ = stop.changed() => return,
            alive = net.changed() => if !alive { return },
        }
    }
}

fn say(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").ok();
    stdout.flush().ok();
}

/// Runs the node until SIGINT or SIGTERM. Prints `peer PEERID`, one
/// `listening on ADDR/p2p/PEERID` line per network address, and `api listening on
/// http://ADDR` on stdout, so scripts and tests can find it; later, one `reachable
/// through relay ADDR` line each time a relay (`[network] relays`) accepts a reservation
/// (ADDR is the full address others can use as a bootstrap entry).
pub async fn run(
    home: &Home,
    node: Node,
    identity: Option<Identity>,
    args: RunArgs,
) -> Result<(), DaemonError> {
    if let Some(other) = DaemonInfo::read(home) {
        if other.pid != std::process::id() {
            return Err(DaemonError::AlreadyRunning(
                other.pid,
                DaemonInfo::path(home).display().to_string(),
            ));
        }
    }
    let shutdown_fut = shutdown_signal().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let node = Arc::new(node);
    let mut info = DaemonInfo {
        pid: std::process::id(),
        api: None,
        peer_id: None,
    };
    let mut network: Option<(Network, tokio::task::JoinHandle<()>)> = None;
    let mut checkpointer: Option<tokio::task::JoinHandle<()>> = None;
    if !args.api_only {
        let identity = identity
            .ok_or_else(|| NodeError::Refused("the network needs the organisation key".into()))?;
        if node.membership().await?.is_none() {
            return Err(NodeError::Refused(
                "this node belongs to no coalition yet: adopt a charter (`coalition charter adopt`) or import a bundle that carries one, then run again".into(),
            )
            .into());
        }
        // Members seal records for this organisation to the key it published last.
        if let Some(id) = node.publish_encryption_key(&identity).await? {
            tracing::info!(record = %id.short(), "published this organisation's encryption key");
        }
        // Sealed records for this organisation that arrived while no node held its key.
        let opened = node.open_pending(None).await?;
        if opened > 0 {
            tracing::info!(opened, "opened sealed records held unread");
        }
        // Records a sync took on a checkpoint before this node stopped: verified before
        // the network starts, so that none is served unverified.
        let settled = node.check_unchecked().await?;
        if settled.verified + settled.removed > 0 {
            tracing::info!(
                verified = settled.verified,
                removed = settled.removed,
                "signatures of records taken on checkpoints verified"
            );
        }
        let config = NetConfig::from_config(node.config())?;
        let identity = Arc::new(identity);
        let every = node
            .config()
            .network
            .as_ref()
            .and_then(|n| n.checkpoint_interval_secs)
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_SECS);
        let witness_every = node
            .config()
            .network
            .as_ref()
            .and_then(|n| n.witness_interval_secs)
            .unwrap_or(DEFAULT_WITNESS_INTERVAL_SECS);
        checkpointer = Some(tokio::spawn(checkpoints(
            node.clone(),
            identity.clone(),
            Duration::from_secs(every.max(1)),
            Duration::from_secs(witness_every.max(1)),
            stop_rx.clone(),
        )));
        let (net, handle) = net::start(node.clone(), identity, config, stop_rx.clone()).await?;
        say(&format!("peer {}", net.peer_id));
        let mut waiter = net.clone();
        waiter
            .wait_for(Duration::from_secs(5), |s| !s.listen_addrs.is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for addr in net.status().listen_addrs {
            say(&format!("listening on {addr}/p2p/{}", net.peer_id));
        }
        info.peer_id = Some(net.peer_id.to_string());
        tokio::spawn(print_relayed_addrs(net.clone(), stop_rx.clone()));
        network = Some((net, handle));
    }
    let listen = match args.listen {
        Some(a) => a,
        None => node
            .config()
            .api
            .as_ref()
            .and_then(|a| a.listen.as_deref())
            .unwrap_or("127.0.0.1:7878")
            .parse()
            .map_err(|e| NodeError::Refused(format!("[api] listen: {e}")))?,
    };
    let api = api_server::bind(
        listen,
        node.clone(),
        network.as_ref().map(|(n, _)| n.clone()),
    )
    .await?;
    say(&format!("api listening on http://{}", api.addr));
    info.api = Some(api.addr.to_string());
    std::fs::write(
        DaemonInfo::path(home),
        serde_json::to_string(&info).expect("serialises"),
    )?;

    shutdown_fut.await;
    let _ = stop_tx.send(true);
    // The checkpoint task holds the node until it sees the stop.
    if let Some(task) = checkpointer {
        let _ = task.await;
    }
    if let Some((_, handle)) = network {
        let _ = handle.await;
    }
    api.stop().await;
    std::fs::remove_file(DaemonInfo::path(home)).ok();
    if let Ok(node) = Arc::try_unwrap(node) {
        node.store().clone().close().await;
    }
    Ok(())
}

/// Default of `[network] checkpoint_interval_secs`: a day.
const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 86_400;

/// Default of `[network] witness_interval_secs`: ten minutes.
const DEFAULT_WITNESS_INTERVAL_SECS: u64 = 600;

/// Signs a checkpoint of this organisation's own log every `every`, when it wrote records
/// after its latest checkpoint, and witnesses other members' checkpoints every `witness`,
/// until `stop` turns true.
async fn checkpoints(
    node: Arc<Node>,
    identity: Arc<crate::identity::Identity>,
    every: Duration,
    witness: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(start + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut witness_tick = tokio::time::interval_at(start + witness, witness);
    witness_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = witness_tick.tick() => {
                witness_once(&node, &identity).await;
                continue;
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let due = match node.checkpoint_due(&identity.key()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this organisation's chain for a checkpoint");
                false
            }
        };
        if !due {
            continue;
        }
        match node.checkpoint(&identity).await {
            Ok((record, c)) => tracing::info!(
                record = %record.id.short(),
                size = c.size,
                "signed a checkpoint of this organisation's log"
            ),
            Err(e) => tracing::warn!(error = %e, "could not sign a checkpoint"),
        }
    }
}

/// One witness check (see [`Node::witness`]), logged.
async fn witness_once(node: &Node, identity: &crate::identity::Identity) {
    match node.witness(identity).await {
        Ok(done) => {
            for w in done {
                match (w.cosignature, w.refused) {
                    (Some(id), _) => tracing::info!(
                        author = %w.author,
                        checkpoint = %w.checkpoint.short(),
                        size = w.size,
                        cosignature = %id.short(),
                        "cosigned a member's checkpoint"
                    ),
                    (None, Some(why)) => tracing::warn!(
                        author = %w.author,
                        checkpoint = %w.checkpoint.short(),
                        size = w.size,
                        "not cosigning a member's checkpoint: {why}"
                    ),
                    (None, None) => {}
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not witness members' checkpoints"),
    }
}
