//! `coalition doctor`: checks a home and says what to fix.
//!
//! In order: the config parses (and its `[network]` section is usable), the key file
//! opens with the passphrase and belongs to the organisation in the config, the store
//! opens, passes SQLite's `PRAGMA integrity_check` and every record in it verifies (ids,
//! signatures, schemas, membership), this organisation's node certificates are not
//! expired or about to expire, every bootstrap peer answers a TCP connection within
//! `--timeout`, and no peer's records are dated ahead of this machine's clock.
//!
//! Clock skew is estimated from records: a record's `created_at` is its author's clock
//! when it was signed, `received_at` this node's when it was stored, so
//! `received_at - created_at` is the delivery delay plus the difference of the clocks. A
//! value below zero by more than [`SKEW_TOLERANCE_MS`] means this clock is behind the
//! author's (or the author's ahead). A clock *ahead* of the peers' only shows as a longer
//! delay and is not detected; neither the sync nor the hello exchange carries the time.
//!
//! Each check prints one line (`ok`, `note`, `WARN` or `FAIL`), each problem a `fix:`
//! line under it. Exit code 0 when nothing failed (warnings allowed), 1 when a check
//! failed, 2 when the doctor itself could not run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::Serialize;

use super::progress::{Progress, Unit};
use super::shared::{out, out_json, Outcome};
use crate::charter::NODE_CERT_SCHEMA;
use crate::config::{Config, ConfigError, Home};
use crate::identity::{Identity, OrgKey};
use crate::net::NetConfig;
use crate::node::Node;
use crate::store::{Store, StoreError, StoreKey};

/// How far a peer's record may be dated ahead of this clock before it is reported.
pub const SKEW_TOLERANCE_MS: i64 = 5 * 60_000;

/// Certificates with less than this left are reported.
const CERT_WARN_MS: i64 = 14 * 86_400_000;

/// `coalition doctor`
#[derive(Debug, Args)]
pub struct DoctorCmd {
    /// Seconds to wait for each bootstrap peer to answer.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
    /// Machine-readable findings.
    #[arg(long)]
    pub json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Not checked, or worth knowing; nothing to fix.
    Note,
    /// Works now, needs attention.
    Warn,
    /// Broken: fix it.
    Fail,
}

/// One finding of the doctor.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which check (`config`, `key`, `store`, `records`, `certificate`, `bootstrap`,
    /// `clock`).
    pub check: &'static str,
    /// Outcome.
    pub level: Level,
    /// What was found.
    pub what: String,
    /// What to do about it.
    pub fix: Option<String>,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, check: &'static str, level: Level, what: String, fix: Option<String>) {
        self.0.push(Finding {
            check,
            level,
            what,
            fix,
        });
    }
    fn ok(&mut self, check: &'static str, what: String) {
        self.add(check, Level::Ok, what, None);
    }
    fn note(&mut self, check: &'static str, what: String) {
        self.add(check, Level::Note, what, None);
    }
    fn warn(&mut self, check: &'static str, what: String, fix: impl Into<String>) {
        self.add(check, Level::Warn, what, Some(fix.into()));
    }
    fn fail(&mut self, check: &'static str, what: String, fix: impl Into<String>) {
        self.add(check, Level::Fail, what, Some(fix.into()));
    }
}

/// Runs `coalition doctor`.
pub(super) async fn doctor(home: &Home, cmd: DoctorCmd) -> Result<Outcome> {
    let passphrase = super::shared::passphrase(false).ok();
    let timeout = Duration::from_secs(cmd.timeout.max(1));
    let findings = examine(home, passphrase.as_deref().map(String::as_str), timeout).await;
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warned = findings.iter().filter(|f| f.level == Level::Warn).count();
    if cmd.json {
        out_json(&findings)?;
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Note => "note",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out(format!("{tag} {:<11} {}", f.check, f.what))?;
            if let Some(fix) = &f.fix {
                out(format!("     fix: {fix}"))?;
            }
        }
        out(match (failed, warned) {
            (0, 0) => "healthy: nothing to fix".to_string(),
            (0, w) => format!("healthy, with {w} warning(s) to look at"),
            (f, w) => format!("{f} problem(s) to fix, {w} warning(s)"),
        })?;
    }
    Ok(Outcome::from_check(failed == 0))
}

/// Checks `home`; `passphrase` opens the key (`None`: the key is not checked).
pub async fn examine(home: &Home, passphrase: Option<&str>, timeout: Duration) -> Vec<Finding> {
    let mut f = Findings::default();
    let config = check_config(home, &mut f);
    if matches!(config, Err(ConfigError::NoHome(_))) {
        return f.0;
    }
    let config = config.ok();
    let identity = check_key(home, config.as_ref(), passphrase, &mut f);
    let store = match &identity {
        // The store is encrypted with the key file's store key.
        None => {
            f.note(
                "store",
                format!(
                    "{} not opened: it is encrypted, and the key file was not opened",
                    home.db_path().display()
                ),
            );
            None
        }
        Some(id) => match Store::open(&home.db_path(), &StoreKey::of(id)).await {
            Ok(s) => Some(s),
            Err(e @ StoreError::Unencrypted { .. }) => {
                f.fail(
                    "store",
                    e.to_string(),
                    "stop the node and run `coalition store encrypt`",
                );
                None
            }
            Err(e @ StoreError::WrongKey { .. }) => {
                f.fail(
                    "store",
                    e.to_string(),
                    "put back the key.enc that goes with this store, or restore the home from a backup (`coalition restore BACKUP --home NEWDIR`)",
                );
                None
            }
            Err(e) => {
                f.fail(
                    "store",
                    format!("{} cannot be opened: {e}", home.db_path().display()),
                    STORE_FIX,
                );
                None
            }
        },
    };
    if let (Some(store), Some(id)) = (store, &identity) {
        check_store(home, &store, id, config.is_some(), &mut f).await;
        let me = config.as_ref().map(|c| c.organisation.key);
        if let Some(me) = me {
            check_certificates(&store, me, identity.as_ref(), &mut f).await;
            check_clock(&store, me, &mut f).await;
        }
        store.close().await;
    }
    if let Some(c) = &config {
        check_bootstrap(c, timeout, &mut f).await;
    }
    f.0
}

const STORE_FIX: &str = "stop the node, move the damaged store aside and restore the home from \
    a backup (`coalition restore BACKUP --home NEWDIR`); without one, start an empty store and \
    let peers re-send what they share (your PRIVATE records exist only in this store and its backups)";

fn check_config(home: &Home, f: &mut Findings) -> Result<Config, ConfigError> {
    let config = Config::load(home);
    match &config {
        Ok(c) => match NetConfig::from_config(c) {
            Ok(_) => f.ok("config", format!("{} parses", home.config_path().display())),
            Err(e) => f.fail(
                "config",
                e.to_string(),
                "correct the [network] entry named above in config.toml (every option is \
                 described in deploy/config.example.toml)",
            ),
        },
        Err(ConfigError::NoHome(dir)) => f.fail(
            "config",
            format!("no Coalition home at {}", dir.display()),
            "create one with `coalition init --org NAME --country CC`, or pass --home DIR / set COALITION_HOME",
        ),
        Err(ConfigError::Invalid { path, reason }) => f.fail(
            "config",
            format!("{} is invalid: {}", path.display(), one_line(reason)),
            "correct config.toml at the line named above (every option is described in \
             deploy/config.example.toml); `coalition doctor` checks it again",
        ),
        Err(e) => f.fail(
            "config",
            e.to_string(),
            "correct config.toml at the line named above (every option is described in \
             deploy/config.example.toml); `coalition doctor` checks it again",
        ),
    }
    config
}

/// A TOML error (a position, a source excerpt with a caret, the message) on one line:
/// `at line 8, column 22: invalid type … (in `sync_interval_secs = "often"`)`.
fn one_line(reason: &str) -> String {
    let mut head = None;
    let mut source = None;
    let mut message = Vec::new();
    for l in reason.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if head.is_none() {
            head = Some(l.trim_start_matches("TOML parse error ").to_string());
        } else if let Some((n, text)) = l.split_once(" | ") {
            if n.trim().parse::<u32>().is_ok() {
                source = Some(text.trim().to_string());
            }
        } else if !l.starts_with('|') {
            message.push(l);
        }
    }
    let mut out = head.unwrap_or_default();
    if !message.is_empty() {
        out = format!("{out}: {}", message.join(" "));
    }
    match source {
        Some(s) => format!("{out} (in `{s}`)"),
        None => out,
    }
}

fn check_key(
    home: &Home,
    config: Option<&Config>,
    passphrase: Option<&str>,
    f: &mut Findings,
) -> Option<Identity> {
    let path = home.key_path();
    let Some(p) = passphrase else {
        f.note(
            "key",
            format!("{} not opened: no passphrase given", path.display()),
        );
        return None;
    };
    match Identity::load(&path, p) {
        Ok(id) => {
            match config {
                Some(c) if c.organisation.key != id.key() => f.fail(
                    "key",
                    format!(
                        "{} holds key {}, but config.toml names {}",
                        path.display(),
                        id.key().short(),
                        c.organisation.key.short()
                    ),
                    "put back this organisation's key.enc (from a backup), or the config.toml that goes with this key",
                ),
                _ => f.ok("key", format!("{} opens with the passphrase", path.display())),
            }
            Some(id)
        }
        Err(e) => {
            f.fail(
                "key",
                e.to_string(),
                "check the passphrase (COALITION_PASSPHRASE); if the file is damaged or the \
                 passphrase lost, restore key.enc from a backup: the key cannot be recovered otherwise",
            );
            None
        }
    }
}

async fn check_store(
    home: &Home,
    store: &Store,
    identity: &Identity,
    config_ok: bool,
    f: &mut Findings,
) {
    match store.integrity_check().await {
        Ok(problems) if problems.is_empty() => f.ok(
            "store",
            format!(
                "{} passes SQLite's integrity check",
                home.db_path().display()
            ),
        ),
        Ok(problems) => f.fail(
            "store",
            format!(
                "{} is damaged: {}",
                home.db_path().display(),
                problems
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            STORE_FIX,
        ),
        Err(e) => f.fail(
            "store",
            format!("{} cannot be read: {e}", home.db_path().display()),
            STORE_FIX,
        ),
    }
    if !config_ok {
        f.note(
            "records",
            "not verified: the config must parse first".into(),
        );
        return;
    }
    let node = match Node::open(home.clone(), identity).await {
        Ok(n) => n,
        Err(e) => {
            return f.fail("records", format!("cannot open the node: {e}"), STORE_FIX);
        }
    };
    let bar = Progress::new("verifying", Unit::Records);
    let report = node.verify_store_observed(&bar.observer()).await;
    drop(bar);
    match report {
        Ok(r) if r.ok() => f.ok(
            "records",
            format!(
                "all {} records verify (ids, signatures, schemas, membership)",
                r.valid
            ),
        ),
        Ok(r) => f.fail(
            "records",
            format!(
                "{} record(s) do not verify; first: {}",
                r.failures.len(),
                r.failures
                    .first()
                    .map(|x| x.reason.clone())
                    .unwrap_or_default()
            ),
            format!("`coalition verify` lists them; {STORE_FIX}"),
        ),
        Err(e) => f.fail("records", format!("cannot be read: {e}"), STORE_FIX),
    }
}

/// This node's libp2p peer id, when it has run before (the salt is in the store).
async fn own_peer_id(store: &Store, identity: &Identity) -> Option<String> {
    let salt = store.meta("node_salt").await.ok()??;
    let mut secret = *identity.node_secret(salt.as_bytes());
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).ok()?;
    Some(key.public().to_peer_id().to_string())
}

async fn check_certificates(
    store: &Store,
    me: OrgKey,
    identity: Option<&Identity>,
    f: &mut Findings,
) {
    let certs = match store.records_with_schemas(&[NODE_CERT_SCHEMA]).await {
        Ok(c) => c,
        Err(e) => return f.fail("certificate", format!("cannot be read: {e}"), STORE_FIX),
    };
    // The latest expiry per peer id of this organisation.
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for r in certs.iter().filter(|r| r.author == me) {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        if let (Some(peer), Some(exp)) = (v["peer_id"].as_str(), v["expires_at_ms"].as_i64()) {
            let e = latest.entry(peer.to_string()).or_insert(exp);
            *e = (*e).max(exp);
        }
    }
    let own = match identity {
        Some(id) => own_peer_id(store, id).await,
        None => None,
    };
    if latest.is_empty() {
        return f.note(
            "certificate",
            "no node certificate yet (a node issues its own when it first runs)".into(),
        );
    }
    let now = crate::now_ms();
    for (peer, exp) in latest {
        let this = own.as_deref() == Some(peer.as_str());
        let which = if this { "this node" } else { "node" };
        let fix = if this {
            "restart `coalition run`: a node issues itself a new certificate when it starts"
                .to_string()
        } else {
            format!("issue a new one: `coalition node cert --peer-id {peer} --days 90` (if that node is retired, nothing to do)")
        };
        let days = (exp - now) / 86_400_000;
        if exp <= now {
            f.fail(
                "certificate",
                format!(
                    "the certificate of {which} {peer} expired {} day(s) ago: peers refuse it",
                    (now - exp) / 86_400_000
                ),
                fix,
            );
        } else if exp - now < CERT_WARN_MS {
            f.warn(
                "certificate",
                format!("the certificate of {which} {peer} expires in {days} day(s)"),
                fix,
            );
        } else {
            f.ok(
                "certificate",
                format!("{which} {peer}: valid for {days} more days"),
            );
        }
    }
}

async fn check_clock(store: &Store, me: OrgKey, f: &mut Findings) {
    let rows: Result<Vec<(Vec<u8>, i64)>, _> = sqlx::query_as(
        "SELECT author, MIN(received_at - created_at) FROM records WHERE author <> ? GROUP BY author",
    )
    .bind(me.as_bytes().as_slice())
    .fetch_all(store.pool())
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return f.fail("clock", format!("records cannot be read: {e}"), STORE_FIX),
    };
    if rows.is_empty() {
        return f.note(
            "clock",
            "not compared: no records from peers yet (skew is estimated from their timestamps)"
                .into(),
        );
    }
    let mut ahead: Vec<(String, i64)> = rows
        .iter()
        .filter(|(_, d)| *d < -SKEW_TOLERANCE_MS)
        .map(|(a, d)| (hex::encode(&a[..a.len().min(6)]), -d))
        .collect();
    ahead.sort_by_key(|(_, d)| -d);
    match ahead.first() {
        None => f.ok(
            "clock",
            format!(
                "no record of {} peer organisation(s) is dated ahead of this clock by more than {} min",
                rows.len(),
                SKEW_TOLERANCE_MS / 60_000
            ),
        ),
        Some((author, ms)) => f.warn(
            "clock",
            format!(
                "records of {author} (and {} other author(s)) were stored {} min before the time they claim: this clock is behind theirs",
                ahead.len() - 1,
                ms / 60_000
            ),
            "check this machine's clock (`timedatectl`, NTP); if it is right, ask that member to check theirs (certificate expiry is judged by the local clock)",
        ),
    }
}

/// Host and TCP port of a bootstrap address (the relay's for a relayed one); `None` for
/// a QUIC-only address.
fn tcp_target(addr: &Multiaddr) -> Option<(String, u16)> {
    let mut host = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) => host = Some(ip.to_string()),
            Protocol::Ip6(ip) => host = Some(ip.to_string()),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => host = Some(h.to_string()),
            Protocol::Tcp(port) => return host.map(|h| (h, port)),
            Protocol::Udp(_) | Protocol::P2pCircuit => return None,
            _ => {}
        }
    }
    None
}

async fn check_bootstrap(config: &Config, timeout: Duration, f: &mut Findings) {
    let Ok(net) = NetConfig::from_config(config) else {
        return; // reported by the config check
    };
    if net.bootstrap.is_empty() {
        return f.note(
            "bootstrap",
            "no bootstrap peers configured: this node waits to be dialled (or found by mDNS)"
                .into(),
        );
    }
    for addr in &net.bootstrap {
        let Some((host, port)) = tcp_target(addr) else {
            f.note(
                "bootstrap",
                format!("{addr}: not probed (QUIC over UDP has no handshake-free probe)"),
            );
            continue;
        };
        let dial = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(timeout, dial).await {
            Ok(Ok(_)) => f.ok("bootstrap", format!("{addr}: answers")),
            Ok(Err(e)) => f.fail(
                "bootstrap",
                format!("{addr}: unreachable ({e})"),
                format!("check that the peer's node runs and listens on {host}:{port}, that a firewall lets TCP {port} through, and that the address in [network] bootstrap is current"),
            ),
            Err(_) => f.fail(
                "bootstrap",
                format!("{addr}: no answer within {} s", timeout.as_secs()),
                format!("check that {host} is reachable from here and that a firewall lets TCP {port} through (or raise --timeout on a slow link)"),
            ),
        }
    }
}
