//! The node's store: SQLite through sqlx, in WAL mode, one file per node.
//!
//! Records are kept as the exact signed bytes; the columns queries need are extracted at
//! ingest and indexed. Every write is one `BEGIN IMMEDIATE` transaction, so a crash at
//! any moment leaves the store valid and what was acknowledged is never lost. Inserting a
//! record already held is a no-op. The file is marked with a SQLite `application_id`, so
//! a database that is not a Coalition store is refused before anything touches it.

mod reader;

pub use reader::Reader;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use crate::finding::{FindingIndex, FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::now_ms;
use crate::record::{self, Audience, Record, RecordId};

/// SQLite `application_id` of a Coalition store ("COLN").
pub const APPLICATION_ID: i64 = 0x434F_4C4E;
/// Rows per multi-row INSERT statement (13 columns each, well under SQLite's 32766 binds).
const INSERT_CHUNK: usize = 400;

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

pub use crate::check::{prepare, prepare_verified, IngestError, Prepared};

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
    /// Payload schema.
    pub schema: String,
    /// SignedRecord bytes, for grant records only.
    pub grant: Option<Vec<u8>>,
    /// Explicit audience members.
    pub members: Vec<OrgKey>,
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

/// Record bytes inserted after which a background checkpoint starts (the WAL grows by
/// about three times this: the findings rows, indexes and full-text index come too).
const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Planner statistics are refreshed when `records` has grown by this factor since the
/// last refresh (and holds at least [`STATS_MIN_ROWS`]).
const STATS_GROWTH: i64 = 4;
/// Below this many records every plan is cheap; statistics are left alone.
const STATS_MIN_ROWS: i64 = 1000;

/// Refreshes the planner statistics (a sample of each index, so it takes well under a
/// second on large stores) and makes every connection load them.
///
/// Statistics taken when the store was nearly empty say each table holds a row or two;
/// with them SQLite scans the whole `records` table even for a lookup of a few rowids
/// (measured: 35 ms instead of 0.3 ms for 8 rowids in 50,000 records), and a node that
/// starts empty and receives a full sync kept them for as long as it ran. `ANALYZE` alone
/// does not reach the other connections: they load statistics with the schema, and
/// `ANALYZE` leaves the schema cookie as it is. Creating and dropping a view changes it,
/// so each connection reloads schema and statistics before its next statement (and
/// re-prepares its cached statements).
async fn refresh_stats(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut c = writer.acquire().await?;
    sqlx::query("PRAGMA analysis_limit = 1000")
        .execute(&mut *c)
        .await?;
    sqlx::query("ANALYZE").execute(&mut *c).await?;
    sqlx::query("CREATE VIEW IF NOT EXISTS statistics_reloaded AS SELECT 1")
        .execute(&mut *c)
        .await?;
    sqlx::query("DROP VIEW statistics_reloaded")
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        // 8 KiB pages for new stores (records are ~1.6 KB): import measured 15-20 % faster.
        .page_size(8192)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        // Statement journals (each multi-row INSERT keeps one) in memory, not temp files.
        .pragma("temp_store", "memory")
        // 32 MiB of page cache per connection: ids are random, so inserts touch index
        // pages all over the file; the 2 MiB default made large imports I/O-bound.
        .pragma("cache_size", "-32768")
        // Checkpoint every ~40 MiB of WAL instead of 4 MiB: a large import rewrites the
        // same index pages in many transactions, and each checkpoint copies them again.
        .pragma("wal_autocheckpoint", "10000")
        .foreign_keys(true)
}

/// The single write connection (see [`Store`]).
async fn writer_pool(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(1)
        // A write may wait for another one (an import batch takes a second or two).
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
}

/// Connections for reading; they never write.
async fn reader_pool(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
}

impl Store {
    /// Creates a new store file at `path`; refuses if anything is already there.
    pub async fn create(path: &Path) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::Exists {
                path: path.to_path_buf(),
            });
        }
        let writer = writer_pool(options(path).create_if_missing(true)).await?;
        sqlx::query(&format!("PRAGMA application_id = {APPLICATION_ID}"))
            .execute(&writer)
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('format', 'coalition-store/1')")
            .execute(&writer)
            .await?;
        let pool = reader_pool(options(path)).await?;
        Ok(Self {
            pool,
            writer,
            path: path.to_path_buf(),
            analyzed_rows: Arc::new(AtomicI64::new(0)),
            checkpoints: Arc::default(),
        })
    }

    /// Opens an existing store, checking it is a Coalition store, and applies any
    /// migrations this version ships.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let not_store = |reason: String| StoreError::NotAStore {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(not_store("no such file".into()));
        }
        // Check the header read-only before WAL mode or migrations could write anything.
        {
            use sqlx::ConnectOptions;
            let mut probe = SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .connect()
                .await
                .map_err(|e| not_store(e.to_string()))?;
            let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
                .fetch_one(&mut probe)
                .await
                .map_err(|e| not_store(format!("not an SQLite database: {e}")))?;
            if app_id != APPLICATION_ID {
                return Err(not_store(format!(
                    "SQLite application_id is {app_id:#x}, a Coalition store has {APPLICATION_ID:#x}"
                )));
            }
            sqlx::Connection::close(probe).await.ok();
        }
        let writer = writer_pool(options(path))
            .await
            .map_err(|e| not_store(e.to_string()))?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        // Planner statistics for the query indexes, refreshed when SQLite thinks they are
        // stale; analysis_limit bounds the work to a sample, so a large store opens fast.
        // The readers connect afterwards, so they load what this leaves.
        {
            let mut c = writer.acquire().await?;
            sqlx::query("PRAGMA analysis_limit = 1000")
                .execute(&mut *c)
                .await?;
            sqlx::query("PRAGMA optimize = 0x10002")
                .execute(&mut *c)
                .await?;
        }
        let pool = reader_pool(options(path)).await?;
        let rows: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM records")
            .fetch_one(&writer)
            .await?;
        Ok(Self {
            pool,
            writer,
            path: path.to_path_buf(),
            analyzed_rows: Arc::new(AtomicI64::new(rows)),
            checkpoints: Arc::default(),
        })
    }

    /// A read-only handle for queries, reports and the API.
    pub fn reader(&self) -> Reader {
        Reader::new(self.pool.clone())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Inserts records in one transaction. Records already held are skipped. Returns
    /// the ids that were new.
    pub async fn insert(&self, batch: &[Prepared]) -> Result<Vec<RecordId>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let new = insert_all(&mut tx, batch).await?;
        tx.commit().await?;
        if !new.is_empty() {
            self.checkpoint_soon(batch.iter().map(|p| p.record.bytes.len() as u64).sum());
            self.refresh_stats_if_grown().await;
        }
        Ok(new)
    }

    /// Copies committed WAL frames into the database file on a reader connection, in the
    /// background, once [`CHECKPOINT_BYTES`] of records were written since the last time.
    ///
    /// Left to the writer (SQLite's automatic checkpoint after a commit), copying ~80 MB
    /// of WAL held up the next write transaction for a fifth of a second at a time: a
    /// full sync spent a sixth of its writer's time checkpointing. A `PASSIVE` checkpoint
    /// on another connection runs beside the writer (it copies what was committed when it
    /// started and waits for no one); the writer's automatic checkpoint
    /// (`wal_autocheckpoint`) stays as the backstop that finishes the copy, so the WAL is
    /// reset and stays bounded however long writes go on.
    fn checkpoint_soon(&self, bytes: u64) {
        let c = &self.checkpoints;
        if c.pending.fetch_add(bytes, Ordering::Relaxed) + bytes < CHECKPOINT_BYTES
            || c.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        c.pending.store(0, Ordering::Relaxed);
        let (pool, checkpoints) = (self.pool.clone(), self.checkpoints.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await
            {
                Ok((busy, log, copied)) => tracing::debug!(
                    busy,
                    log,
                    copied,
                    took_ms = started.elapsed().as_millis() as u64,
                    "background checkpoint"
                ),
                // The frames stay in the WAL, which is as durable as the database file;
                // the next checkpoint copies them.
                Err(e) => tracing::debug!(error = %e, "background checkpoint failed"),
            }
            checkpoints.running.store(false, Ordering::Release);
        });
    }

    /// Refreshes the planner statistics once `records` has grown [`STATS_GROWTH`]-fold
    /// since they were taken (see [`refresh_stats`]). A failure is logged, not returned:
    /// what was just committed stays committed, and the old statistics still give
    /// correct (if slower) answers.
    async fn refresh_stats_if_grown(&self) {
        let rows: i64 = match sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM records")
            .fetch_one(&self.writer)
            .await
        {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "cannot count records for statistics"),
        };
        let analyzed = self.analyzed_rows.load(Ordering::Relaxed);
        if rows < STATS_MIN_ROWS || rows < analyzed.saturating_mul(STATS_GROWTH) {
            return;
        }
        self.analyzed_rows.store(rows, Ordering::Relaxed);
        let started = std::time::Instant::now();
        match refresh_stats(&self.writer).await {
            Ok(()) => tracing::debug!(
                rows,
                took_ms = started.elapsed().as_millis() as u64,
                "planner statistics refreshed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot refresh planner statistics"),
        }
    }

    /// Appends this organisation's own new records: reads the head of `author`'s chain and
    /// inserts what `build` signs on top of it, in one `BEGIN IMMEDIATE` transaction, so
    /// two processes can never reuse a sequence number. Committed (with
    /// `synchronous=FULL`) before it returns, i.e. before anything can announce it.
    pub async fn append_own<E: From<StoreError>>(
        &self,
        author: OrgKey,
        build: impl FnOnce(Option<(u64, RecordId)>) -> Result<Vec<Prepared>, E>,
    ) -> Result<Vec<Record>, E> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from)?;
        let head =
            sqlx::query("SELECT seq, id FROM records WHERE author = ? ORDER BY seq DESC LIMIT 1")
                .bind(author.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?
                .map(|r| (r.get::<i64, _>(0) as u64, id_col(&r, 1)));
        let prepared = build(head)?;
        insert_all(&mut tx, &prepared).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(prepared.into_iter().map(|p| p.record).collect())
    }

    /// The latest record of `author`'s chain: (seq, id).
    pub async fn chain_head(&self, author: &OrgKey) -> Result<Option<(u64, RecordId)>, StoreError> {
        let row =
            sqlx::query("SELECT seq, id FROM records WHERE author = ? ORDER BY seq DESC LIMIT 1")
                .bind(author.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, id_col(&r, 1))))
    }

    /// The record with `id`, re-verified from its stored bytes.
    pub async fn record(&self, id: &RecordId) -> Result<Record, StoreError> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT bytes FROM records WHERE id = ?")
            .bind(id.0.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        let bytes = bytes.ok_or_else(|| StoreError::NotFound(id.to_hex()))?;
        let r = record::verify(&bytes).map_err(|e| StoreError::Corrupt {
            id: id.to_hex(),
            reason: e.to_string(),
        })?;
        if r.id != *id {
            return Err(StoreError::Corrupt {
                id: id.to_hex(),
                reason: "stored bytes hash to a different id".into(),
            });
        }
        Ok(r)
    }

    /// Resolves a full id or a unique prefix of at least 8 hex characters.
    pub async fn resolve(&self, text: &str) -> Result<RecordId, StoreError> {
        let t = text.trim().to_ascii_lowercase();
        if let Ok(id) = RecordId::from_str(&t) {
            return Ok(id);
        }
        if t.len() < 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(format!(
                "{text:?} (give the full 64-character id or a prefix of at least 8 hex characters)"
            )));
        }
        // hex(id) LIKE 'prefix%' would scan; compare on the blob range instead.
        let even = &t[..t.len() & !1];
        let lo = hex::decode(even).expect("checked hex");
        let mut hi = lo.clone();
        hi.extend(std::iter::repeat_n(0xff, 32 - lo.len()));
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT id FROM records WHERE id >= ? AND id <= ? LIMIT 1000")
                .bind(lo.as_slice())
                .bind(hi.as_slice())
                .fetch_all(&self.pool)
                .await?;
        let matches: Vec<RecordId> = rows
            .iter()
            .filter(|b| hex::encode(b).starts_with(&t))
            .filter_map(|b| RecordId::from_slice(b))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(StoreError::NotFound(text.to_string())),
            _ => Err(StoreError::Ambiguous(text.to_string())),
        }
    }

    /// Findings, newest first: current versions only, retracted ones too if asked.
    pub async fn findings(&self, include_retracted: bool) -> Result<Vec<FindingRow>, StoreError> {
        let sql = "SELECT f.id, f.author, f.title, f.country, f.category, f.occurred_start, \
                   r.audience, f.retracted, f.created_at \
                   FROM findings f JOIN records r ON r.id = f.id \
                   WHERE f.is_head = 1 AND (f.retracted = 0 OR ?) \
                   ORDER BY f.occurred_start DESC, f.created_at DESC";
        let rows = sqlx::query(sql)
            .bind(include_retracted)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FindingRow {
                    id: id_col(r, 0),
                    author: key_col(r, 1)?,
                    title: r.get(2),
                    country: r.get(3),
                    category: r.get(4),
                    occurred_start: r.get(5),
                    audience: r.get(6),
                    retracted: r.get::<i64, _>(7) != 0,
                    created_at: r.get(8),
                })
            })
            .collect()
    }

    /// Records by the same author that supersede `id` (corrections and retractions).
    pub async fn superseded_by(
        &self,
        id: &RecordId,
        author: &OrgKey,
    ) -> Result<Vec<Record>, StoreError> {
        let ids: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT id FROM records WHERE supersedes = ? AND author = ? ORDER BY seq",
        )
        .bind(id.0.as_slice())
        .bind(author.as_bytes().as_slice())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for b in ids {
            if let Some(i) = RecordId::from_slice(&b) {
                out.push(self.record(&i).await?);
            }
        }
        Ok(out)
    }

    /// Records whose payload points at `id` (annexes of a finding, grants of a record).
    pub async fn about(&self, id: &RecordId, schema: &str) -> Result<Vec<Record>, StoreError> {
        let ids: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT id FROM records WHERE subject = ? AND schema = ? ORDER BY rowid",
        )
        .bind(id.0.as_slice())
        .bind(schema)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for b in ids {
            if let Some(i) = RecordId::from_slice(&b) {
                out.push(self.record(&i).await?);
            }
        }
        Ok(out)
    }

    /// Every record with one of `schemas`, re-verified, in storage order.
    pub async fn records_with_schemas(&self, schemas: &[&str]) -> Result<Vec<Record>, StoreError> {
        let mut qb = QueryBuilder::new("SELECT id, bytes FROM records WHERE schema IN (");
        let mut sep = qb.separated(", ");
        for s in schemas {
            sep.push_bind(*s);
        }
        qb.push(")");
        if !schemas.contains(&FINDING_SCHEMA) {
            // Lets SQLite use the partial index `records_schema` (migration 0006).
            qb.push(format_args!(" AND schema <> '{FINDING_SCHEMA}'"));
        }
        qb.push(" ORDER BY rowid");
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id = id_col(r, 0);
                let bytes: Vec<u8> = r.get(1);
                record::verify(&bytes).map_err(|e| StoreError::Corrupt {
                    id: id.to_hex(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Records by `author` stored after `rowid`, and the highest rowid stored now (what
    /// the next call passes as `rowid`): what gossip announces. Only `author`'s rows are
    /// read, through `records_author_seq`, however many others arrived meanwhile (a sync
    /// stores thousands of records a second that are not this node's own).
    pub async fn authored_since(
        &self,
        author: &OrgKey,
        rowid: i64,
    ) -> Result<(i64, Vec<Authored>), StoreError> {
        let upto = self.max_rowid().await?;
        let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT id, seq, audience FROM records \
             WHERE author = ? AND rowid > ? AND rowid <= ? ORDER BY rowid",
        )
        .bind(author.as_bytes().as_slice())
        .bind(rowid)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        let authored = rows
            .into_iter()
            .map(|(id, seq, audience)| Authored {
                id: RecordId::from_slice(&id).unwrap_or(RecordId([0; 32])),
                seq: seq as u64,
                audience,
            })
            .collect();
        Ok((upto.max(rowid), authored))
    }

    /// Records stored after `rowid` (sync's incremental index): rowid, id, author, seq,
    /// audience code, explicit members, and the payload of grants.
    pub async fn holdings_since(&self, rowid: i64) -> Result<Vec<Holding>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.rowid, r.id, r.author, r.seq, r.audience, r.schema, \
             CASE WHEN r.schema = 'grant/v1' THEN r.bytes END, \
             (SELECT group_concat(hex(member)) FROM audience_members m WHERE m.record = r.id) \
             FROM records r WHERE r.rowid > ? ORDER BY r.rowid",
        )
        .bind(rowid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let members: Option<String> = r.get(7);
                Ok(Holding {
                    rowid: r.get(0),
                    id: id_col(r, 1),
                    author: key_col(r, 2)?,
                    seq: r.get::<i64, _>(3) as u64,
                    audience: r.get(4),
                    schema: r.get(5),
                    grant: r.get(6),
                    members: members
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|h| {
                            hex::decode(h)
                                .ok()
                                .and_then(|b| OrgKey::from_bytes(&b).ok())
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// The bytes of records by storage position (`rowid`, as [`Store::holdings_since`]
    /// reported it) and id, in rowid order. Reading in rowid order walks the table's pages
    /// in file order, where looking ids up one by one lands on a random page each time (a
    /// full sync of 100,000 records spent most of the sender's reads there). A row whose
    /// id is not the expected one (or that is gone) is left out.
    pub async fn bytes_at(
        &self,
        rows: &[(i64, RecordId)],
    ) -> Result<Vec<(RecordId, Vec<u8>)>, StoreError> {
        let mut sorted = rows.to_vec();
        sorted.sort_unstable_by_key(|(rowid, _)| *rowid);
        let mut out = Vec::with_capacity(sorted.len());
        for part in sorted.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new("SELECT rowid, id, bytes FROM records WHERE rowid IN (");
            let mut sep = qb.separated(", ");
            for (rowid, _) in part {
                sep.push_bind(*rowid);
            }
            qb.push(") ORDER BY rowid");
            let expected: std::collections::HashMap<i64, RecordId> = part.iter().copied().collect();
            for r in qb.build().fetch_all(&self.pool).await? {
                let id = id_col(&r, 1);
                if expected.get(&r.get::<i64, _>(0)) == Some(&id) {
                    out.push((id, r.get(2)));
                }
            }
        }
        Ok(out)
    }

    /// Which of `ids` this store holds.
    pub async fn held(
        &self,
        ids: &[RecordId],
    ) -> Result<std::collections::HashSet<RecordId>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for part in ids.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new("SELECT id FROM records WHERE id IN ");
            push_id_list(&mut qb, part.iter());
            let rows: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(&self.pool).await?;
            out.extend(rows.iter().filter_map(|b| RecordId::from_slice(b)));
        }
        Ok(out)
    }

    /// Highest rowid stored (0 when empty).
    pub async fn max_rowid(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM records")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A value from the `meta` table.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets a value in the `meta` table.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every record's id and stored bytes, in the order they were stored.
    pub async fn all_records(&self) -> Result<Vec<(RecordId, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT id, bytes FROM records ORDER BY rowid")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (id_col(r, 0), r.get(1))).collect())
    }

    /// Number of records held.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Pairs of different records with the same author and seq (forks: equivocation).
    pub async fn forks(&self) -> Result<Vec<(OrgKey, u64, Vec<RecordId>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT author, seq, group_concat(hex(id)) FROM records \
             GROUP BY author, seq HAVING COUNT(*) > 1 ORDER BY author, seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ids: String = r.get(2);
                Ok((
                    key_col(r, 0)?,
                    r.get::<i64, _>(1) as u64,
                    ids.split(',')
                        .filter_map(|h| h.to_ascii_lowercase().parse().ok())
                        .collect(),
                ))
            })
            .collect()
    }

    /// SQLite's own integrity check of the file.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    /// The underlying pool (query module uses it read-only).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn id_col(r: &sqlx::sqlite::SqliteRow, i: usize) -> RecordId {
    let b: Vec<u8> = r.get(i);
    RecordId::from_slice(&b).unwrap_or(RecordId([0; 32]))
}

fn key_col(r: &sqlx::sqlite::SqliteRow, i: usize) -> Result<OrgKey, StoreError> {
    let b: Vec<u8> = r.get(i);
    OrgKey::from_bytes(&b).map_err(|e| StoreError::Corrupt {
        id: hex::encode(&b),
        reason: e.to_string(),
    })
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

fn opt_blob(id: Option<RecordId>) -> Option<Vec<u8>> {
    id.map(|i| i.0.to_vec())
}

/// What one chunk inserted, and the findings whose flags may have changed.
struct Inserted {
    new: Vec<RecordId>,
    touched: Vec<Vec<u8>>,
}

/// Inserts `batch` inside `tx`: every record row and side table, then, once for the whole
/// transaction, the full-text index and the rollup for the new findings and the
/// supersession flags of every finding the batch touched.
///
/// Once per transaction matters: FTS5 writes its pending terms to disk at every statement
/// savepoint, so indexing in each multi-row statement (as an insert trigger did) made a
/// tiny segment per statement and spent a third of the import merging them.
async fn insert_all(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Prepared],
) -> Result<Vec<RecordId>, StoreError> {
    let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM findings")
        .fetch_one(&mut **tx)
        .await?;
    let mut new = Vec::new();
    let mut touched = Vec::new();
    let mut next_key = before + 1;
    for chunk in batch.chunks(INSERT_CHUNK) {
        let done = insert_chunk(tx, chunk, &mut next_key).await?;
        new.extend(done.new);
        touched.extend(done.touched);
    }
    if new.is_empty() {
        return Ok(new);
    }
    // New finding rows are current until the flag update below says otherwise, so they
    // are counted here and uncounted by the update trigger when a flag turns them off.
    sqlx::query(
        "INSERT INTO finding_fts (rowid, title, summary) \
         SELECT rowid, title, summary FROM findings WHERE rowid > ? ORDER BY rowid",
    )
    .bind(before)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO finding_rollup (country, category, month, findings, affected) \
         SELECT country, category, substr(occurred_start, 1, 7), COUNT(*), \
                COALESCE(SUM(affected_count), 0) \
         FROM findings WHERE rowid > ? AND is_head = 1 AND retracted = 0 \
         GROUP BY 1, 2, 3 \
         ON CONFLICT (country, category, month) DO UPDATE SET \
             findings = findings + excluded.findings, \
             affected = affected + excluded.affected",
    )
    .bind(before)
    .execute(&mut **tx)
    .await?;
    touched.sort();
    touched.dedup();
    for part in touched.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::new(format!(
            "UPDATE findings SET \
             is_head = NOT EXISTS (SELECT 1 FROM records s WHERE s.supersedes = findings.id \
                AND s.author = findings.author AND s.schema = '{FINDING_SCHEMA}'), \
             retracted = EXISTS (SELECT 1 FROM records s WHERE s.supersedes = findings.id \
                AND s.author = findings.author AND s.schema = '{RETRACTION_SCHEMA}') \
             WHERE id IN ("
        ));
        let mut sep = qb.separated(", ");
        for id in part {
            sep.push_bind(id.as_slice());
        }
        qb.push(")");
        qb.build().execute(&mut **tx).await?;
    }
    Ok(new)
}

async fn insert_chunk(
    tx: &mut Transaction<'_, Sqlite>,
    chunk: &[Prepared],
    next_key: &mut i64,
) -> Result<Inserted, StoreError> {
    let received = now_ms();
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT OR IGNORE INTO records (id, bytes, author, seq, prev, created_at, schema, \
         audience, supersedes, epoch, subject, received_at) ",
    );
    qb.push_values(chunk, |mut b, p| {
        let r = &p.record;
        b.push_bind(r.id.0.to_vec())
            .push_bind(r.bytes.as_slice())
            .push_bind(r.author.as_bytes().to_vec())
            .push_bind(r.seq as i64)
            .push_bind(opt_blob(r.prev))
            .push_bind(r.created_at_ms)
            .push_bind(r.schema.as_str())
            .push_bind(r.audience.kind_code())
            .push_bind(opt_blob(r.supersedes))
            .push_bind(r.epoch.map(|e| e.to_vec()))
            .push_bind(opt_blob(p.subject))
            .push_bind(received);
    });
    qb.push(" RETURNING id");
    let returned: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
    let new: std::collections::HashSet<RecordId> = returned
        .iter()
        .filter_map(|b| RecordId::from_slice(b))
        .collect();
    if new.is_empty() {
        return Ok(Inserted {
            new: Vec::new(),
            touched: Vec::new(),
        });
    }
    // A record listed twice in one batch is inserted (and reported) once.
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<&Prepared> = chunk
        .iter()
        .filter(|p| new.contains(&p.record.id) && seen.insert(p.record.id))
        .collect();

    let members: Vec<(RecordId, OrgKey)> = fresh
        .iter()
        .flat_map(|p| match &p.record.audience {
            Audience::Members(m) => m.iter().map(|k| (p.record.id, *k)).collect(),
            _ => Vec::new(),
        })
        .collect();
    for part in members.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::new("INSERT OR IGNORE INTO audience_members (record, member) ");
        qb.push_values(part, |mut b, (id, k)| {
            b.push_bind(id.0.to_vec()).push_bind(k.as_bytes().to_vec());
        });
        qb.build().execute(&mut **tx).await?;
    }

    let findings: Vec<(&Record, &FindingIndex)> = fresh
        .iter()
        .filter_map(|p| p.finding.as_ref().map(|f| (&p.record, f)))
        .collect();
    insert_findings(tx, &findings, next_key).await?;

    // Supersession, whichever order the versions arrive in: the targets of new records,
    // and new findings that older-arrived records already supersede.
    let mut touched: Vec<Vec<u8>> = fresh
        .iter()
        .filter_map(|p| p.record.supersedes.map(|s| s.0.to_vec()))
        .collect();
    // New findings need their flags computed only if a record that arrived before them
    // already supersedes them (versions can arrive in any order).
    for part in findings.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::new(
            "SELECT DISTINCT supersedes FROM records WHERE supersedes IS NOT NULL AND supersedes IN ",
        );
        push_id_list(&mut qb, part.iter().map(|(r, _)| &r.id));
        let already: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
        touched.extend(already);
    }
    Ok(Inserted {
        new: fresh.iter().map(|p| p.record.id).collect(),
        touched,
    })
}

async fn insert_findings(
    tx: &mut Transaction<'_, Sqlite>,
    findings: &[(&Record, &FindingIndex)],
    next_key: &mut i64,
) -> Result<(), StoreError> {
    // Rows are appended in arrival order under integer keys this transaction assigns
    // (it holds the write lock, so nobody else can take them); the side tables refer to
    // the same keys.
    let first = *next_key;
    *next_key += findings.len() as i64;
    let keys: std::collections::HashMap<RecordId, i64> = findings
        .iter()
        .zip(first..)
        .map(|((r, _), k)| (r.id, k))
        .collect();
    for (n, part) in findings.chunks(INSERT_CHUNK / 2).enumerate() {
        let base = first + (n * (INSERT_CHUNK / 2)) as i64;
        let mut qb = QueryBuilder::new(
            "INSERT INTO findings (rowid, id, author, title, summary, language, country, \
             region, municipality, category, confidence, occurred_start, occurred_end, \
             date_precision, affected_count, lat, lon, created_at) ",
        );
        qb.push_values(part.iter().zip(base..), |mut b, ((r, f), key)| {
            b.push_bind(key)
                .push_bind(r.id.0.as_slice())
                .push_bind(r.author.as_bytes().as_slice())
                .push_bind(f.title.as_str())
                .push_bind(f.summary.as_str())
                .push_bind(f.language.as_str())
                .push_bind(f.country.as_str())
                .push_bind(f.region.as_deref())
                .push_bind(f.municipality.as_deref())
                .push_bind(f.category.as_str())
                .push_bind(f.confidence.as_str())
                .push_bind(f.occurred_start.as_str())
                .push_bind(f.occurred_end.as_deref())
                .push_bind(f.date_precision.as_str())
                .push_bind(f.affected_count)
                .push_bind(f.lat)
                .push_bind(f.lon)
                .push_bind(r.created_at_ms);
        });
        qb.build().execute(&mut **tx).await?;
    }
    let multi = |pick: fn(&FindingIndex) -> &Vec<String>| -> Vec<(i64, &str)> {
        findings
            .iter()
            .filter_map(|(r, f)| keys.get(&r.id).map(|k| (*k, pick(f))))
            .flat_map(|(k, values)| values.iter().map(move |v| (k, v.as_str())))
            .collect()
    };
    let tables = [
        ("finding_actors", "actor_type", multi(|f| &f.actor_types)),
        ("finding_groups", "grp", multi(|f| &f.groups)),
        ("finding_tags", "tag", multi(|f| &f.tags)),
    ];
    for (table, column, rows) in tables {
        for part in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new(format!(
                "INSERT OR IGNORE INTO {table} (finding, {column}) "
            ));
            qb.push_values(part, |mut b, (key, v)| {
                b.push_bind(*key).push_bind(*v);
            });
            qb.build().execute(&mut **tx).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::to_payload;
    use crate::identity::Identity;
    use crate::record::{sign, Draft};

    fn finding_json(title: &str) -> serde_json::Value {
        serde_json::json!({
            "title": title,
            "summary": "A summary long enough to pass the schema.",
            "language": "en",
            "occurred": {"start": "2025-01-02", "precision": "day"},
            "location": {"country": "GE", "region": "Tbilisi"},
            "category": "intimidation_harassment",
            "actors": [{"type": "police"}],
            "sources": [{"type": "own_observation"}],
            "confidence": "high"
        })
    }

    /// `n` findings of one chain, seq `first..`, after `prev`; `payload(i)` is each one's.
    fn finding_chain(
        org: &Identity,
        first: u64,
        n: u64,
        mut prev: Option<RecordId>,
        payload: impl Fn(u64) -> serde_json::Value,
    ) -> Vec<Record> {
        (first..first + n)
            .map(|i| {
                let r = rec(org, i, prev, FINDING_SCHEMA, payload(i), None);
                prev = Some(r.id);
                r
            })
            .collect()
    }

    fn rec(
        id: &Identity,
        seq: u64,
        prev: Option<RecordId>,
        schema: &str,
        v: serde_json::Value,
        sup: Option<RecordId>,
    ) -> Record {
        sign(
            id,
            seq,
            prev,
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes: sup,
                epoch: None,
                payload: to_payload(&v),
                created_at_ms: 1,
            },
        )
    }

    #[tokio::test]
    async fn supersession_is_order_independent_and_duplicates_are_no_ops() {
        let org = Identity::from_seed(&[4; 32]);
        let v1 = rec(
            &org,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("First version"),
            None,
        );
        let v2 = rec(
            &org,
            2,
            Some(v1.id),
            FINDING_SCHEMA,
            finding_json("Second version"),
            Some(v1.id),
        );
        let rt = rec(
            &org,
            3,
            Some(v2.id),
            RETRACTION_SCHEMA,
            serde_json::json!({"reason": "duplicate"}),
            Some(v2.id),
        );
        let all = [v1, v2.clone(), rt];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(&dir.path().join("s.db")).await.unwrap();
            for i in order {
                let p = prepare(&all[i].bytes).unwrap();
                assert_eq!(
                    store.insert(std::slice::from_ref(&p)).await.unwrap().len(),
                    1
                );
                assert!(
                    store.insert(&[p]).await.unwrap().is_empty(),
                    "duplicate inserted"
                );
            }
            assert!(store.findings(false).await.unwrap().is_empty());
            let with_retracted = store.findings(true).await.unwrap();
            assert_eq!(with_retracted.len(), 1);
            assert_eq!(with_retracted[0].id, v2.id);
            assert!(with_retracted[0].retracted);
            assert_eq!(store.count().await.unwrap(), 3);
        }
    }

    /// One transaction of several statements' worth of records, corrections included,
    /// leaves the full-text index and the rollup exactly as the rows say.
    #[tokio::test]
    async fn a_large_batch_is_indexed_and_counted_once() {
        let org = Identity::from_seed(&[7; 32]);
        let mut all = finding_chain(&org, 1, INSERT_CHUNK as u64 * 2, None, |i| {
            finding_json(&format!("Orig{i}x checkpoint"))
        });
        let mut prev = all.last().map(|r| r.id);
        // Corrections of the first 50 findings, in the last statement of the batch.
        for i in 0..50 {
            let seq = all.len() as u64 + 1;
            let r = rec(
                &org,
                seq,
                prev,
                FINDING_SCHEMA,
                finding_json(&format!("Corr{i}x checkpoint")),
                Some(all[i].id),
            );
            prev = Some(r.id);
            all.push(r);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s.db")).await.unwrap();
        let prepared: Vec<Prepared> = all.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
        assert_eq!(store.insert(&prepared).await.unwrap().len(), all.len());
        let current = INSERT_CHUNK as i64 * 2;
        assert_eq!(store.findings(false).await.unwrap().len() as i64, current);
        let counted: i64 = sqlx::query_scalar("SELECT SUM(findings) FROM finding_rollup")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(counted, current, "the rollup counts current findings once");
        let search = |text: &str| crate::query::Query {
            q: Some(text.into()),
            ..Default::default()
        };
        let page = crate::query::Page {
            limit: 1000,
            cursor: None,
            with_total: false,
        };
        let hits = |text: &'static str| {
            let reader = store.reader();
            let q = search(text);
            let page = page.clone();
            async move {
                crate::query::findings(&reader, &q, &page)
                    .await
                    .unwrap()
                    .items
                    .len()
            }
        };
        assert_eq!(hits("checkpoint").await as i64, current);
        assert_eq!(hits("orig7x").await, 0, "a corrected version is not found");
        assert_eq!(hits("corr7x").await, 1);
        assert_eq!(hits("orig799x").await, 1);
        // Segments: one per transaction, not one per statement.
        let segments: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT segid) FROM finding_fts_idx")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(segments, 1, "one full-text segment for one transaction");
    }

    /// A store opened while nearly empty gets statistics that say `records` holds a row;
    /// once it has grown, every reader connection must plan with fresh ones, or lookups by
    /// rowid or id scan the whole table.
    #[tokio::test]
    async fn lookups_stay_indexed_as_a_store_grows_from_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let org = Identity::from_seed(&[9; 32]);
        let first = rec(
            &org,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("Finding 1"),
            None,
        );
        let created = Store::create(&path).await.unwrap();
        created
            .insert(&[prepare(&first.bytes).unwrap()])
            .await
            .unwrap();
        created.close().await;
        let store = Store::open(&path).await.unwrap();
        let by_rowid = "SELECT bytes FROM records WHERE rowid IN (5, 7, 9)";
        let by_id = "SELECT bytes FROM records WHERE id IN (x'00', x'01')";
        // The plans each reader connection uses: it runs the lookups (a statement checks
        // the schema and statistics are current before it runs), then explains them.
        let plans = || async {
            let mut held = Vec::new();
            let mut out = Vec::new();
            for _ in 0..4 {
                let mut c = store.pool().acquire().await.unwrap();
                for sql in [by_rowid, by_id] {
                    sqlx::query(sql).fetch_all(&mut *c).await.unwrap();
                    let rows: Vec<(i64, i64, i64, String)> =
                        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                            .persistent(false)
                            .fetch_all(&mut *c)
                            .await
                            .unwrap();
                    out.push(format!("{sql}: {}", rows[0].3));
                }
                held.push(c);
            }
            out
        };
        let before = plans().await;
        assert!(
            before.iter().all(|p| p.contains("SCAN records")),
            "the premise: one-row statistics make SQLite scan; {before:?}"
        );
        let batch: Vec<Prepared> =
            finding_chain(&org, 2, STATS_MIN_ROWS as u64 + 9, Some(first.id), |i| {
                finding_json(&format!("Finding {i}"))
            })
            .iter()
            .map(|r| prepare(&r.bytes).unwrap())
            .collect();
        store.insert(&batch).await.unwrap();
        let after = plans().await;
        assert!(
            after.iter().all(|p| p.contains(": SEARCH records")),
            "{after:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_reach_the_database_file_without_waiting_for_the_writers_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::create(&path).await.unwrap();
        let org = Identity::from_seed(&[4; 32]);
        // ~5 KB records, CHECKPOINT_BYTES and a bit more: far from the writer's automatic
        // checkpoint (10 000 pages, ~80 MB of WAL), so only the background one copies.
        let n = CHECKPOINT_BYTES / 4_900 + 100;
        let chain = finding_chain(&org, 1, n, None, |i| {
            let mut v = finding_json(&format!("Long finding {i}"));
            v["summary"] = "Repeated identity checks at the checkpoint. "
                .repeat(110)
                .into();
            v
        });
        let batch: Vec<Prepared> = chain.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
        let bytes: u64 = batch.iter().map(|p| p.record.bytes.len() as u64).sum();
        assert!(bytes >= CHECKPOINT_BYTES, "the premise: {bytes} bytes");
        let file_len = || std::fs::metadata(&path).unwrap().len();
        let before = file_len();
        store.insert(&batch).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while file_len() < before + bytes {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {} bytes after 20 s ({bytes} bytes of records committed)",
                file_len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.count().await.unwrap(), n);
        // Readers see every record, whether it is in the WAL or the file.
        let last = store.record(&chain[chain.len() - 1].id).await.unwrap();
        assert_eq!(last.seq, n);
    }

    #[tokio::test]
    async fn another_authors_correction_has_no_effect() {
        let a = Identity::from_seed(&[5; 32]);
        let b = Identity::from_seed(&[6; 32]);
        let v1 = rec(
            &a,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("Original by A"),
            None,
        );
        let hijack = rec(
            &b,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("Hijack by B"),
            Some(v1.id),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s.db")).await.unwrap();
        store
            .insert(&[prepare(&v1.bytes).unwrap(), prepare(&hijack.bytes).unwrap()])
            .await
            .unwrap();
        let titles: Vec<String> = store
            .findings(false)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.title)
            .collect();
        assert!(titles.contains(&"Original by A".to_string()), "{titles:?}");
    }

    /// A store written by the version before migration 0004 (findings keyed by record id,
    /// `finding_text` for the full-text index) keeps every finding, flag, actor and
    /// searchable word when opened by this version.
    #[tokio::test]
    async fn findings_survive_the_move_to_arrival_order() {
        use sqlx::ConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let old_migrations = dir.path().join("migrations-0003");
        std::fs::create_dir(&old_migrations).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for name in [
            "0001_records.sql",
            "0002_supersession_index.sql",
            "0003_analysis.sql",
        ] {
            std::fs::copy(shipped.join(name), old_migrations.join(name)).unwrap();
        }
        let org = Identity::from_seed(&[9; 32]);
        let v1 = rec(
            &org,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("Checkpoint raid"),
            None,
        );
        let v2 = rec(
            &org,
            2,
            Some(v1.id),
            FINDING_SCHEMA,
            finding_json("Checkpoint raid at night"),
            Some(v1.id),
        );
        let other = rec(
            &org,
            3,
            Some(v2.id),
            FINDING_SCHEMA,
            finding_json("Bridge protest"),
            None,
        );
        let path = dir.path().join("old.db");
        {
            let mut c = options(&path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            sqlx::query(&format!("PRAGMA application_id = {APPLICATION_ID}"))
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::migrate::Migrator::new(old_migrations.as_path())
                .await
                .unwrap()
                .run(&mut c)
                .await
                .unwrap();
            for (r, head) in [(&v1, false), (&v2, true), (&other, true)] {
                let p = prepare(&r.bytes).unwrap();
                let f = p.finding.as_ref().unwrap();
                sqlx::query(
                    "INSERT INTO records (id, bytes, author, seq, prev, created_at, schema, \
                     audience, supersedes, received_at) VALUES (?, ?, ?, ?, ?, 1, ?, 1, ?, 1)",
                )
                .bind(r.id.0.as_slice())
                .bind(r.bytes.as_slice())
                .bind(r.author.as_bytes().as_slice())
                .bind(r.seq as i64)
                .bind(opt_blob(r.prev))
                .bind(r.schema.as_str())
                .bind(opt_blob(r.supersedes))
                .execute(&mut c)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO findings (id, author, title, summary, language, country, \
                     category, confidence, occurred_start, date_precision, created_at, is_head) \
                     VALUES (?, ?, ?, ?, 'en', ?, ?, ?, ?, 'day', 1, ?)",
                )
                .bind(r.id.0.as_slice())
                .bind(r.author.as_bytes().as_slice())
                .bind(f.title.as_str())
                .bind(f.summary.as_str())
                .bind(f.country.as_str())
                .bind(f.category.as_str())
                .bind(f.confidence.as_str())
                .bind(f.occurred_start.as_str())
                .bind(head)
                .execute(&mut c)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO finding_actors (finding, actor_type) VALUES (?, 'police')",
                )
                .bind(r.id.0.as_slice())
                .execute(&mut c)
                .await
                .unwrap();
            }
        }
        let store = Store::open(&path).await.unwrap();
        assert!(store.integrity_check().await.unwrap().is_empty());
        let mut titles: Vec<String> = store
            .findings(false)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.title)
            .collect();
        titles.sort();
        assert_eq!(titles, ["Bridge protest", "Checkpoint raid at night"]);
        let search = |text: &str, actor: &str| crate::query::Query {
            q: Some(text.into()),
            actor_type: vec![actor.into()],
            ..Default::default()
        };
        let page = crate::query::Page {
            limit: 10,
            cursor: None,
            with_total: false,
        };
        let found = crate::query::findings(&store.reader(), &search("checkpoint", "police"), &page)
            .await
            .unwrap();
        assert_eq!(
            found.items.iter().map(|f| f.id).collect::<Vec<_>>(),
            [v2.id],
            "only the current version is found"
        );
        let none =
            crate::query::findings(&store.reader(), &search("checkpoint", "military"), &page)
                .await
                .unwrap();
        assert!(none.items.is_empty());
        // New findings after the migration are appended and indexed the same way.
        let later = rec(
            &org,
            4,
            Some(other.id),
            FINDING_SCHEMA,
            finding_json("Market search"),
            None,
        );
        store
            .insert(&[prepare(&later.bytes).unwrap()])
            .await
            .unwrap();
        let found = crate::query::findings(&store.reader(), &search("market", "police"), &page)
            .await
            .unwrap();
        assert_eq!(found.items.len(), 1);
    }

    #[tokio::test]
    async fn foreign_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        {
            use sqlx::ConnectOptions;
            let mut c = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            sqlx::query("CREATE TABLE t (x)")
                .execute(&mut c)
                .await
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"this is not sqlite at all, just text").unwrap();
        assert!(matches!(
            Store::open(&junk).await,
            Err(StoreError::NotAStore { .. })
        ));
    }

    #[tokio::test]
    async fn prefixes_resolve_uniquely() {
        let org = Identity::from_seed(&[8; 32]);
        let r = rec(
            &org,
            1,
            None,
            FINDING_SCHEMA,
            finding_json("Prefix test"),
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s.db")).await.unwrap();
        store.insert(&[prepare(&r.bytes).unwrap()]).await.unwrap();
        assert_eq!(store.resolve(&r.id.to_hex()[..9]).await.unwrap(), r.id);
        assert!(store.resolve("abc").await.is_err());
    }
}
