//! A real `coalition run` process as a fixture: start it, read its stdout until it is
//! ready, learn its addresses from what it prints, stop it with SIGTERM, and never leave
//! it behind (it is killed when dropped).
//!
//! The demo, the end-to-end tests and the network benchmark all run nodes this way, so
//! they share this one launcher. It relies only on the lines `coalition run` prints on
//! stdout (see [`crate::daemon::run`]): `peer PEERID`, one `listening on ADDR` per network
//! address, then `api listening on http://ADDR`, which is the last line of start-up in
//! both modes (with and without `--api-only`).
//!
//! Blocking (std processes and a reader thread), so tests without an async runtime can use
//! it; async callers wrap the blocking calls (`tokio::task::block_in_place`).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::now_ms;

/// How long [`Launch::start`] waits for a node to be ready unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a node could not be started, or did not stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The process could not be spawned, or its log file not opened.
    #[error("cannot start `coalition run` on {home}: {source}")]
    Spawn {
        /// The home it was started on.
        home: String,
        /// The error.
        source: std::io::Error,
    },
    /// It exited (or closed stdout) before it was ready.
    #[error("`coalition run` on {home} exited during start-up ({status})")]
    Exited {
        /// The home it was started on.
        home: String,
        /// Its exit status, if known.
        status: String,
    },
    /// It did not print what was awaited in time; it was killed.
    #[error("`coalition run` on {home} did not print {what} within {after:?}")]
    Timeout {
        /// The home it was started on.
        home: String,
        /// What was awaited.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// It was still running when the grace period after SIGTERM ended.
    #[error("`coalition run` on {home} did not stop within {after:?} of SIGTERM")]
    NotStopped {
        /// The home it was started on.
        home: String,
        /// The grace period.
        after: Duration,
    },
    /// Signalling or waiting for the process failed.
    #[error("cannot signal or wait for `coalition run` on {home}: {source}")]
    Process {
        /// The home it was started on.
        home: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the child's stderr (its log) goes.
#[derive(Debug, Clone)]
enum Stderr {
    Null,
    Inherit,
    Append(PathBuf),
}

/// How to start `coalition run` on a home: a builder ending in [`Launch::start`].
#[derive(Debug, Clone)]
pub struct Launch {
    exe: PathBuf,
    home: PathBuf,
    run_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stderr: Stderr,
    api_only: bool,
    ready_timeout: Duration,
}

impl Launch {
    /// `exe --home HOME run`, stdin closed, stderr discarded, ready within
    /// [`DEFAULT_READY_TIMEOUT`].
    pub fn new(exe: impl Into<PathBuf>, home: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            home: home.into(),
            run_args: Vec::new(),
            env: Vec::new(),
            stderr: Stderr::Null,
            api_only: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// Sets `COALITION_PASSPHRASE` for the child.
    pub fn passphrase(self, passphrase: &str) -> Self {
        self.env("COALITION_PASSPHRASE", passphrase)
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds an argument after `run` (e.g. `--listen ADDR`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.run_args.push(arg.into());
        self
    }

    /// `run --api-only`: no network, no passphrase; ready once the API listens.
    pub fn api_only(mut self) -> Self {
        self.api_only = true;
        self.arg("--api-only")
    }

    /// Appends the child's stderr (its log) to `path`.
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = Stderr::Append(path.into());
        self
    }

    /// Lets the child write its log to this process's stderr.
    pub fn inherit_stderr(mut self) -> Self {
        self.stderr = Stderr::Inherit;
        self
    }

    /// How long [`Launch::start`] waits for the node to be ready.
    pub fn ready_within(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the process and reads its stdout until its API listens (and, unless
    /// API-only, it has printed its peer id and at least one listen address). A node that
    /// is not ready in time is killed.
    pub fn start(self) -> Result<RunningNode, LaunchError> {
        let home = self.home.display().to_string();
        let spawn_err = |source| LaunchError::Spawn {
            home: home.clone(),
            source,
        };
        let stderr = match &self.stderr {
            Stderr::Null => Stdio::null(),
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Append(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(spawn_err)?
                .into(),
        };
        let mut child = Command::new(&self.exe)
            .arg("--home")
            .arg(&self.home)
            .arg("run")
            .args(&self.run_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(spawn_err)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((now_ms(), line)).is_err() {
                    break;
                }
            }
        });
        let mut node = RunningNode {
            child,
            home: self.home,
            lines,
            unread: Vec::new(),
            peer: None,
            listen: Vec::new(),
            api: String::new(),
            started_ms: 0,
        };
        node.read_start_up(self.api_only, self.ready_timeout)?;
        Ok(node)
    }
}

/// A started `coalition run` process, killed when dropped.
#[derive(Debug)]
pub struct RunningNode {
    child: Child,
    home: PathBuf,
    lines: Receiver<(i64, String)>,
    /// Lines read but not used yet (for [`RunningNode::wait_line`]).
    unread: Vec<String>,
    peer: Option<String>,
    listen: Vec<String>,
    api: String,
    started_ms: i64,
}

impl RunningNode {
    /// Reads start-up lines until the node is ready (see [`Launch::start`]).
    fn read_start_up(&mut self, api_only: bool, timeout: Duration) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let (at, line) = self.next_line(deadline, "its addresses", timeout)?;
            if let Some(p) = line.strip_prefix("peer ") {
                self.peer = Some(p.to_string());
                self.started_ms = at;
            } else if let Some(a) = line.strip_prefix("listening on ") {
                self.listen.push(a.to_string());
            } else if let Some(a) = line.strip_prefix("api listening on ") {
                self.api = a.strip_prefix("http://").unwrap_or(a).to_string();
                if self.peer.is_none() {
                    self.started_ms = at;
                }
            } else {
                self.unread.push(line);
            }
            let network_ready = self.peer.is_some() && !self.listen.is_empty();
            if !self.api.is_empty() && (api_only || network_ready) {
                return Ok(());
            }
        }
    }

    /// The next stdout line (with the wall clock when it was read), or an error naming
    /// `what` was awaited; on a timeout the process is killed.
    fn next_line(
        &mut self,
        deadline: Instant,
        what: &str,
        timeout: Duration,
    ) -> Result<(i64, String), LaunchError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                self.kill().ok();
                Err(LaunchError::Timeout {
                    home: self.home.display().to_string(),
                    what: what.to_string(),
                    after: timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = match wait_for_exit(&mut self.child, Duration::from_secs(5)) {
                    Some(s) => s.to_string(),
                    None => "stdout closed".into(),
                };
                Err(LaunchError::Exited {
                    home: self.home.display().to_string(),
                    status,
                })
            }
        }
    }

    /// Waits until the node prints exactly `line` on stdout (or printed it earlier and it
    /// was not used yet).
    pub fn wait_line(&mut self, line: &str, timeout: Duration) -> Result<(), LaunchError> {
        if let Some(i) = self.unread.iter().position(|l| l == line) {
            self.unread.remove(i);
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let (_, l) = self.next_line(deadline, &format!("{line:?}"), timeout)?;
            if l == line {
                return Ok(());
            }
            self.unread.push(l);
        }
    }

    /// Its libp2p peer id (`None` when API-only).
    pub fn peer_id(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Its network addresses as printed (`ADDR/p2p/PEERID`), in order.
    pub fn listen_addrs(&self) -> &[String] {
        &self.listen
    }

    /// Its first TCP listen address, usable as another node's bootstrap entry.
    pub fn tcp_addr(&self) -> Option<&str> {
        self.listen
            .iter()
            .find(|a| a.contains("/tcp/"))
            .map(String::as_str)
    }

    /// Its HTTP API address (`127.0.0.1:PORT`).
    pub fn api_addr(&self) -> &str {
        &self.api
    }

    /// Its HTTP API base URL (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Wall clock (ms since the epoch) when its `peer` line was read: the network is
    /// started and dialling. API-only: when its API line was read.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The home it runs on.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Asks it to shut down in order (SIGTERM); see [`RunningNode::wait`].
    pub fn terminate(&self) -> Result<(), LaunchError> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(drop)
            .map_err(|source| self.process_err(source))
    }

    /// Waits up to `grace` for it to exit; [`LaunchError::NotStopped`] if it has not (it
    /// is then still running, and killed when dropped).
    pub fn wait(&mut self, grace: Duration) -> Result<ExitStatus, LaunchError> {
        wait_for_exit(&mut self.child, grace).ok_or_else(|| LaunchError::NotStopped {
            home: self.home.display().to_string(),
            after: grace,
        })
    }

    /// [`RunningNode::terminate`], then [`RunningNode::wait`] up to `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus, LaunchError> {
        self.terminate()?;
        self.wait(grace)
    }

    /// Kills it at once (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) -> Result<(), LaunchError> {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        self.child
            .kill()
            .map_err(|source| self.process_err(source))?;
        self.child
            .wait()
            .map(drop)
            .map_err(|source| self.process_err(source))
    }

    fn process_err(&self, source: std::io::Error) -> LaunchError {
        LaunchError::Process {
            home: self.home.display().to_string(),
            source,
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.kill().ok();
    }
}

/// Its exit status once `child` exits within `timeout`, else `None` (std has no timed
/// wait, so this polls).
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => return None,
        }
    }
}
