//! `coalition run`: the long-running node process. Today it serves the local HTTP API
//! and dashboard ([`crate::api`]); the network layer joins it here. It shuts down in
//! order on SIGINT or SIGTERM: stop accepting, finish requests in flight, close the store.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::node::Node;

/// Flags of `coalition run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Serve only the local HTTP API and dashboard.
    #[arg(long)]
    pub api_only: bool,
    /// Address of the HTTP API and dashboard (port 0 picks a free port). Keep it on
    /// 127.0.0.1: the API has no authentication of its own.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
}

/// Errors that stop the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source} (choose another address with --listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the HTTP server stopped: {0}")]
    Serve(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
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

/// Runs the node until SIGINT or SIGTERM. Prints `api listening on http://ADDR` on
/// stdout once the API accepts connections.
pub async fn run(node: Node, args: RunArgs) -> Result<(), DaemonError> {
    if !args.api_only {
        eprintln!("note: this build has no network layer yet; serving the API and dashboard only");
    }
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: the API on {} is reachable from other machines and has no authentication",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: args.listen,
        source,
    })?;
    let shutdown = shutdown_signal().await?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "api listening on http://{addr}").ok();
        stdout.flush().ok();
    }
    let node = Arc::new(node);
    crate::api::serve(listener, node.clone(), shutdown)
        .await
        .map_err(DaemonError::Serve)?;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.store().clone().close().await;
    }
    Ok(())
}
