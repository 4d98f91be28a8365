//! Prometheus metrics of a running node, served by `coalition run` at `/metrics` on the
//! local API address (OpenMetrics text, through the `prometheus-client` crate).
//!
//! Counters are moved by hooks where things happen: a sync this node initiated ended
//! ([`sync_finished`]), a peer broke the protocol ([`violation`]), the API answered a
//! request ([`track`]). Gauges (records held, peers, last sync) are read from the
//! network's status snapshot and the store when `/metrics` is scraped.
//!
//! What metrics never carry: record content, record ids, organisation or member names,
//! peer ids or addresses. Authors are labelled by the short id of their organisation key
//! (the first 12 hex characters, as `coalition status` shows keys); the figures are the
//! ones `/api/v1/status` already gives (records per author, peers, counters), so the
//! route follows the same access rules as the rest of the API (the `Host` guard, and the
//! bearer token off loopback; docs/THREAT_MODEL.md §4). The API's route label is the
//! matched route pattern (`/api/v1/findings/{id}`), never the path asked for.
//!
//! The registry is one per process: a process runs one node.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::net::{NetStatus, SyncStats};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthorLabel {
    author: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    verified: &'static str,
    relayed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
    status: String,
}

fn api_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the process.
struct Metrics {
    registry: Registry,
    sync_rounds: Family<ResultLabel, Counter>,
    sync_duration: Histogram,
    sync_bytes: Family<DirectionLabel, Counter>,
    sync_records: Family<OutcomeLabel, Counter>,
    violations: Family<KindLabel, Counter>,
    api: Family<RouteLabel, Histogram, fn() -> Histogram>,
    records: Gauge,
    records_held: Family<AuthorLabel, Gauge>,
    peers: Family<PeerLabel, Gauge>,
    last_sync: Gauge,
    /// One scrape at a time refreshes the gauges and encodes.
    scrape: Mutex<()>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("coalition");
        let sync_rounds = Family::<ResultLabel, Counter>::default();
        registry.register(
            "sync_rounds",
            "Syncs this node initiated, by result (ok, failed)",
            sync_rounds.clone(),
        );
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register_with_unit(
            "sync_duration",
            "Duration of the syncs this node initiated",
            Unit::Seconds,
            sync_duration.clone(),
        );
        let sync_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register_with_unit(
            "sync",
            "Sync frames this node's own syncs sent and received",
            Unit::Bytes,
            sync_bytes.clone(),
        );
        let sync_records = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sync_records",
            "Records received in this node's syncs, by outcome (stored, refused)",
            sync_records.clone(),
        );
        let violations = Family::<KindLabel, Counter>::default();
        registry.register(
            "violations",
            "Protocol violations by peers, by kind",
            violations.clone(),
        );
        let api =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(api_histogram);
        registry.register_with_unit(
            "api_request_duration",
            "Local API latency, by route pattern and status class",
            Unit::Seconds,
            api.clone(),
        );
        let records = Gauge::default();
        registry.register("records", "Records held in the store", records.clone());
        let records_held = Family::<AuthorLabel, Gauge>::default();
        registry.register(
            "records_held",
            "Records held per author (short organisation key id)",
            records_held.clone(),
        );
        let peers = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peers",
            "Connected peers, by whether their certificate verified and whether relayed",
            peers.clone(),
        );
        let last_sync = Gauge::default();
        registry.register_with_unit(
            "last_sync_timestamp",
            "Unix time of the latest completed sync with any connected peer (0: none)",
            Unit::Seconds,
            last_sync.clone(),
        );
        Self {
            registry,
            sync_rounds,
            sync_duration,
            sync_bytes,
            sync_records,
            violations,
            api,
            records,
            records_held,
            peers,
            last_sync,
            scrape: Mutex::new(()),
        }
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sync this node initiated ended after `took`: its figures when it succeeded.
pub fn sync_finished(stats: Option<&SyncStats>, took: Duration) {
    let m = &*METRICS;
    let result = if stats.is_some() { "ok" } else { "failed" };
    m.sync_rounds.get_or_create(&ResultLabel { result }).inc();
    m.sync_duration.observe(took.as_secs_f64());
    if let Some(s) = stats {
        let dir = |direction| DirectionLabel { direction };
        m.sync_bytes
            .get_or_create(&dir("sent"))
            .inc_by(s.bytes_sent);
        m.sync_bytes
            .get_or_create(&dir("received"))
            .inc_by(s.bytes_received);
        let outcome = |outcome| OutcomeLabel { outcome };
        m.sync_records
            .get_or_create(&outcome("stored"))
            .inc_by(s.stored);
        m.sync_records
            .get_or_create(&outcome("refused"))
            .inc_by(s.refused);
    }
}

/// A peer broke the protocol; `kind` is the violation's variant name (`Debug` text; a
/// payload in parentheses is dropped), counted in snake case.
pub fn violation(kind: &str) {
    let name = kind.split('(').next().unwrap_or(kind);
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().filter(char::is_ascii_alphanumeric).enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    METRICS
        .violations
        .get_or_create(&KindLabel { kind: snake })
        .inc();
}

/// Middleware timing every API request, labelled by its matched route pattern.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    METRICS
        .api
        .get_or_create(&RouteLabel { route, status })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The metrics as OpenMetrics text, gauges refreshed from `status` (none with
/// `--api-only`) and the store's record count `records`.
pub fn render(status: Option<&NetStatus>, records: Option<u64>) -> String {
    let m = &*METRICS;
    let _one = m.scrape.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = records {
        m.records.set(as_i64(n));
    }
    m.records_held.clear();
    m.peers.clear();
    if let Some(s) = status {
        for (author, n) in &s.records_per_author {
            let author = author.chars().take(12).collect();
            m.records_held
                .get_or_create(&AuthorLabel { author })
                .set(as_i64(*n));
        }
        for p in &s.peers {
            let yes = |b: bool| if b { "true" } else { "false" };
            m.peers
                .get_or_create(&PeerLabel {
                    verified: yes(p.organisation_key.is_some()),
                    relayed: yes(p.relayed),
                })
                .inc();
        }
        let last = s.peers.iter().filter_map(|p| p.last_sync_ms).max();
        m.last_sync.set(last.map_or(0, |ms| ms / 1000));
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &m.registry);
    text
}

/// Records a sync must expect before its progress is logged: a first sync with a
/// coalition's history, not the few records of a routine one.
pub const LARGE_SYNC: u64 = 5_000;

/// Seconds between two progress lines of a large sync.
const SYNC_LOG_EVERY: Duration = Duration::from_secs(5);

/// Progress of one large sync for the daemon's log: periodic `info` lines with the
/// records received so far, the expected total, the rate and the time left. `expected`
/// is an upper estimate (the buckets that differ, less what this node holds in them), so
/// the time left errs long.
#[derive(Debug)]
pub struct SyncProgress {
    peer: String,
    expected: u64,
    done: u64,
    started: Instant,
    last: Instant,
    logged: bool,
}

impl SyncProgress {
    /// Progress of a sync with `peer` expecting about `expected` records.
    pub fn new(peer: impl ToString, expected: u64) -> Self {
        let now = Instant::now();
        Self {
            peer: peer.to_string(),
            expected,
            done: 0,
            started: now,
            last: now,
            logged: false,
        }
    }

    /// `n` more records were received (stored or refused); logs a line when due.
    pub fn advance(&mut self, n: u64) {
        if let Some(line) = self.advance_at(n, Instant::now()) {
            tracing::info!(peer = %self.peer, "{line}");
        }
    }

    /// As [`Self::advance`] at time `now`: the line to log, if one is due.
    fn advance_at(&mut self, n: u64, now: Instant) -> Option<String> {
        self.done += n;
        if self.expected < LARGE_SYNC || now.duration_since(self.last) < SYNC_LOG_EVERY {
            return None;
        }
        self.last = now;
        self.logged = true;
        let secs = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let left = self.expected.saturating_sub(self.done);
        let eta = if rate > 0.0 {
            format!("{:.0} s", left as f64 / rate)
        } else {
            "unknown".into()
        };
        Some(format!(
            "sync progress: {} of about {} records received ({:.0} records/s, about {eta} left)",
            self.done, self.expected, rate
        ))
    }

    /// The sync ended: a closing line if progress was logged.
    pub fn finish(self) {
        if self.logged {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(peer = %self.peer, "sync progress: done, {} records received in {secs:.0} s ({:.0} records/s)", self.done, self.done as f64 / secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_counted_by_kind_without_their_payload() {
        violation("BadPush(3)");
        violation("BadPush(7)");
        violation("MalformedRequest");
        let text = render(None, Some(4));
        assert!(
            text.contains("coalition_violations_total{kind=\"bad_push\"} 2"),
            "{text}"
        );
        assert!(text.contains("coalition_violations_total{kind=\"malformed_request\"} 1"));
        assert!(text.contains("coalition_records 4"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_large_sync_logs_counts_rate_and_time_left_every_few_seconds() {
        let mut p = SyncProgress::new("peer", 20_000);
        let t0 = p.started;
        assert_eq!(p.advance_at(1_000, t0 + Duration::from_secs(1)), None);
        let line = p
            .advance_at(4_000, t0 + Duration::from_secs(5))
            .expect("a line after 5 s");
        assert_eq!(
            line,
            "sync progress: 5000 of about 20000 records received (1000 records/s, about 15 s left)"
        );
        assert_eq!(p.advance_at(1_000, t0 + Duration::from_secs(6)), None);
        assert!(p.advance_at(0, t0 + Duration::from_secs(10)).is_some());
        // A routine sync says nothing.
        let mut small = SyncProgress::new("peer", LARGE_SYNC - 1);
        let t0 = small.started;
        assert_eq!(small.advance_at(10, t0 + Duration::from_secs(60)), None);
    }
}
