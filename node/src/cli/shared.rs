//! What every command shares: its [`Outcome`], the export [`Format`] (plain and analyst
//! exports), printing to stdout, the passphrase, and opening and unlocking the node of a
//! home.
//!
//! # The passphrase and the process environment
//!
//! `COALITION_PASSPHRASE` is taken out of the environment by [`take_env_passphrase`], first
//! thing in `main`, before any thread or child starts; the value is kept in memory that is
//! wiped when dropped ([`Zeroizing`]). Removing a variable does not remove it from
//! `/proc/PID/environ`, which shows the environment the process was *started* with (to
//! the same user and root, for as long as the process runs). So the long-running
//! `coalition run` re-executes itself (same pid, same arguments) with the variable
//! removed, handing the passphrase to its new image through a pipe whose number is in
//! `COALITION_PASSPHRASE_FD`; its `/proc/PID/environ` then holds no passphrase. Short
//! commands only remove the variable: they exit within seconds.

use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use zeroize::Zeroizing;

use crate::config::Home;
use crate::identity::Identity;
use crate::node::Node;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Signed bundle (docs/FORMATS.md), what auditors verify.
    Bundle,
    /// One JSON object per record.
    Jsonl,
    /// One row per current finding, columns close to ACLED's.
    Csv,
    /// GeoJSON FeatureCollection of current findings.
    Geojson,
}

/// A command's result when it did not fail outright.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// A check failed (exit 1).
    CheckFailed,
}

impl Outcome {
    /// [`Outcome::Success`] when `ok`, else [`Outcome::CheckFailed`].
    pub(super) fn from_check(ok: bool) -> Self {
        if ok {
            Self::Success
        } else {
            Self::CheckFailed
        }
    }
}

/// Prints one line on stdout (a closed stdout surfaces as `BrokenPipe`).
pub(super) fn out(text: impl AsRef<str>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_ref().as_bytes())?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// Prints `value` as pretty JSON on stdout.
pub(super) fn out_json(value: &impl serde::Serialize) -> Result<()> {
    out(serde_json::to_string_pretty(value)?)
}

/// The variable operators set.
const PASSPHRASE_VAR: &str = "COALITION_PASSPHRASE";
/// The variable a re-executed `coalition run` finds its passphrase pipe in.
const PASSPHRASE_FD_VAR: &str = "COALITION_PASSPHRASE_FD";

/// The passphrase taken from the environment at start-up, if one was given.
static ENV_PASSPHRASE: Mutex<Option<Zeroizing<String>>> = Mutex::new(None);

/// Takes the passphrase out of the process environment; call it first in `main`, before
/// any thread or child process starts. With `reexec` (the long-running `coalition run`)
/// and a passphrase in `COALITION_PASSPHRASE`, the process re-executes itself without it
/// so that `/proc/PID/environ` no longer shows it (see the module documentation); if that
/// fails, it says so on stderr and continues.
pub(super) fn take_env_passphrase(reexec: bool) {
    if let Some(fd) = std::env::var_os(PASSPHRASE_FD_VAR) {
        // Edition 2021: `remove_var` is safe; it is called before any thread exists.
        std::env::remove_var(PASSPHRASE_FD_VAR);
        match read_passphrase_fd(&fd.to_string_lossy()) {
            Ok(p) => *ENV_PASSPHRASE.lock().expect("not poisoned") = Some(p),
            Err(e) => {
                eprintln!("warning: cannot read the passphrase from {PASSPHRASE_FD_VAR}: {e}")
            }
        }
        return;
    }
    let Some(value) = std::env::var_os(PASSPHRASE_VAR) else {
        return;
    };
    std::env::remove_var(PASSPHRASE_VAR);
    let p = Zeroizing::new(value.to_string_lossy().into_owned());
    drop(Zeroizing::new(value.into_encoded_bytes()));
    if reexec {
        let e = reexec_without_passphrase(&p);
        eprintln!(
            "warning: could not restart without {PASSPHRASE_VAR} in the process's initial \
             environment ({e}); it stays readable in /proc/{}/environ by this user and root",
            std::process::id()
        );
    }
    *ENV_PASSPHRASE.lock().expect("not poisoned") = Some(p);
}

/// Reads a passphrase from pipe `fd` (inherited from the process image before the
/// re-execution).
fn read_passphrase_fd(fd: &str) -> std::io::Result<Zeroizing<String>> {
    let n: u32 = fd
        .parse()
        .map_err(|_| std::io::Error::other(format!("{fd:?} is not a file descriptor number")))?;
    let path = format!("/proc/self/fd/{n}");
    let mut file = std::fs::File::open(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !file.metadata()?.file_type().is_fifo() {
            return Err(std::io::Error::other(format!(
                "descriptor {n} is not a pipe"
            )));
        }
    }
    // Room for any real passphrase up front, so reading does not leave copies behind in
    // reallocated buffers.
    let mut p = Zeroizing::new(String::with_capacity(4096));
    Read::take(&mut file, 4096).read_to_string(&mut p)?;
    Ok(p)
}

/// Re-executes this program with the same arguments, `passphrase` in a pipe and
/// `COALITION_PASSPHRASE` gone from its environment. Returns only on failure.
#[cfg(target_os = "linux")]
fn reexec_without_passphrase(passphrase: &str) -> std::io::Error {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let (reader, mut writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    // A passphrase is far below the pipe's capacity, so this cannot block.
    if let Err(e) = writer.write_all(passphrase.as_bytes()) {
        return e;
    }
    drop(writer);
    if let Err(e) = nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    ) {
        return e.into();
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "coalition".into());
    // `/proc/self/exe` is this very program even if its file was replaced meanwhile.
    std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(PASSPHRASE_FD_VAR, reader.as_raw_fd().to_string())
        .exec()
}

#[cfg(not(target_os = "linux"))]
fn reexec_without_passphrase(_passphrase: &str) -> std::io::Error {
    std::io::Error::other("re-executing is implemented on Linux only")
}

/// The passphrase: the one taken from the environment at start-up
/// ([`take_env_passphrase`]), else an interactive prompt. Wiped from memory when dropped.
pub(super) fn passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(p) = ENV_PASSPHRASE.lock().expect("not poisoned").as_ref() {
        return Ok(p.clone());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set COALITION_PASSPHRASE or run in a terminal to be prompted");
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("Passphrase for the organisation key: ")
            .context("while reading the passphrase")?,
    );
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
        if again != p {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(p)
}

/// Opens the node of `home`. The store is encrypted with the key the key file seals, so
/// this takes the passphrase, as [`open_unlocked`] does; the organisation key is
/// dropped (wiped) once the store is open.
pub(super) async fn open(home: &Home) -> Result<Node> {
    crate::config::Config::load(home)?;
    let p = passphrase(false)?;
    let identity = Node::unlock_home(home, &p)?;
    Ok(Node::open(home.clone(), &identity).await?)
}

/// Opens the node of `home` with the passphrase and keeps the organisation key, for
/// commands that sign; the node holds the encryption secrets, as after
/// [`Node::unlock`]. The key file is opened once (its argon2id is the slow part).
pub(super) async fn open_unlocked(home: &Home) -> Result<(Node, Identity)> {
    // A missing or broken home is reported as such before the passphrase is asked for.
    crate::config::Config::load(home)?;
    let p = passphrase(false)?;
    Ok(Node::unlock_and_open(home.clone(), &p).await?)
}

/// Unlocks the organisation key of `home` with the passphrase, without opening the store
/// (signing a charter draft needs the key alone).
pub(super) fn unlock(home: &Home) -> Result<Identity> {
    crate::config::Config::load(home)?;
    let p = passphrase(false)?;
    Ok(Node::unlock_home(home, &p)?)
}

/// The charter id given to `--charter`, if any: 64 hex characters.
pub(super) fn charter_id(arg: Option<&str>) -> Result<Option<[u8; 32]>> {
    arg.map(|c| {
        hex::decode(c.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--charter takes the 64-hex-character charter id that `coalition charter show` prints"
                )
            })
    })
    .transpose()
}
