//! The benchmark's nodes: `coalition run` processes (through `coalition::launch`), their
//! configuration, CLI calls, read-only access to their stores, and the `synced` figures
//! in their logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coalition::config::{Api, Config, Home, Network};
use coalition::finding::FINDING_SCHEMA;
use coalition::launch::{Launch, RunningNode};
use coalition::record::RecordId;
use coalition_tests::node::strip_ansi;
use serde_json::Value;
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

use super::PASSPHRASE;

pub(super) struct Daemon {
    pub(super) node: RunningNode,
    pub(super) tcp: String,
    pub(super) log: PathBuf,
}

impl Daemon {
    pub(super) fn stop(mut self) {
        if let Err(e) = self.node.stop(Duration::from_secs(20)) {
            eprintln!("{e}; killing it");
        }
    }

    pub(super) fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.node.api_url()))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_json()
            .expect("JSON")
    }

    /// Peers whose certificate this node verified.
    pub(super) fn verified_peers(&self) -> Vec<Value> {
        self.get("/api/v1/peers")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p["organisation_key"].is_null())
            .collect()
    }

    pub(super) fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(strip_ansi)
            .collect()
    }
}

pub(super) fn configure(
    home: &Home,
    bootstrap: &[String],
    sync_interval_secs: Option<u64>,
    sync_from_checkpoints: bool,
) {
    let mut c = Config::load(home).expect("config");
    c.network = Some(Network {
        listen: Some(vec!["/ip4/127.0.0.1/tcp/0".into()]),
        bootstrap: Some(bootstrap.to_vec()),
        sync_interval_secs,
        sync_from_checkpoints: Some(sync_from_checkpoints),
        // Every node of the benchmark dials from 127.0.0.1: the default cap of inbound
        // connections per address (8) would refuse the ninth peer of a 10-node mesh.
        max_connections_per_ip: Some(64),
        ..Default::default()
    });
    c.api = Some(Api {
        listen: Some("127.0.0.1:0".into()),
    });
    c.save(home).expect("save config");
}

pub(super) fn start(bin: &Path, home: &Home, log: &Path) -> Daemon {
    let node = Launch::new(bin, home.dir())
        .passphrase(PASSPHRASE)
        .env(
            "COALITION_LOG",
            std::env::var("COALITION_BENCH_LOG")
                .unwrap_or_else(|_| "warn,coalition::net=info".into()),
        )
        .env("NO_COLOR", "1")
        .log_to(log)
        .ready_within(Duration::from_secs(120))
        .start()
        .unwrap_or_else(|e| panic!("{e}; log {}", log.display()));
    Daemon {
        tcp: node.tcp_addr().expect("a TCP listen address").to_string(),
        node,
        log: log.to_path_buf(),
    }
}

pub(super) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

pub(super) fn cli(bin: &Path, home: &Home, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--home")
        .arg(home.dir())
        .args(args)
        .env("COALITION_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .expect("run coalition");
    assert!(
        out.status.success(),
        "coalition {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A read-only connection to a node's store (the daemon keeps writing it).
pub(super) async fn reader(home: &Home) -> SqlitePool {
    // The store is encrypted with the store key sealed in the key file.
    let identity = coalition::identity::Identity::load(&home.key_path(), super::PASSPHRASE)
        .expect("open the key file");
    let key = coalition::store::StoreKey::of(&identity);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(coalition::store::read_only_options(&home.db_path(), &key))
        .await
        .expect("open store read-only")
}

/// Findings held (the `findings` table's smallest index: a few MB for 100k, so polling
/// it every 200 ms costs the nodes next to nothing) and, once `want` are held, the latest
/// `received_at` among them (a scan of `records`, done once).
pub(super) async fn findings_held(pool: &SqlitePool, want: i64) -> (i64, i64) {
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM findings")
        .fetch_one(pool)
        .await
        .expect("query store");
    if held < want {
        return (held, 0);
    }
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(received_at) FROM records WHERE schema = ?")
            .bind(FINDING_SCHEMA)
            .fetch_one(pool)
            .await
            .expect("query store");
    (held, last.unwrap_or(0))
}

pub(super) async fn received_at(pool: &SqlitePool, id: &RecordId) -> Option<i64> {
    sqlx::query_scalar::<_, i64>("SELECT received_at FROM records WHERE id = ?")
        .bind(id.0.to_vec())
        .fetch_optional(pool)
        .await
        .expect("query store")
}

/// The `synced` figures a node logs for each sync it initiated that moved records.
#[derive(Debug, Default, Clone)]
pub(super) struct Synced {
    pub(super) stored: u64,
    /// Of them, taken on their authors' checkpoints.
    pub(super) vouched: u64,
    /// Records the node holds that the peer lacked (it pulls them in its own sync).
    pub(super) peer_lacks: u64,
    pub(super) round_trips: u64,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
}

pub(super) fn synced_lines(lines: &[String]) -> Vec<Synced> {
    lines
        .iter()
        .filter(|l| l.contains(" synced") && l.contains("round_trips="))
        .map(|l| {
            let field = |name: &str| -> u64 {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
                    .unwrap_or(0)
            };
            Synced {
                stored: field("stored"),
                vouched: field("vouched"),
                peer_lacks: field("peer_lacks"),
                round_trips: field("round_trips"),
                bytes_sent: field("bytes_sent"),
                bytes_received: field("bytes_received"),
            }
        })
        .collect()
}

pub(super) fn print_synced(who: &str, s: &Synced) {
    println!(
        "    {who}: stored {}, peer lacks {}, {} round trips, {} B sent + {} B received = {} B ({:.1} KiB)",
        s.stored,
        s.peer_lacks,
        s.round_trips,
        s.bytes_sent,
        s.bytes_received,
        s.bytes_sent + s.bytes_received,
        (s.bytes_sent + s.bytes_received) as f64 / 1024.0
    );
}
