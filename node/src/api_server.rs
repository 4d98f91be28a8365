//! The daemon's HTTP server on 127.0.0.1: the node routes (`/api/v1/status`,
//! `/api/v1/peers`) that the CLI's `status` and `peers` use while the daemon runs, merged
//! with the analysis API and dashboard. The daemon starts it; it knows nothing of the
//! daemon.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;

use crate::net::Network;
use crate::node::Node;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiServerError {
    /// The listen address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source} (choose another address with --listen or [api] listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The bound socket cannot be inspected.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    network: Option<Network>,
}

/// A running server.
#[derive(Debug)]
pub struct ApiServer {
    /// Bound address.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Stops accepting, finishes requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Status of the node: network, membership, records per author.
async fn status(State(s): State<AppState>) -> Response {
    let mut body = match &s.network {
        Some(n) => serde_json::to_value(n.status()).unwrap_or_default(),
        None => json!({ "network": "not running (--api-only)" }),
    };
    let o = &s.node.config().organisation;
    body["organisation"] = json!({ "name": o.name, "country": o.country, "key": o.key });
    match s.node.store().count().await {
        Ok(n) => body["records"] = n.into(),
        Err(e) => {
            tracing::error!(error = %e, "status: store error");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"title": "internal error"})),
            )
                .into_response();
        }
    }
    Json(body).into_response()
}

async fn peers(State(s): State<AppState>) -> Response {
    let peers = s
        .network
        .as_ref()
        .map(|n| n.status().peers)
        .unwrap_or_default();
    Json(peers).into_response()
}

/// The node router.
pub fn node_router(node: Arc<Node>, network: Option<Network>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .with_state(AppState { node, network })
}

/// Binds `addr` and serves until stopped.
pub async fn bind(
    addr: SocketAddr,
    node: Arc<Node>,
    network: Option<Network>,
) -> Result<ApiServer, ApiServerError> {
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: the API on {addr} is reachable from other machines and has no authentication"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiServerError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    let app = crate::api::guarded(
        crate::api::router(node.clone(), bound.ip()).merge(node_router(node, network)),
        bound.ip(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(ApiServer {
        addr: bound,
        stop,
        task,
    })
}
