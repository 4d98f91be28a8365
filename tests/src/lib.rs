//! Shared helpers for the end-to-end tests: build the real `coalition` binary once per
//! test process and drive it in throw-away homes, the way an operator or auditor would.
//!
//! Every command runs with `--home`, `COALITION_PASSPHRASE` set, stdin closed (`null`)
//! and a hard timeout, so a test can never hang on a prompt or a stuck process. Running
//! nodes (`coalition run`) are in [`node`], crafted bundles in [`bundles`].

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use wait_timeout::ChildExt;

pub mod adversary;
pub mod bundles;
pub mod chaos;
pub mod forwarder;
pub mod node;

pub use bundles::{bundle_records, write_bundle};
pub use node::{toml_list, TestNode};

/// Passphrase every test organisation uses.
pub const PASSPHRASE: &str = "end-to-end test passphrase";

/// Longest any single command may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The directory of sample finding inputs.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("schemas/examples")
}

/// One example input by file name (e.g. `01-rs-belgrade-protest-force.json`).
pub fn example(name: &str) -> PathBuf {
    let p = examples_dir().join(name);
    assert!(p.is_file(), "missing example {}", p.display());
    p
}

/// Every example input, sorted by name.
pub fn all_examples() -> Vec<PathBuf> {
    coalition::demo::example_files(&examples_dir()).expect("schemas/examples is readable")
}

/// Builds the `coalition` binary (once per process) and returns its path.
///
/// Runs `$CARGO build -p coalition-node --bin coalition` in the workspace root and takes
/// the executable path from cargo's JSON messages, so `CARGO_TARGET_DIR` and any other
/// target-directory configuration are respected.
///
/// `COALITION_BIN`, when set, names a binary to use instead (a long soak runs a copy,
/// so rebuilding the workspace meanwhile does not change the program under test).
pub fn coalition_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("COALITION_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_coalition(false),
    })
}

/// Like [`coalition_bin`], but an optimised (`--release`) build, for benchmarks.
pub fn coalition_release_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_coalition(true))
}

fn build_coalition(release: bool) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec![
        "build",
        "-p",
        "coalition-node",
        "--bin",
        "coalition",
        "--message-format=json-render-diagnostics",
    ];
    if release {
        args.push("--release");
    }
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the coalition binary");
    assert!(
        out.status.success(),
        "building the coalition binary failed ({})",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "coalition")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| {
                    if t.is_absolute() {
                        t
                    } else {
                        workspace_root().join(t)
                    }
                })
                .unwrap_or_else(|| workspace_root().join("target"));
            target
                .join(if release { "release" } else { "debug" })
                .join(format!("coalition{}", std::env::consts::EXE_SUFFIX))
        });
    assert!(exe.is_file(), "no coalition binary at {}", exe.display());
    exe
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command line, for failure messages.
    pub command: String,
}

impl Output {
    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    /// Stdout and stderr together (where a message appears is not the point).
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics unless stdout or stderr contains every one of `needles`
    /// (case-insensitive).
    #[track_caller]
    pub fn says(&self, needles: &[&str]) -> &Self {
        let all = self.all().to_lowercase();
        for n in needles {
            assert!(
                all.contains(&n.to_lowercase()),
                "`{}`: output does not mention {n:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.command,
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.command, self.stdout, self.stderr
            )
        })
    }

    /// The first line of stdout, trimmed.
    pub fn line(&self) -> String {
        self.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// Runs the binary with `args` and environment changes; kills it after
/// [`COMMAND_TIMEOUT`].
pub fn run_command<I, S>(cwd: &Path, args: I, env: &[(&str, Option<&str>)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let command = std::iter::once("coalition".to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(coalition_bin());
    cmd.args(&args)
        .current_dir(cwd)
        .env_remove("COALITION_HOME")
        .env_remove("COALITION_LOG")
        .env_remove("COALITION_EXAMPLES")
        .env_remove("COALITION_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).ok();
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = match child.wait_timeout(COMMAND_TIMEOUT).expect("wait for child") {
        Some(s) => s,
        None => {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "`{command}` did not finish within {} s and was killed",
                COMMAND_TIMEOUT.as_secs()
            );
        }
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        command,
    }
}

/// Everything observable about a store's contents, for "unchanged" checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Ids of every stored record (private ones included).
    pub record_ids: BTreeSet<String>,
    /// `finding list --all --json`.
    pub findings: Value,
    /// `verify --json` of the store.
    pub verify: Value,
}

/// A member organisation: a temporary directory holding its Coalition home (`home/`)
/// and any scratch files a test writes (bundles, inputs).
#[derive(Debug)]
pub struct Org {
    dir: tempfile::TempDir,
    name: String,
    key: Option<String>,
}

impl Default for Org {
    fn default() -> Self {
        Self::empty()
    }
}

impl Org {
    /// A directory with no Coalition home in it yet.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("coalition-e2e-")
                .tempdir()
                .expect("create a temporary directory"),
            name: String::new(),
            key: None,
        }
    }

    /// A new organisation: runs `init` and checks it printed a key.
    #[track_caller]
    pub fn init(name: &str, country: &str) -> Self {
        let mut org = Self::empty();
        let out = org.run(["init", "--org", name, "--country", country]);
        out.ok();
        let key = out.line();
        assert!(is_hex(&key, 64), "init printed {key:?}, not a 64-hex key");
        org.key = Some(key);
        org.name = name.to_string();
        org
    }

    /// A second home of the same organisation: a copy of this home (key file, config,
    /// store) as it is now, as on a second laptop or a backup restored elsewhere. Copy it
    /// before this home's node first runs, so that the copy's node gets a peer id of its
    /// own.
    #[track_caller]
    pub fn second_home(&self) -> Org {
        use std::os::unix::fs::PermissionsExt;
        let copy = Org {
            name: self.name.clone(),
            key: self.key.clone(),
            ..Org::empty()
        };
        std::fs::create_dir(copy.home()).expect("create the second home");
        std::fs::set_permissions(copy.home(), std::fs::Permissions::from_mode(0o700))
            .expect("home mode");
        for entry in std::fs::read_dir(self.home()).expect("read the home") {
            let from = entry.expect("home entry").path();
            let to = copy.home().join(from.file_name().expect("a file name"));
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        copy
    }

    /// The organisation name given to `init` (empty for [`Org::empty`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The organisation key printed by `init`.
    pub fn key(&self) -> &str {
        self.key.as_deref().expect("organisation was initialised")
    }

    /// The home directory (`--home`).
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A path for a scratch file next to (not inside) the home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a scratch file and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write scratch file");
        p
    }

    /// The entry of `coalition peers --json` for `peer_id`, if the node lists it.
    pub fn peer(&self, peer_id: &str) -> Option<serde_json::Value> {
        self.run(["peers", "--json"])
            .ok()
            .json()
            .as_array()
            .expect("peers is a JSON array")
            .iter()
            .find(|p| p["peer_id"] == peer_id)
            .cloned()
    }

    /// Runs `coalition --home HOME ARGS…` with the right passphrase.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_env(args, &[("COALITION_PASSPHRASE", Some(PASSPHRASE))])
    }

    /// Runs `coalition --home HOME ARGS…` with the given environment changes (and no
    /// passphrase unless `env` sets one).
    pub fn run_env<I, S>(&self, args: I, env: &[(&str, Option<&str>)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--home".into(), self.home().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().into()));
        run_command(self.dir.path(), all, env)
    }

    /// `finding add FILE --share AUDIENCE`; returns the new record id.
    #[track_caller]
    pub fn add(&self, file: &Path, share: &str) -> String {
        let out = self.run([
            OsStr::new("finding"),
            OsStr::new("add"),
            file.as_os_str(),
            OsStr::new("--share"),
            OsStr::new(share),
        ]);
        out.ok();
        let id = out.line();
        assert!(
            is_hex(&id, 64),
            "finding add printed {id:?}, not a record id"
        );
        id
    }

    /// `finding add` of the example input `name` (see [`example`]) with `--share share`;
    /// returns the new record id.
    #[track_caller]
    pub fn add_example(&self, name: &str, share: &str) -> String {
        self.add(&example(name), share)
    }

    /// `finding list [--all] --json`.
    #[track_caller]
    pub fn list(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["finding", "list", "--json"];
        if all {
            args.push("--all");
        }
        let out = self.run(args);
        out.ok();
        out.json().as_array().expect("list is a JSON array").clone()
    }

    /// Ids from `finding list [--all] --json`.
    #[track_caller]
    pub fn listed_ids(&self, all: bool) -> BTreeSet<String> {
        self.list(all)
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// `finding show ID --json`.
    #[track_caller]
    pub fn show(&self, id: &str) -> Value {
        let out = self.run(["finding", "show", id, "--json"]);
        out.ok();
        out.json()
    }

    /// `export --format FORMAT -o PATH [extra…]`; returns the path.
    #[track_caller]
    pub fn export(&self, format: &str, name: &str, extra: &[&str]) -> PathBuf {
        let path = self.path(name);
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("export"),
            OsStr::new("--format"),
            OsStr::new(format),
            OsStr::new("-o"),
            path.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.run(args).ok();
        assert!(path.is_file(), "export wrote no file at {}", path.display());
        path
    }

    /// Every stored record (private ones included) as the JSON objects of a
    /// `--format jsonl --include-private` export.
    #[track_caller]
    pub fn all_records(&self) -> Vec<Value> {
        let name = format!("all-records-{}.jsonl", unique());
        let path = self.export("jsonl", &name, &["--include-private"]);
        let text = std::fs::read_to_string(&path).expect("read jsonl export");
        std::fs::remove_file(&path).ok();
        parse_jsonl(&text)
    }

    /// `import PATH --json`.
    pub fn import(&self, bundle: &Path) -> Output {
        self.run([
            OsStr::new("import"),
            bundle.as_os_str(),
            OsStr::new("--json"),
        ])
    }

    /// What a user could observe about the store.
    #[track_caller]
    pub fn snapshot(&self) -> Snapshot {
        let verify = self.run(["verify", "--json"]);
        verify.ok();
        Snapshot {
            record_ids: self
                .all_records()
                .iter()
                .map(|r| r["id"].as_str().expect("record id").to_string())
                .collect(),
            findings: Value::Array(self.list(true)),
            verify: verify.json(),
        }
    }
}

/// Parses JSON Lines, panicking on any line that is not JSON.
#[track_caller]
pub fn parse_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {l}", i + 1))
        })
        .collect()
}

/// `verify BUNDLE --json` run where there is no Coalition home at all.
#[track_caller]
pub fn verify_offline(bundle: &Path) -> (Output, Value) {
    let auditor = Org::empty();
    let out = auditor.run_env(
        [
            OsStr::new("verify"),
            bundle.as_os_str(),
            OsStr::new("--json"),
        ],
        &[],
    );
    let v = out.json();
    (out, v)
}

/// Whether `s` is exactly `len` lowercase hex digits.
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every string leaf of a JSON value (object keys excluded).
pub fn string_leaves(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(string_leaves).collect(),
        Value::Object(o) => o.values().flat_map(string_leaves).collect(),
        _ => Vec::new(),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Founds a coalition named `name` of `orgs` (threshold `t`) through the CLI, as founders
/// would by exchanging files; every member ends up holding the charter.
pub fn found(name: &str, orgs: &[&Org], t: u32) {
    let mut args: Vec<String> = vec![
        "charter".into(),
        "draft".into(),
        "--name".into(),
        name.into(),
        "--threshold".into(),
        t.to_string(),
    ];
    for (i, o) in orgs.iter().enumerate() {
        let card = o.write(
            &format!("card{i}.json"),
            o.run(["identity", "export"]).ok().stdout.clone(),
        );
        args.extend(["--member".into(), card.display().to_string()]);
    }
    let draft = orgs[0].path("draft.json");
    args.extend(["-o".into(), draft.display().to_string()]);
    orgs[0].run(&args).ok();
    for o in orgs {
        o.run(["charter".as_ref(), "sign".as_ref(), draft.as_os_str()])
            .ok();
    }
    orgs[0]
        .run(["charter".as_ref(), "adopt".as_ref(), draft.as_os_str()])
        .ok();
    let bundle = orgs[0].export("bundle", "charter.bundle", &[]);
    for o in &orgs[1..] {
        o.import(&bundle).ok();
    }
}

/// Ids of every record `org`'s store holds.
pub fn held(org: &Org) -> BTreeSet<String> {
    org.all_records()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `f` every 250 ms until it is true (returning how long that took), or panics
/// after `timeout` naming `what` was awaited.
#[track_caller]
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}
