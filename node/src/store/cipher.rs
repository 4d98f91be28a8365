//! Encryption at rest: the store is an SQLCipher database, so everything SQLite writes
//! under the home (the database file, its WAL, rollback journals) is ciphertext, and a
//! stopped node's store gives nothing to whoever takes the disk without the passphrase.
//!
//! The key is the random 32-byte store key sealed in the key file beside the signing
//! seed ([`crate::identity::Identity::store_key`]), given to SQLCipher in its raw-key
//! form (`x'…'`), so no key derivation runs per connection; the passphrase's argon2id
//! runs once, when the key file is opened.
//!
//! A store written before encryption existed starts with SQLite's plain header. It is
//! never used in clear without the operator knowing: opening it fails with
//! [`StoreError::Unencrypted`], which says to run `coalition store encrypt`
//! ([`Store::encrypt_in_place`]). That migration copies the store into an encrypted file
//! beside it and renames it over the original only once the copy is complete, synced and
//! checked, so an interruption at any moment leaves either the old store or the new one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use zeroize::Zeroizing;

use super::{Store, StoreError, APPLICATION_ID};
use crate::identity::Identity;

/// The first 16 bytes of every unencrypted SQLite database.
pub const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// SQLCipher page size of every encrypted store: 16 KiB. SQLCipher's cost is mostly per
/// page (a fresh IV, a cipher and an HMAC context for every page read or written), so
/// larger pages cost less per record: the write stage of a 100 000-record import into an
/// encrypted store ran at 0.74-0.79 of the same into a store in clear with 8 KiB pages,
/// and at 0.93-1.01 with 16 KiB (benches/import.rs, line (e)). Records are ~1.6 KB.
/// SQLCipher needs it on every connection, before the first read.
pub(crate) const CIPHER_PAGE_SIZE: &str = "16384";

/// The HMAC that authenticates every page (SQLCipher 4's default is HMAC-SHA512).
/// HMAC-SHA256 is as strong for page authentication (a 256-bit tag, no length-extension
/// use) and runs on the SHA extensions of current x86 and ARM processors, where SHA-512
/// has none: the page HMAC was the larger part of what encryption cost an import.
pub(crate) const CIPHER_HMAC: &str = "HMAC_SHA256";

/// The key a store is encrypted with. Wiped from memory when dropped; never printed.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The store key sealed in an organisation's key file.
    pub fn of(identity: &Identity) -> Self {
        Self::new(*identity.store_key())
    }

    /// A fresh random key, for a scratch store nobody opens again (verifying a bundle).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self::new(bytes)
    }

    /// The value of `PRAGMA key` (and of `ATTACH … KEY`): SQLCipher's raw-key form, a
    /// string literal `"x'<64 hex>'"`, which it uses as the key as is, without PBKDF2.
    pub(super) fn pragma(&self) -> String {
        format!("\"x'{}'\"", hex::encode(*self.0))
    }

    /// The raw-key form without the SQL quotes, to bind as a parameter.
    fn raw(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("x'{}'", hex::encode(*self.0)))
    }
}

/// What the first bytes of a store file say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// Zero bytes long.
    Empty,
    /// SQLite's plain header: an unencrypted database.
    Plain,
    /// Anything else: SQLCipher's random salt, or not a database at all; `len` bytes.
    Other { len: u64 },
}

/// Reads the header of `path`.
pub(super) fn header(path: &Path) -> Result<Header, StoreError> {
    use std::io::Read;
    let io = |e: std::io::Error| StoreError::NotAStore {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut first = [0u8; 16];
    let mut got = 0;
    while got < first.len() {
        match file.read(&mut first[got..]).map_err(io)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(match len {
        0 => Header::Empty,
        _ if got == 16 && &first == PLAIN_HEADER => Header::Plain,
        _ => Header::Other { len },
    })
}

/// Whether the store file at `path` is encrypted (`false`: SQLite's plain header).
pub fn is_encrypted(path: &Path) -> Result<bool, StoreError> {
    Ok(header(path)? != Header::Plain)
}

/// A connection that only reads, with `key` (`None`: an unencrypted file).
pub(super) async fn probe(
    path: &Path,
    key: Option<&StoreKey>,
) -> Result<SqliteConnection, sqlx::Error> {
    match key {
        Some(key) => read_only_options(path, key).connect().await,
        None => {
            SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                // A writer's transaction may hold the lock for a moment.
                .busy_timeout(Duration::from_secs(10))
                .connect()
                .await
        }
    }
}

/// Options for a read-only connection of its own to the store at `path` (benchmarks and
/// tools that watch a running node's store), with the key it needs.
pub fn read_only_options(path: &Path, key: &StoreKey) -> SqliteConnectOptions {
    keyed(
        SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10)),
        key,
    )
}

/// Options for a connection of its own to the store at `path` that attaches a new file
/// (a snapshot); it does not change the store's settings.
pub(super) fn read_write_options(path: &Path, key: &StoreKey) -> SqliteConnectOptions {
    keyed(
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10)),
        key,
    )
}

/// Initialises OpenSSL (once per process) without its exit-time cleanup. By default
/// OpenSSL frees its global state in an `atexit` handler, while sqlx's connection threads
/// may still be closing SQLCipher connections, which free OpenSSL cipher contexts: a CLI
/// command that returned without closing its store then died at exit with "double free
/// or corruption" (openssl/openssl#3505). The process's memory goes back to the system
/// at exit anyway.
fn init_crypto() {
    openssl_sys::init();
}

/// `options` with the key and cipher settings every connection to an encrypted store
/// needs. Statement logging is off: sqlx would log the `PRAGMA key` statement (with the
/// key in it) at debug level, and `COALITION_LOG=debug` reaches it through tracing.
pub(super) fn keyed(options: SqliteConnectOptions, key: &StoreKey) -> SqliteConnectOptions {
    init_crypto();
    options
        .pragma("key", key.pragma())
        .pragma("cipher_page_size", CIPHER_PAGE_SIZE)
        .pragma("cipher_hmac_algorithm", CIPHER_HMAC)
        .disable_statement_logging()
}

/// Checks that `path` is a Coalition store that `key` opens, reading only. The errors
/// tell apart a store in clear ([`StoreError::Unencrypted`]), a store `key` does not open
/// ([`StoreError::WrongKey`]) and a file that is no Coalition store at all.
pub(super) async fn check(path: &Path, key: &StoreKey) -> Result<(), StoreError> {
    let not_store = |reason: String| StoreError::NotAStore {
        path: path.to_path_buf(),
        reason,
    };
    let header = header(path)?;
    let (mut conn, plain) = match header {
        Header::Empty => return Err(not_store("an empty file".into())),
        Header::Plain => (
            probe(path, None)
                .await
                .map_err(|e| not_store(e.to_string()))?,
            true,
        ),
        Header::Other { .. } => (
            probe(path, Some(key))
                .await
                .map_err(|e| not_store(e.to_string()))?,
            false,
        ),
    };
    let app_id = sqlx::query_scalar::<_, i64>("PRAGMA application_id")
        .fetch_one(&mut conn)
        .await;
    conn.close().await.ok();
    let app_id = match (app_id, header) {
        (Ok(id), _) => id,
        // SQLCipher pages are whole pages; a file of another length is no database.
        (Err(e), Header::Other { len }) if is_not_a_database(&e) && len % 512 == 0 => {
            return Err(StoreError::WrongKey {
                path: path.to_path_buf(),
            })
        }
        (Err(e), _) => return Err(not_store(format!("not an SQLite database: {e}"))),
    };
    if app_id != APPLICATION_ID {
        return Err(not_store(format!(
            "SQLite application_id is {app_id:#x}, a Coalition store has {APPLICATION_ID:#x}"
        )));
    }
    if plain {
        return Err(StoreError::Unencrypted {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// SQLite's `SQLITE_NOTADB`: what a wrong key looks like to SQLCipher.
fn is_not_a_database(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("26") || d.message().contains("file is not a database")
        }
        _ => false,
    }
}

/// The file [`Store::encrypt_in_place`] writes the encrypted copy to, beside the store.
pub fn encrypting_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".encrypting");
    path.with_file_name(name)
}

/// The file `path` with `suffix` appended (`-wal`, `-shm`, `-journal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// What [`Store::encrypt_in_place`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// The store was in clear and is now encrypted; it holds this many records.
    Encrypted {
        /// Records in the store, before and after (they are checked to be equal).
        records: i64,
    },
    /// The store was already encrypted (and opens with the key); nothing was changed.
    AlreadyEncrypted,
}

/// Copies the whole database of `conn` into the new (or empty) file `dest`, encrypted
/// with `key` and the store's cipher settings, in one transaction begun with `begin` (so the
/// copy is one consistent view of the database; `BEGIN IMMEDIATE` also keeps other
/// writers out). `sqlcipher_export` copies the schema, every row and the virtual tables;
/// the header fields it does not copy (application id, user version) are set after it.
/// `dest` is attached for the copy and detached after.
pub(super) async fn export_into(
    conn: &mut SqliteConnection,
    dest: &str,
    key: &StoreKey,
    begin: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("ATTACH DATABASE ? AS export KEY ?")
        .bind(dest)
        .bind(key.raw().as_str())
        .execute(&mut *conn)
        .await?;
    let copied = async {
        sqlx::query(&format!(
            "PRAGMA export.cipher_page_size = {CIPHER_PAGE_SIZE}"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "PRAGMA export.cipher_hmac_algorithm = {CIPHER_HMAC}"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(begin).execute(&mut *conn).await?;
        let user_version: i64 = sqlx::query_scalar("PRAGMA main.user_version")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query("SELECT sqlcipher_export('export')")
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!("PRAGMA export.application_id = {APPLICATION_ID}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!("PRAGMA export.user_version = {user_version}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if copied.is_err() {
        sqlx::query("ROLLBACK").execute(&mut *conn).await.ok();
    }
    let detached = sqlx::query("DETACH DATABASE export")
        .execute(&mut *conn)
        .await;
    copied?;
    detached.map(drop)
}

/// Rows of every table of schema `db` (`main` or an attached one), by table name.
async fn table_counts(
    conn: &mut SqliteConnection,
    db: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT name FROM \"{db}\".sqlite_master WHERE type = 'table' AND rootpage > 0 \
         ORDER BY name"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{db}\".\"{}\"",
            name.replace('"', "\"\"")
        ))
        .fetch_one(&mut *conn)
        .await?;
        counts.push((name, n));
    }
    Ok(counts)
}

impl Store {
    /// Encrypts the unencrypted store at `path` in place with `key`. The node must be
    /// stopped: nothing else may have the store open.
    ///
    /// Atomic: the store's WAL is checkpointed into it, the whole database is copied with
    /// `sqlcipher_export` into [`encrypting_path`] (one transaction), the copy is checked
    /// (every table holds as many rows as the original, `quick_check` passes) and synced,
    /// and only then renamed over the store, and the directory synced. Interrupted before
    /// the rename, the store is untouched and still in clear; the leftover copy is
    /// removed when this runs again, and the work redone. After it, the store is whole
    /// and encrypted. An encrypted store that `key` opens is left as it is.
    ///
    /// The old pages stay in the disk's free space until overwritten (and an SSD may keep
    /// them longer): the file system is not asked to erase them.
    pub async fn encrypt_in_place(path: &Path, key: &StoreKey) -> Result<Encryption, StoreError> {
        let tmp = encrypting_path(path);
        // A leftover copy is incomplete (the rename is the last step): start again.
        remove_if_present(&tmp)?;
        remove_if_present(&sibling(&tmp, "-journal"))?;
        match header(path)? {
            Header::Plain => {}
            Header::Empty => {
                return Err(StoreError::NotAStore {
                    path: path.to_path_buf(),
                    reason: "an empty file".into(),
                })
            }
            Header::Other { .. } => {
                check(path, key).await?;
                return Ok(Encryption::AlreadyEncrypted);
            }
        }
        // Refuses a plain database that is no Coalition store (it never says Ok here).
        match check(path, key).await {
            Err(StoreError::Unencrypted { .. }) => {}
            Err(e) => return Err(e),
            Ok(()) => unreachable!("a plain header never checks as encrypted"),
        }
        let busy = |what: &str| StoreError::Busy {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let mut plain = SqliteConnectOptions::new()
            .filename(path)
            // Attached databases open with the main one's flags: the copy is created.
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging()
            .connect()
            .await?;
        // Everything the WAL holds goes into the file first, and the WAL is emptied.
        let (blocked, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut plain)
            .await?;
        if blocked != 0 {
            plain.close().await.ok();
            return Err(busy("cannot checkpoint its WAL"));
        }
        let tmp_str = tmp.to_str().ok_or_else(|| StoreError::NotAStore {
            path: path.to_path_buf(),
            reason: format!("{} is not valid UTF-8", tmp.display()),
        })?;
        let copied = async {
            // One write transaction: no other writer can change the store mid-copy.
            export_into(&mut plain, tmp_str, key, "BEGIN IMMEDIATE").await?;
            // The copy, read back through a connection of its own with the key.
            let mut copy = probe(&tmp, Some(key)).await?;
            let before = table_counts(&mut plain, "main").await?;
            let after = table_counts(&mut copy, "main").await;
            let check = sqlx::query_scalar::<_, String>("PRAGMA quick_check")
                .fetch_one(&mut copy)
                .await;
            copy.close().await.ok();
            Ok::<_, sqlx::Error>((before, after?, check?))
        }
        .await;
        plain.close().await.ok();
        let (before, after, quick_check) = match copied {
            Ok(c) => c,
            Err(e) => {
                remove_if_present(&tmp).ok();
                return Err(e.into());
            }
        };
        if before != after || quick_check != "ok" {
            remove_if_present(&tmp)?;
            return Err(StoreError::EncryptionFailed {
                path: path.to_path_buf(),
                reason: format!(
                    "the encrypted copy differs from it (rows per table {before:?} and {after:?}, check {quick_check})"
                ),
            });
        }
        let records = before
            .iter()
            .find(|(t, _)| t == "records")
            .map_or(0, |(_, n)| *n);
        // The copy opens with the key and is a Coalition store.
        check(&tmp, key).await?;
        sync_file(&tmp)?;
        // With every connection closed, the checkpointed WAL is empty (SQLite removes it
        // on the last close). A WAL or index left beside the new file would be applied
        // to it, so they go first; a WAL that still holds frames stops everything.
        let wal = sibling(path, "-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            remove_if_present(&tmp)?;
            return Err(busy("its WAL filled again while it was copied"));
        }
        remove_if_present(&wal)?;
        remove_if_present(&sibling(path, "-shm"))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        sync_dir(path)?;
        Ok(Encryption::Encrypted { records })
    }
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Syncs the directory holding `path`, so a rename in it is durable.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_file(dir)
}
