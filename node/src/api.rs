//! The node's local HTTP API and the analysts' dashboard.
//!
//! `GET /api/v1/findings`, `/api/v1/findings/{id}`, `/api/v1/aggregate` and
//! `/api/v1/vocabularies` answer with JSON computed by [`crate::query`], the same code the
//! CLI uses; `docs/openapi.yaml` (served at `/api/v1/openapi.yaml`) describes them.
//! Errors are RFC 9457 problem details; database errors are logged and answered with an
//! opaque 500. The dashboard (`/` and `/static/…`) is plain HTML, CSS and JavaScript
//! embedded in the binary, with the map outlines it draws, so it works offline.
//!
//! The API has no authentication: it listens on 127.0.0.1 by default, and refuses
//! requests whose `Host` is not this machine, so a web page elsewhere cannot reach it
//! through DNS rebinding.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::node::{Node, NodeError};
use crate::query::{self, QueryError, Request as QueryRequest};
use crate::store::{Reader, StoreError};

/// The OpenAPI description shipped with the binary.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// Embedded dashboard files: (path under `/static/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    ),
    (
        "i18n/en.json",
        "application/json",
        include_bytes!("../assets/i18n/en.json"),
    ),
    (
        "i18n/sr-Latn.json",
        "application/json",
        include_bytes!("../assets/i18n/sr-Latn.json"),
    ),
    (
        "i18n/sr-Cyrl.json",
        "application/json",
        include_bytes!("../assets/i18n/sr-Cyrl.json"),
    ),
    (
        "i18n/mk.json",
        "application/json",
        include_bytes!("../assets/i18n/mk.json"),
    ),
    (
        "i18n/ru.json",
        "application/json",
        include_bytes!("../assets/i18n/ru.json"),
    ),
    (
        "i18n/sq.json",
        "application/json",
        include_bytes!("../assets/i18n/sq.json"),
    ),
    (
        "i18n/ka.json",
        "application/json",
        include_bytes!("../assets/i18n/ka.json"),
    ),
    (
        "map/countries.geojson",
        "application/geo+json",
        include_bytes!("../assets/map/countries.geojson"),
    ),
];

const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// The dashboard loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// An RFC 9457 problem detail.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<QueryError> for Problem {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => Self::bad_request(m),
            QueryError::NotFound(id) => Self::not_found(format!("no finding with id {id}")),
            other => {
                tracing::error!(error = %other, "API query failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "the node could not answer this request; its log has the details",
                )
            }
        }
    }
}

/// What the handlers read from: the node (for `finding show`'s view of a record) and
/// the store's reader, which every query goes through.
#[derive(Clone)]
struct Api {
    node: Arc<Node>,
    reader: Reader,
}

type Pairs = Result<UrlQuery<Vec<(String, String)>>, QueryRejection>;

fn request(pairs: Pairs) -> Result<QueryRequest, Problem> {
    let UrlQuery(pairs) = pairs.map_err(|e| Problem::bad_request(e.body_text()))?;
    Ok(QueryRequest::from_pairs(&pairs)?)
}

async fn findings(State(api): State<Api>, pairs: Pairs) -> Result<Response, Problem> {
    let r = request(pairs)?;
    if !r.group_by.is_empty() {
        return Err(Problem::bad_request(
            "group_by belongs to /api/v1/aggregate",
        ));
    }
    let page = query::findings(&api.reader, &r.query, &r.page).await?;
    Ok(Json(page).into_response())
}

async fn finding(
    State(api): State<Api>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = id.map_err(|e| Problem::bad_request(e.body_text()))?;
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::bad_request(
            "a finding id is 64 hex characters (or a unique prefix of at least 8)",
        ));
    }
    let not_found = || Problem::not_found(format!("no finding with id {id}"));
    let view = match api.node.show(&id).await {
        Ok(v) => v,
        Err(NodeError::Store(StoreError::NotFound(_) | StoreError::Ambiguous(_))) => {
            return Err(not_found())
        }
        Err(NodeError::Store(e)) => return Err(QueryError::from(e).into()),
        Err(e) => return Err(Problem::bad_request(e.to_string())),
    };
    let detail = match query::finding_detail(&api.reader, view).await {
        Ok(d) => d,
        Err(QueryError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(detail).into_response())
}

async fn aggregate(State(api): State<Api>, pairs: Pairs) -> Result<Response, Problem> {
    let r = request(pairs)?;
    if r.page.cursor.is_some() {
        return Err(Problem::bad_request("cursor belongs to /api/v1/findings"));
    }
    let agg = query::aggregate(&api.reader, &r.query, &r.group_by).await?;
    Ok(Json(agg).into_response())
}

/// Codes and labels of every vocabulary, for the dashboard.
fn vocabularies_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let doc: Value = serde_json::from_str(include_str!("../../schemas/vocab.v1.json"))
            .expect("shipped vocabulary parses (checked by schema tests)");
        let mut out = serde_json::Map::new();
        if let Some(defs) = doc["$defs"].as_object() {
            for (name, def) in defs {
                out.insert(
                    name.clone(),
                    json!({"codes": def["enum"], "labels": def["x-labels"]}),
                );
            }
        }
        json!({"languages": crate::schema::LABEL_LANGUAGES, "vocabularies": out}).to_string()
    })
}

async fn vocabularies() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        vocabularies_json(),
    )
        .into_response()
}

/// Every author's chain as this node holds it, and the evidence of forks and broken links.
async fn chains(State(api): State<Api>) -> Result<Response, Problem> {
    match api.node.chains().await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "API chains failed");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "the node could not answer this request; its log has the details",
            ))
        }
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(path): Path<String>) -> Result<Response, Problem> {
    let (_, ctype, bytes) = ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .ok_or_else(|| Problem::not_found(format!("no dashboard file {path}")))?;
    Ok(([(header::CONTENT_TYPE, *ctype)], *bytes).into_response())
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; see /api/v1/openapi.yaml")
}

/// True when `host` (a `Host` header value) names this machine.
fn local_host(host: &str, bound: IpAddr) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bound,
        Err(_) => false,
    }
}

async fn guard(bound: IpAddr, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !local_host(&host, bound) {
        return Problem::new(
            StatusCode::MISDIRECTED_REQUEST,
            "Misdirected request",
            "this node answers only requests addressed to it by IP address or localhost",
        )
        .into_response();
    }
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// `router` with every route behind the `Host` guard (DNS rebinding: a page elsewhere
/// must not read this node through a name that resolves to 127.0.0.1) and the safety
/// headers. The daemon wraps the whole server in it, node routes included.
pub fn guarded(router: Router, bound: IpAddr) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| guard(bound, req, next),
    ))
}

/// Whether `req` carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer_ok(req: &Request, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(subtle::ConstantTimeEq::ct_eq(
        given.trim().as_bytes(),
        token.as_bytes(),
    ))
}

/// `router` with every route behind a bearer token: what the daemon serves on an address
/// other machines can reach. A request without the token, or with another, gets 401.
pub fn bearer_required(router: Router, token: Zeroizing<String>) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            if !bearer_ok(&req, &token) {
                let mut resp = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "this node's API needs `Authorization: Bearer <token>` (the token is in api.token in the node's home)",
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
            next.run(req).await
        }
    }))
}

/// The API and dashboard routes over `node`; `bound` is the IP the listener is on.
pub fn router(node: Arc<Node>, bound: IpAddr) -> Router {
    let reader = node.store().reader();
    Router::new()
        .route("/", get(index))
        .route("/static/{*path}", get(asset))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/findings/{id}", get(finding))
        .route("/api/v1/aggregate", get(aggregate))
        .route("/api/v1/vocabularies", get(vocabularies))
        .route("/api/v1/chains", get(chains))
        .route("/api/v1/openapi.yaml", get(openapi))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| guard(bound, req, next),
        ))
        .with_state(Api { node, reader })
}

/// Serves the API and dashboard on `listener` until `shutdown` resolves, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?.ip();
    axum::serve(listener, router(node, bound))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_hosts_are_served() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(local_host("127.0.0.1:8080", lo));
        assert!(local_host("localhost:1", lo));
        assert!(local_host("[::1]:80", lo));
        assert!(!local_host("evil.example:8080", lo));
        assert!(!local_host("", lo));
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(local_host("192.168.1.5:7878", lan));
    }

    #[test]
    fn vocabularies_list_labels_in_every_language() {
        let v: Value = serde_json::from_str(vocabularies_json()).unwrap();
        assert_eq!(
            v["vocabularies"]["country"]["labels"]["ka"]["GE"],
            "საქართველო"
        );
    }
}
