//! The node's store: SQLite through sqlx, in WAL mode, one file per node.
//!
//! Records are kept as the exact signed bytes; the columns queries need are extracted at
//! ingest and indexed. Every write is one `BEGIN IMMEDIATE` transaction, so a crash at
//! any moment leaves the store valid and what was acknowledged is never lost. Inserting a
//! record already held is a no-op. The file is marked with a SQLite `application_id`, so
//! a database that is not a Coalition store is refused before anything touches it.
//!
//! The store only stores: it takes records already signed and checked
//! ([`Prepared`], made by [`crate::check`]) and never signs, validates a schema or judges
//! an author. The one place it decodes a signed record is when it re-reads its own bytes
//! ([`Store::record`] and friends), to report a file altered behind its back as
//! [`StoreError::Corrupt`].
//!
//! The store is encrypted at rest with SQLCipher (`cipher`): the file, its WAL and any
//! journal are ciphertext, keyed by the store key sealed in the key file.
//!
//! Submodules: `cipher` (the store key, telling encrypted from plain files, encrypting
//! an old store in place), `open` (connection options, pools, create and open), `write` (the
//! transactions that insert), `upkeep` (background checkpoints, planner statistics),
//! `read` (lookups), `reader` (the read-only handle for the analysis side), `snapshot`
//! (a consistent copy for backups).

pub(crate) mod cipher;
mod open;
mod read;
mod reader;
mod snapshot;
mod unchecked;
mod upkeep;
mod write;
mod write_thread;

#[cfg(test)]
mod cipher_tests;
#[cfg(test)]
mod tests;

pub use cipher::{
    encrypting_path, is_encrypted, read_only_options, Encryption, StoreKey, PLAIN_HEADER,
};
pub use reader::Reader;
pub use snapshot::snapshot_into;
pub use write::OwnAppend;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::identity::OrgKey;
use crate::record::{self, Record, RecordId};

/// Re-exported for callers that named them through the store (benches, query tests);
/// the store itself only takes the [`Prepared`] records they make.
use crate::check::Prepared;

/// SQLite `application_id` of a Coalition store ("COLN").
pub const APPLICATION_ID: i64 = 0x434F_4C4E;
/// Rows per multi-row INSERT statement (14 columns each, under SQLite's 32766 binds).
/// Each statement is a round trip between the async side and the write connection's
/// thread, which waits for a core again after each one on a busy machine: 1 000 rows
/// take a third of the round trips 400 did.
const INSERT_CHUNK: usize = 1000;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a Coalition store.
    #[error("{path} is not a Coalition store ({reason}); point --home at a Coalition home or run `coalition init` in an empty directory")]
    NotAStore {
        /// The database file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The store is an unencrypted SQLite file, from before stores were encrypted.
    #[error("{path} is not encrypted: stop the node and run `coalition store encrypt` to encrypt it in place (nothing is lost; see docs/THREAT_MODEL.md about the old copy on the disk)")]
    Unencrypted {
        /// The database file.
        path: PathBuf,
    },
    /// The store key does not open the store: it was encrypted with another key.
    #[error("{path} does not open with the store key of this home's key file: the key file (key.enc) is from another home, or the store was replaced or damaged; put back the key.enc that was made with this store (from the same backup), or restore the home from a backup (`coalition restore BACKUP --home NEWDIR`)")]
    WrongKey {
        /// The database file.
        path: PathBuf,
    },
    /// Another process has the store open and is writing.
    #[error("{path} is in use ({what}): stop `coalition run` and any other command on this home, then try again; nothing was changed")]
    Busy {
        /// The database file.
        path: PathBuf,
        /// What could not be done.
        what: String,
    },
    /// `coalition store encrypt` found its encrypted copy unlike the store.
    #[error("{path} could not be encrypted: {reason}; the store was left as it was (run `coalition doctor`)")]
    EncryptionFailed {
        /// The database file.
        path: PathBuf,
        /// What differed.
        reason: String,
    },
    /// A file beside the store could not be read, written, synced or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `create` found a file already there.
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The database file.
        path: PathBuf,
    },
    /// No record matches an id or prefix.
    #[error("no record with id {0} in this store (see `coalition finding list`)")]
    NotFound(String),
    /// A prefix matches several records.
    #[error("id prefix {0} matches several records; give more characters")]
    Ambiguous(String),
    /// A stored record no longer verifies: the file was altered outside Coalition.
    #[error("stored record {id} is corrupt ({reason}); run `coalition verify` and restore the store from a backup or re-import a bundle")]
    Corrupt {
        /// Record id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// Schema migration failed.
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database failure.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A current-or-past finding as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FindingRow {
    /// Record id of this version.
    pub id: RecordId,
    /// Author organisation.
    pub author: OrgKey,
    /// Title.
    pub title: String,
    /// Country code.
    pub country: String,
    /// Category code.
    pub category: String,
    /// Incident start date.
    pub occurred_start: String,
    /// Audience code (0 private, 1 coalition, 2 members), before grants.
    pub audience: i64,
    /// Superseded by a retraction.
    pub retracted: bool,
    /// Author's creation time, ms.
    pub created_at: i64,
}

/// A stored record as the sync index sees it.
#[derive(Debug, Clone)]
pub struct Holding {
    /// Storage order.
    pub rowid: i64,
    /// Record id.
    pub id: RecordId,
    /// Author.
    pub author: OrgKey,
    /// Author's sequence number.
    pub seq: u64,
    /// Audience code (0 private, 1 coalition, 2 members).
    pub audience: i64,
    /// Payload schema as signed: `sealed/v1` for every sealed record, opened or not.
    pub schema: String,
    /// SignedRecord bytes, for grant records only.
    pub grant: Option<Vec<u8>>,
    /// Explicit audience members.
    pub members: Vec<OrgKey>,
    /// Size of its bytes.
    pub size: u64,
}

/// One of this organisation's records, as gossip announces it.
#[derive(Debug, Clone)]
pub struct Authored {
    /// Record id.
    pub id: RecordId,
    /// Author's sequence number.
    pub seq: u64,
    /// Audience code (0 private, 1 coalition, 2 members).
    pub audience: i64,
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    /// Readers (up to 4 connections).
    pool: SqlitePool,
    /// The one write connection: every write goes through it, so writers queue here
    /// instead of contending for SQLite's lock, and its page cache stays warm from one
    /// transaction to the next (with writes spread over the pool, each transaction
    /// started on a connection whose cache the others had made stale).
    writer: SqlitePool,
    /// Where the large write transactions run ([`write_thread`]).
    write_thread: write_thread::WriteThread,
    path: PathBuf,
    /// Records held when the planner statistics were last refreshed.
    analyzed_rows: Arc<AtomicI64>,
    /// Background checkpoints of the WAL (see [`Store::checkpoint_soon`]).
    checkpoints: Arc<Checkpoints>,
}

/// Record bytes written since the last background checkpoint, and whether one runs.
#[derive(Debug, Default)]
struct Checkpoints {
    pending: AtomicU64,
    running: AtomicBool,
}

fn id_col(r: &sqlx::sqlite::SqliteRow, i: usize) -> RecordId {
    let b: Vec<u8> = r.get(i);
    RecordId::from_slice(&b).unwrap_or(RecordId([0; 32]))
}

/// The member keys of an audience as SQL lists them: `group_concat(hex(member))` over
/// `audience_members` (comma-separated hex; `NULL` for none). A value that is not a key
/// is left out.
pub(crate) fn member_keys(concat: Option<String>) -> Vec<OrgKey> {
    concat
        .unwrap_or_default()
        .split(',')
        .filter_map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| OrgKey::from_bytes(&b).ok())
        })
        .collect()
}

fn key_col(r: &sqlx::sqlite::SqliteRow, i: usize) -> Result<OrgKey, StoreError> {
    let b: Vec<u8> = r.get(i);
    OrgKey::from_bytes(&b).map_err(|e| StoreError::Corrupt {
        id: hex::encode(&b),
        reason: e.to_string(),
    })
}

/// Decodes record bytes this store wrote earlier. They were checked before they were
/// stored, so a failure here means the file was altered: [`StoreError::Corrupt`].
pub fn reread(id: &RecordId, bytes: &[u8]) -> Result<Record, StoreError> {
    record::verify(bytes).map_err(|e| StoreError::Corrupt {
        id: id.to_hex(),
        reason: e.to_string(),
    })
}

/// As [`reread`], for a row that may be an opened sealed record: with `opened` (its
/// stored schema and the `opened` table's payload), the record's `schema` and `payload`
/// are the content this node opened, while `bytes` stay the sealed record as signed.
/// A row taken on its author's checkpoint whose signature is not verified yet
/// (`unchecked`, migration 0008) is decoded without its signature: verifying it is the
/// job of [`Store::unchecked`] and [`Store::settle_unchecked`], which remove the row if it
/// fails.
fn reread_opened(
    id: &RecordId,
    bytes: &[u8],
    opened: Option<(String, Vec<u8>)>,
    unchecked: bool,
) -> Result<Record, StoreError> {
    let mut r = if unchecked {
        record::decode_unverified(bytes).map_err(|e| StoreError::Corrupt {
            id: id.to_hex(),
            reason: e.to_string(),
        })?
    } else {
        reread(id, bytes)?
    };
    if let Some((schema, payload)) = opened {
        if r.schema != crate::sealed::SEALED_SCHEMA {
            return Err(StoreError::Corrupt {
                id: id.to_hex(),
                reason: format!("opened content stored for a {} record", r.schema),
            });
        }
        r.schema = schema;
        r.payload = payload;
    }
    Ok(r)
}

/// SQL: whether the record `r` (a row of `records`) was taken on its author's checkpoint
/// and its signature is not verified yet (migration 0008).
macro_rules! is_unchecked {
    () => {
        "EXISTS (SELECT 1 FROM unchecked u WHERE u.record = r.rowid)"
    };
}
use is_unchecked;

/// Whether column `col` of `row` ([`is_unchecked`]) marks a record whose signature is
/// not verified yet.
fn unchecked_col(row: &sqlx::sqlite::SqliteRow, col: usize) -> bool {
    row.get::<i64, _>(col) != 0
}

/// Appends `(?, ?, …)` binding each record id.
fn push_id_list<'a>(qb: &mut QueryBuilder<'a, Sqlite>, ids: impl Iterator<Item = &'a RecordId>) {
    qb.push("(");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(id.0.as_slice());
    }
    qb.push(")");
}

impl Store {
    /// Which of `ids` the query `select` (`SELECT id FROM … WHERE id IN `, completed
    /// with the list of ids) returns, asked [`INSERT_CHUNK`] ids at a time.
    async fn ids_among(
        &self,
        select: &'static str,
        ids: &[RecordId],
    ) -> Result<HashSet<RecordId>, StoreError> {
        let mut out = HashSet::new();
        for part in ids.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new(select);
            push_id_list(&mut qb, part.iter());
            let rows: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(&self.pool).await?;
            out.extend(rows.iter().filter_map(|b| RecordId::from_slice(b)));
        }
        Ok(out)
    }
}

fn opt_blob(id: Option<RecordId>) -> Option<Vec<u8>> {
    id.map(|i| i.0.to_vec())
}
