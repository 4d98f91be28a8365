//! The daemon's HTTP server on 127.0.0.1: the node routes (`/api/v1/status`,
//! `/api/v1/peers`) that the CLI's `status` and `peers` use while the daemon runs, merged
//! with the analysis API and dashboard. The daemon starts it; it knows nothing of the
//! daemon.
//!
//! On loopback the `Host` guard is the access control (only this machine connects). An
//! address other machines can reach is refused unless the home holds a token
//! (`api.token`, made by `init` or `coalition node api-token`); then every request must
//! carry `Authorization: Bearer <token>`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::RngCore;
use serde_json::json;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

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
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve the API on {addr}: other machines can reach that address and no API token is configured; create one with `coalition node api-token` (written to {token}, mode 0600) and send it as `Authorization: Bearer <token>`, or listen on 127.0.0.1"
    )]
    NoToken {
        /// The address.
        addr: SocketAddr,
        /// Where the token is looked for.
        token: String,
    },
    /// The token file cannot be read or written.
    #[error("API token file {path}: {source}")]
    Token {
        /// The file.
        path: String,
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
    let counted = async {
        let records = s.node.store().count().await?;
        let chains = s.node.chains().await?;
        Ok::<_, crate::node::NodeError>((records, chains))
    };
    match counted.await {
        Ok((n, chains)) => {
            body["records"] = n.into();
            // Forks and broken links: signed evidence that a member showed two histories.
            // Each with a sentence saying what it shows, for `coalition status`.
            body["chain_evidence"] = chains
                .evidence
                .iter()
                .map(|e| {
                    let mut v = json!(e);
                    v["description"] = e.to_string().into();
                    v
                })
                .collect();
            // Checkpoints that commit to records every member receives which this node
            // was never given: withheld from it, or not synced yet. Its witness check
            // refuses to cosign them.
            body["chain_incomplete"] = chains
                .authors
                .iter()
                .filter_map(|c| {
                    let cp = c.checkpoint.as_ref().filter(|cp| !cp.missing.is_empty())?;
                    Some(json!({
                        "author": c.author,
                        "checkpoint": cp.record,
                        "size": cp.size,
                        "missing": cp.missing,
                        "description": format!(
                            "author {}'s checkpoint {} commits to seq {}, which every member receives, and this node was never given them (withheld, or not synced yet); it does not cosign it",
                            c.author,
                            cp.record,
                            crate::chain::seqs(&cp.missing)
                        ),
                    }))
                })
                .collect();
        }
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

/// Prometheus metrics (`crate::metrics`): behind the same guard and token as every route.
async fn metrics(State(s): State<AppState>) -> Response {
    let status = s.network.as_ref().map(Network::status);
    let records = s.node.store().count().await.ok();
    let text = crate::metrics::render(status.as_ref(), records);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The node router.
pub fn node_router(node: Arc<Node>, network: Option<Network>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/metrics", get(metrics))
        .with_state(AppState { node, network })
}

/// Characters of a token: 32 random bytes, hex.
const TOKEN_BYTES: usize = 32;

fn token_err(path: &Path) -> impl FnOnce(std::io::Error) -> ApiServerError + '_ {
    move |source| ApiServerError::Token {
        path: path.display().to_string(),
        source,
    }
}

/// Creates a new random API token at `path` (mode 0600, refusing to overwrite one).
pub fn create_token(path: &Path) -> Result<(), ApiServerError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let text = Zeroizing::new(hex::encode(bytes.as_ref()));
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut f = open.open(path).map_err(token_err(path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(token_err(path))
}

/// The token at `path`, if the file exists and is not empty.
pub fn read_token(path: &Path) -> Result<Option<Zeroizing<String>>, ApiServerError> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = Zeroizing::new(t);
            let trimmed = t.trim();
            Ok((!trimmed.is_empty()).then(|| Zeroizing::new(trimmed.to_string())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(token_err(path)(e)),
    }
}

/// Binds `addr` and serves until stopped.
pub async fn bind(
    addr: SocketAddr,
    node: Arc<Node>,
    network: Option<Network>,
) -> Result<ApiServer, ApiServerError> {
    let token = if addr.ip().is_loopback() {
        None
    } else {
        let path = node.home().api_token_path();
        match read_token(&path)? {
            Some(t) => Some(t),
            None => {
                return Err(ApiServerError::NoToken {
                    addr,
                    token: path.display().to_string(),
                })
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiServerError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    let app = crate::api::guarded(
        crate::api::router(node.clone(), bound.ip())
            .merge(node_router(node, network))
            .layer(axum::middleware::from_fn(crate::metrics::track)),
        bound.ip(),
    );
    let app = match token {
        Some(t) => crate::api::bearer_required(app, t),
        None => app,
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Home;

    /// GETs `/api/v1/status` on `addr` (by its loopback address) with `auth`; the status.
    async fn get_status(addr: SocketAddr, auth: Option<String>) -> u16 {
        let url = format!("http://127.0.0.1:{}/api/v1/status", addr.port());
        tokio::task::spawn_blocking(move || {
            let mut req = ureq::get(&url).config().http_status_as_error(false).build();
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call().expect("request").status().as_u16()
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_loopback_the_api_needs_a_token_and_the_right_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(Some(dir.path().join("h")));
        let (node, _) = Node::init(home.clone(), "Org A", "RS", "passphrase-1")
            .await
            .unwrap();
        let node = Arc::new(node);
        let anywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let refused = bind(anywhere, node.clone(), None).await.unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("no API token is configured") && text.contains("api-token"),
            "{text}"
        );

        // Loopback without a token: the dashboard's case, no bearer needed.
        let lo = bind("127.0.0.1:0".parse().unwrap(), node.clone(), None)
            .await
            .unwrap();
        assert_eq!(get_status(lo.addr, None).await, 200);
        lo.stop().await;

        let path = home.api_token_path();
        create_token(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(create_token(&path).is_err(), "an existing token is kept");
        let token = read_token(&path).unwrap().unwrap();
        let server = bind(anywhere, node, None).await.unwrap();
        assert_eq!(get_status(server.addr, None).await, 401);
        assert_eq!(
            get_status(server.addr, Some("Bearer wrong".into())).await,
            401
        );
        let mut almost = token.as_str().to_string();
        almost.pop();
        assert_eq!(
            get_status(server.addr, Some(format!("Bearer {almost}"))).await,
            401
        );
        assert_eq!(
            get_status(server.addr, Some(format!("Bearer {}", token.as_str()))).await,
            200
        );
        server.stop().await;
    }
}
