//! Real `coalition run` processes for the end-to-end tests: a thin layer over the node
//! library's [`coalition::launch`] fixture that writes a loopback network configuration
//! into an organisation's home, logs each node to `node.log` beside the home, and shows
//! the end of that log when a test fails.
//!
//! `COALITION_TEST_LOG` sets the nodes' log filter (default `info,libp2p=warn`);
//! `COALITION_TEST_LOG_DIR=DIR` keeps a copy of every node's log in DIR.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coalition::launch::{Launch, RunningNode};

use crate::{coalition_bin, Org, PASSPHRASE};

/// How long a node may take to stop after SIGTERM before the test fails.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// `[a, b]` as a TOML array of strings.
pub fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Org {
    /// Rewrites the `[network]` and `[api]` sections of the home's config: loopback TCP
    /// on a free port (unless `extra` sets `listen`), syncs every second (unless `extra`
    /// sets `sync_interval_secs`), a 3 s hello timeout, the API on a free
    /// loopback port, plus the `[network]` lines in `extra` (e.g. `bootstrap = [...]`).
    pub fn configure_network(&self, extra: &str) {
        let path = self.home().join("config.toml");
        let text = std::fs::read_to_string(&path).expect("read config.toml");
        // One-second anti-entropy unless the test sets its own interval.
        let interval = if extra.contains("sync_interval_secs") {
            ""
        } else {
            "sync_interval_secs = 1\n"
        };
        let listen = if extra.lines().any(|l| l.trim_start().starts_with("listen")) {
            ""
        } else {
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n"
        };
        let base = text
            .split("\n[network]")
            .next()
            .expect("split yields a first part")
            .trim_end();
        std::fs::write(
            &path,
            format!(
                "{base}\n\n[network]\n{listen}{extra}\n{interval}hello_timeout_secs = 3\n\n[api]\nlisten = \"127.0.0.1:0\"\n"
            ),
        )
        .expect("write config.toml");
    }

    /// Configures the network ([`Org::configure_network`] with `extra`) and starts
    /// `coalition run`; `name` labels it in failure messages and kept logs.
    #[track_caller]
    pub fn start_node(&self, name: &str, extra: &str) -> TestNode {
        self.configure_network(extra);
        let log = self.path("node.log");
        // mDNS at info: its few lines (instance created on an address, peer discovered)
        // are what a failed discovery test needs in the log tail it prints.
        let filter = std::env::var("COALITION_TEST_LOG")
            .unwrap_or_else(|_| "info,libp2p=warn,libp2p_mdns=info".into());
        let node = Launch::new(coalition_bin(), self.home())
            .passphrase(PASSPHRASE)
            .env("COALITION_LOG", filter)
            .log_to(&log)
            .start()
            .unwrap_or_else(|e| panic!("node {name}: {e}\n{}", log_tail(name, &log)));
        let peer = node.peer_id().expect("a network node").to_string();
        let tcp = node.tcp_addr().unwrap_or_default().to_string();
        let addrs = node.listen_addrs().to_vec();
        TestNode {
            name: name.to_string(),
            node,
            log,
            peer,
            tcp,
            addrs,
        }
    }
}

/// A running node of a test organisation; killed when dropped.
#[derive(Debug)]
pub struct TestNode {
    name: String,
    node: RunningNode,
    log: PathBuf,
    /// Its libp2p peer id.
    pub peer: String,
    /// Its TCP address as printed (`/ip4/127.0.0.1/tcp/PORT/p2p/PEER`), another node's
    /// bootstrap entry; empty if it listens on no TCP address.
    pub tcp: String,
    /// Every address it printed (`listening on ADDR`), in order.
    pub addrs: Vec<String>,
}

impl TestNode {
    /// Waits until the node prints exactly `line` (or printed it already).
    #[track_caller]
    pub fn wait_line(&mut self, line: &str, timeout: Duration) {
        if let Err(e) = self.node.wait_line(line, timeout) {
            panic!("node {}: {e}", self.name);
        }
    }

    /// Base URL of its local HTTP API (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        self.node.api_url()
    }

    /// GETs `path`, expecting 200 and a JSON body.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// GET `path` from its local HTTP API: the status and body, whatever the status.
    #[track_caller]
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let read = |r: ureq::Response| {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut body).expect("read body");
            body
        };
        match agent.get(&format!("{}{path}", self.api_url())).call() {
            Ok(r) => (r.status(), read(r)),
            Err(ureq::Error::Status(s, r)) => (s, read(r)),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    /// Kills it with SIGKILL, as a crash would.
    #[track_caller]
    pub fn kill(&mut self) {
        if let Err(e) = self.node.kill() {
            panic!("node {}: {e}", self.name);
        }
    }

    /// Stops it with SIGTERM; fails the test unless it exits within [`STOP_GRACE`].
    #[track_caller]
    pub fn stop(mut self) {
        if let Err(e) = self.node.stop(STOP_GRACE) {
            panic!("node {}: {e}", self.name);
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.node.kill().ok();
        if let Ok(dir) = std::env::var("COALITION_TEST_LOG_DIR") {
            let name = format!("{}-{}.log", self.name, self.node.pid());
            std::fs::copy(&self.log, Path::new(&dir).join(name)).ok();
        }
        if std::thread::panicking() {
            eprintln!("{}", log_tail(&self.name, &self.log));
        }
    }
}

/// The last 60 lines of a node's log, headed by its name.
fn log_tail(name: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    format!("--- last log lines of {name}\n{}", tail.join("\n"))
}

/// `s` without ANSI colour sequences (node logs written by a terminal-less process may
/// still carry them).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
