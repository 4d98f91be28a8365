//! Helpers shared by the analysis and dashboard end-to-end tests: build the real
//! `coalition` binary, make homes with findings through the library (fast: the key is
//! derived once), run commands with a deadline, and run the API as a child process.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coalition::config::Home;
use coalition::finding::FindingInput;
use coalition::identity::Identity;
use coalition::launch::{Launch, RunningNode};
use coalition::node::Node;
use coalition::record::{Audience, RecordId};

/// Passphrase of every test organisation.
pub const PASSPHRASE: &str = "analysis test passphrase";
/// Longest any command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub use coalition_tests::{all_examples as examples, coalition_bin};

/// Runs `coalition --home HOME ARGS…` to completion (or the deadline).
pub fn coalition(home: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(coalition_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env("COALITION_PASSPHRASE", PASSPHRASE)
        .env_remove("COALITION_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coalition");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).ok();
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).ok();
        b
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("coalition {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// As [`coalition`], asserting exit status `code`; returns stdout.
pub fn coalition_ok(home: &Path, args: &[&str], code: i32) -> String {
    let out = coalition(home, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "coalition {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A home made through the library, with its unlocked identity.
pub struct TestHome {
    /// Home directory.
    pub dir: PathBuf,
    /// The opened node.
    pub node: Node,
    /// Its organisation key.
    pub identity: Identity,
}

/// Creates a home for `org` in `dir/name`.
pub async fn init_home(dir: &Path, name: &str, country: &str) -> TestHome {
    let path = dir.join(name);
    let (node, identity) = Node::init(Home::new(Some(path.clone())), name, country, PASSPHRASE)
        .await
        .expect("init home");
    TestHome {
        dir: path,
        node,
        identity,
    }
}

impl TestHome {
    /// Records the example file `path` with `audience`; returns the finding id.
    pub async fn add(&self, path: &Path, audience: Audience) -> RecordId {
        let bytes = std::fs::read(path).expect("read example");
        let input =
            FindingInput::parse(&bytes, &path.display().to_string()).expect("valid example");
        self.node
            .add_finding(&self.identity, &input, audience)
            .await
            .expect("add finding")
            .finding
    }
}

/// `coalition run --api-only` on port 0 as a child process, stopped on drop.
pub struct Api {
    node: RunningNode,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Api {
    /// Starts the API on `home` and waits for its address.
    pub fn start(home: &Path) -> Self {
        let node = Launch::new(coalition_bin(), home)
            .api_only()
            // The store is encrypted: even the API alone needs the passphrase.
            .passphrase(PASSPHRASE)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .inherit_stderr()
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let base = node.api_url();
        Self { node, base }
    }

    /// GETs `path`: (status, content type, body).
    pub fn get(&self, path: &str) -> (u16, String, String) {
        self.get_with_host(path, None)
    }

    /// GETs `path` with an explicit `Host` header.
    pub fn get_with_host(&self, path: &str, host: Option<&str>) -> (u16, String, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let mut req = agent.get(&format!("{}{path}", self.base));
        if let Some(h) = host {
            req = req.set("Host", h);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let status = resp.status();
        let ctype = resp.content_type().to_string();
        (status, ctype, resp.into_string().expect("body"))
    }

    /// GETs `path`, expecting 200 and JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        match self.node.stop(Duration::from_secs(20)) {
            Ok(status) => status.code(),
            Err(e) => panic!("{e}"),
        }
    }
}
