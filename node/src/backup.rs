//! Backups of a whole home in one file, and restoring one into a new home.
//!
//! A backup is a tar archive of regular files: `manifest.json` first (format, creation
//! time, organisation key, size and SHA-256 of every other member), then `config.toml`,
//! `key.enc` (the key file as it is, still encrypted with the passphrase) and
//! `coalition.db` (a consistent snapshot of the store, one read transaction's view, so a
//! backup may be taken while `coalition run` writes; encrypted with the store key, as the
//! store is, so the backup file holds no plaintext record). The file is created new with mode
//! 0600 and renamed into place; an existing file is replaced only with `force`.
//!
//! Restoring refuses a target that is not empty, unpacks into a staging directory next to
//! it (mode 0700, files 0600), checks the manifest, every member's size and checksum, that
//! the config names the manifest's organisation, that the passphrase opens the key file
//! and its store key the store (a backup made before stores were encrypted has its store
//! encrypted there, in the staging directory), and only then renames the staging directory to the target: a bad backup
//! leaves nothing behind. Members that are not regular files, paths with `..`, absolute
//! paths and unknown or repeated names are refused. The restored store forgets the node
//! salt, so the restored node derives a libp2p peer id of its own at its first run
//! instead of cloning the original node's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, Home};
use crate::identity::{Identity, IdentityError, OrgKey};
use crate::store::{self, Store, StoreError, StoreKey};

/// The manifest's `format`.
pub const FORMAT: &str = "coalition-backup/1";
/// The first member of every backup.
pub const MANIFEST: &str = "manifest.json";
/// The members a backup holds besides the manifest.
pub const MEMBERS: [&str; 3] = ["config.toml", "key.enc", "coalition.db"];
/// Largest manifest read (it is a few hundred bytes).
const MAX_MANIFEST: u64 = 64 * 1024;
/// The meta key of the salt a node's libp2p key is derived with (see `net::node_keypair`).
const NODE_SALT: &str = "node_salt";

/// Errors making or restoring a backup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The output file exists and `force` was not given.
    #[error("{0} already exists; refusing to overwrite it (pass --force to replace it, or choose another -o FILE)")]
    Exists(PathBuf),
    /// The restore target holds something.
    #[error("{0} is not empty; restore only into a new or empty directory (choose another --home); nothing was changed")]
    TargetNotEmpty(PathBuf),
    /// The file is not a whole, intact Coalition backup.
    #[error("{file} is not a usable Coalition backup: {reason}; nothing was restored (use another copy of the backup and check it was copied whole)")]
    Invalid {
        /// The backup file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The home's config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The home's store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file in the backup does not open with the passphrase.
    #[error("cannot open the key file in the backup {file}: {source}; nothing was restored")]
    Key {
        /// The backup file.
        file: PathBuf,
        /// Why.
        source: IdentityError,
    },
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup holds, as its first member says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When the backup was made, ms since the epoch.
    pub created_at_ms: i64,
    /// The organisation whose home this is.
    pub org_key: OrgKey,
    /// Every other member by name.
    pub members: BTreeMap<String, Member>,
}

/// One member of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Removes a file when dropped unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).ok();
            } else {
                std::fs::remove_file(&p).ok();
            }
        }
    }
}

/// Creates `path` new (never through a link planted there), readable by its owner only.
fn create_private(path: &Path) -> Result<std::fs::File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io_err(path))
}

fn hash_file(path: &Path) -> Result<Member, BackupError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(Member {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_path(name)?;
    header.set_cksum();
    tar.append(&header, data)
}

/// Writes a backup of `home` to `out`; replaces an existing `out` only when `force`.
/// `key` is the home's store key (the store snapshot stays encrypted with it).
pub async fn create(
    home: &Home,
    out: &Path,
    force: bool,
    key: &StoreKey,
) -> Result<Manifest, BackupError> {
    let config = Config::load(home)?;
    if !force && out.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    let pid = std::process::id();

    // The store snapshot, next to the output (same file system, same owner-only mode).
    let db_tmp = dir.join(format!(".{name}.db-{pid}"));
    drop(create_private(&db_tmp)?);
    let _db_guard = Cleanup(Some(db_tmp.clone()));
    store::snapshot_into(&home.db_path(), &db_tmp, key).await?;

    let config_bytes = std::fs::read(home.config_path()).map_err(io_err(&home.config_path()))?;
    let key_bytes = std::fs::read(home.key_path()).map_err(io_err(&home.key_path()))?;
    let sum = |b: &[u8]| Member {
        size: b.len() as u64,
        sha256: hex::encode(Sha256::digest(b)),
    };
    let created_at_ms = crate::now_ms();
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at_ms,
        org_key: config.organisation.key,
        members: BTreeMap::from([
            (MEMBERS[0].to_string(), sum(&config_bytes)),
            (MEMBERS[1].to_string(), sum(&key_bytes)),
            (MEMBERS[2].to_string(), hash_file(&db_tmp)?),
        ]),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");

    let tmp = dir.join(format!(".{name}.tmp-{pid}"));
    let file = create_private(&tmp)?;
    let mut tmp_guard = Cleanup(Some(tmp.clone()));
    let mtime = u64::try_from(created_at_ms / 1000).unwrap_or(0);
    (|| {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(&file));
        append(
            &mut tar,
            MANIFEST,
            manifest_bytes.len() as u64,
            mtime,
            &manifest_bytes[..],
        )?;
        append(
            &mut tar,
            MEMBERS[0],
            config_bytes.len() as u64,
            mtime,
            &config_bytes[..],
        )?;
        append(
            &mut tar,
            MEMBERS[1],
            key_bytes.len() as u64,
            mtime,
            &key_bytes[..],
        )?;
        let db = std::fs::File::open(&db_tmp)?;
        append(
            &mut tar,
            MEMBERS[2],
            manifest.members[MEMBERS[2]].size,
            mtime,
            db,
        )?;
        tar.into_inner()?.flush()?;
        file.sync_all()
    })()
    .map_err(io_err(&tmp))?;
    if force {
        // Replaces whatever is at `out` (a link included) rather than writing through it.
        std::fs::rename(&tmp, out).map_err(io_err(out))?;
    } else {
        // A link fails if anything appeared at `out` meanwhile: never overwritten.
        std::fs::hard_link(&tmp, out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
            _ => BackupError::Io {
                path: out.to_path_buf(),
                source: e,
            },
        })?;
        std::fs::remove_file(&tmp).ok();
    }
    tmp_guard.0 = None;
    Ok(manifest)
}

/// Whether `dir` may receive a restored home: absent, or an empty directory.
fn check_target(dir: &Path) -> Result<(), BackupError> {
    match dir.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
            if entries.next().is_some() {
                Err(BackupError::TargetNotEmpty(dir.to_path_buf()))
            } else {
                Ok(())
            }
        }
        Ok(_) => Err(BackupError::TargetNotEmpty(dir.to_path_buf())),
    }
}

/// The member name of a tar path, if it is one plain file name.
fn plain_name(path: &Path) -> Result<&str, String> {
    let mut components = path.components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(n)), None) => n
            .to_str()
            .ok_or_else(|| format!("member name {} is not UTF-8", path.display())),
        _ if path.is_absolute() => Err(format!(
            "member {} has an absolute path (refused: a backup holds plain file names only)",
            path.display()
        )),
        _ if path.components().any(|c| c == Component::ParentDir) => Err(format!(
            "member {} leaves its directory with `..` (refused: a backup holds plain file names only)",
            path.display()
        )),
        _ => Err(format!(
            "member {} is not a plain file name (a backup holds plain file names only)",
            path.display()
        )),
    }
}

/// ` (DETAIL)` when the error's text is plain printable ASCII; the tar crate quotes the
/// bytes it failed on, which in a garbage file are anything.
fn printable(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        format!(" ({text})")
    } else {
        String::new()
    }
}

/// Unpacks and checks the archive `file` into the empty directory `dir`.
fn unpack(file: &Path, dir: &Path) -> Result<Manifest, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    let mut manifest: Option<Manifest> = None;
    let mut seen = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            format!(
                "it is not a tar archive, or the archive is damaged or truncated{}",
                printable(&e)
            )
        })?;
        let path = entry
            .path()
            .map_err(|e| format!("a member has an unreadable name ({e})"))?
            .into_owned();
        let name = plain_name(&path)?.to_string();
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(format!(
                "member {name} is a {kind:?} entry, not a regular file (refused: a backup holds regular files only)"
            ));
        }
        let Some(m) = &manifest else {
            if name != MANIFEST {
                return Err(format!("its first member is {name}, not {MANIFEST}"));
            }
            if entry.size() > MAX_MANIFEST {
                return Err(format!("{MANIFEST} is too large ({} bytes)", entry.size()));
            }
            let mut text = Vec::new();
            entry
                .read_to_end(&mut text)
                .map_err(|e| format!("{MANIFEST} cannot be read ({e})"))?;
            let parsed: Manifest = serde_json::from_slice(&text)
                .map_err(|e| format!("{MANIFEST} is not a valid manifest ({e})"))?;
            if parsed.format != FORMAT {
                return Err(format!(
                    "its format is {:?}; this version of coalition restores {FORMAT:?}",
                    parsed.format
                ));
            }
            let names: BTreeSet<&str> = parsed.members.keys().map(String::as_str).collect();
            if names != MEMBERS.iter().copied().collect() {
                return Err(format!(
                    "{MANIFEST} lists {names:?}; a backup holds exactly {MEMBERS:?}"
                ));
            }
            manifest = Some(parsed);
            continue;
        };
        let Some(expected) = m.members.get(&name) else {
            return Err(format!("member {name} is not one a backup holds"));
        };
        if !seen.insert(name.clone()) {
            return Err(format!("member {name} appears twice"));
        }
        if entry.size() != expected.size {
            return Err(format!(
                "member {name} has {} bytes, the manifest says {}",
                entry.size(),
                expected.size
            ));
        }
        let target = dir.join(&name);
        let out = create_private(&target).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(out);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| {
                format!(
                    "member {name} cannot be read{}: damaged or truncated",
                    printable(&e)
                )
            })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", target.display()))?;
        }
        out.into_inner()
            .map_err(|e| format!("{}: {e}", target.display()))?
            .sync_all()
            .map_err(|e| format!("{}: {e}", target.display()))?;
        if size != expected.size {
            return Err(format!(
                "member {name} ends after {size} of {} bytes: the file is truncated",
                expected.size
            ));
        }
        if hex::encode(hasher.finalize()) != expected.sha256 {
            return Err(format!(
                "member {name} does not match its SHA-256 in the manifest: it was altered or damaged"
            ));
        }
    }
    let Some(manifest) = manifest else {
        return Err(format!("it holds no {MANIFEST} (empty or not a backup)"));
    };
    let missing: Vec<&str> = MEMBERS
        .iter()
        .copied()
        .filter(|n| !seen.contains(*n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "members {missing:?} are missing: the file is truncated"
        ));
    }
    Ok(manifest)
}

/// Restores the backup `file` into `home`, which must be absent or an empty directory;
/// `passphrase` opens the key file in the backup, whose store key opens its store.
pub async fn restore(file: &Path, home: &Home, passphrase: &str) -> Result<Manifest, BackupError> {
    let target = home.dir();
    check_target(target)?;
    let invalid = |reason: String| BackupError::Invalid {
        file: file.to_path_buf(),
        reason,
    };
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("home");
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&staging).map_err(io_err(&staging))?;
    let mut guard = Cleanup(Some(staging.clone()));

    let manifest = unpack(file, &staging).map_err(invalid)?;
    let staged = Home::new(Some(staging.clone()));
    let config = Config::load(&staged)
        .map_err(|e| invalid(format!("its config.toml is not valid ({e})")))?;
    if config.organisation.key != manifest.org_key {
        return Err(invalid(format!(
            "its config.toml names organisation {}, the manifest {}",
            config.organisation.key, manifest.org_key
        )));
    }
    let identity =
        Identity::load(&staged.key_path(), passphrase).map_err(|source| BackupError::Key {
            file: file.to_path_buf(),
            source,
        })?;
    if identity.key() != manifest.org_key {
        return Err(invalid(format!(
            "its key file holds the key of {}, the manifest names {}",
            identity.key(),
            manifest.org_key
        )));
    }
    let key = StoreKey::of(&identity);
    drop(identity);
    // A backup from before stores were encrypted: encrypted here, before it is a home.
    if !store::is_encrypted(&staged.db_path())? {
        Store::encrypt_in_place(&staged.db_path(), &key)
            .await
            .map_err(|e| invalid(format!("its unencrypted store cannot be encrypted ({e})")))?;
    }
    let store = Store::open(&staged.db_path(), &key)
        .await
        .map_err(|e| invalid(format!("its store does not open ({e})")))?;
    // A node of its own: a new peer id at the first run, not a clone of the original's.
    store.delete_meta(NODE_SALT).await?;
    store.close().await;
    // Owner-only, whatever SQLite left beside the store. The last connection may still
    // be closing on sqlx's worker thread and remove its `-wal` and `-shm` files while
    // this runs (`close` can return first): a file that is gone needs no permissions.
    #[cfg(unix)]
    for entry in std::fs::read_dir(&staging).map_err(io_err(&staging))? {
        use std::os::unix::fs::PermissionsExt;
        let path = entry.map_err(io_err(&staging))?.path();
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(io_err(&path))?,
        }
    }
    // Atomic: the target is absent or empty (rename fails if something appeared in it).
    std::fs::rename(&staging, target).map_err(|e| match e.kind() {
        std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
            BackupError::TargetNotEmpty(target.to_path_buf())
        }
        _ => io_err(target)(e),
    })?;
    guard.0 = None;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(target))?;
    }
    Ok(manifest)
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
