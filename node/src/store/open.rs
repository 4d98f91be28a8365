//! Opening a store: the connection options every connection shares, the one write
//! connection and the reader pool, creating a new file and opening (and migrating) an
//! existing one after checking it is a Coalition store that the key opens.

use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::cipher::{self, StoreKey};
use super::write_thread::WriteThread;
use super::{Reader, Store, StoreError, APPLICATION_ID};

/// The options of every connection to the encrypted store at `path`. The key goes
/// first (sqlx sends `PRAGMA key` before any other), then the store's cipher settings
/// ([`cipher::keyed`]).
pub(super) fn options(path: &Path, key: &StoreKey) -> SqliteConnectOptions {
    cipher::keyed(clear_options(path), key)
}

/// The same options without the key: an unencrypted file (only ever for
/// [`Store::create_unencrypted`], which a benchmark compares against).
fn clear_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        // Statement journals (each multi-row INSERT keeps one) in memory, not temp files.
        .pragma("temp_store", "memory")
        // 32 MiB of page cache per connection: ids are random, so inserts touch index
        // pages all over the file; the 2 MiB default made large imports I/O-bound.
        .pragma("cache_size", "-32768")
        // Checkpoint every 10 000 pages (~160 MiB of WAL at 16 KiB pages) as a backstop to
        // `Store::checkpoint_soon` instead of 1 000: a large import rewrites the
        // same index pages in many transactions, and each checkpoint copies them again.
        .pragma("wal_autocheckpoint", "10000")
        // Deleted rows are overwritten, not left readable in free pages (SQLCipher
        // encrypts the pages either way; this also keeps them from a key found later).
        .pragma("secure_delete", "on")
        .foreign_keys(true)
}

/// Rows the write connection's thread may hand back ahead of the task that reads them
/// (sqlx buffers 50). The writer's results are small (`RETURNING rowid, id` of a
/// multi-row insert, one ~40-byte row per record); with 50 its thread stopped to wait
/// for the async side up to 160 times per 8 000-record batch, and on a busy machine each
/// wait cost a trip through the run queue before the thread ran again.
const WRITER_ROW_BUFFER: usize = 1024;

/// The single write connection (see [`Store`]).
/// Opened on the store's write thread (`write_thread`), so that sqlx starts the
/// connection's thread from there; kept open for the store's life (no idle timeout, no
/// maximum lifetime), so that it is never reopened from another thread.
async fn writer_pool(
    thread: &WriteThread,
    options: SqliteConnectOptions,
) -> Result<SqlitePool, sqlx::Error> {
    let options = options.row_buffer_size(WRITER_ROW_BUFFER);
    thread
        .run(async move {
            SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                // A write may wait for another one (an import batch takes a second or two).
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await
        })
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
    /// Creates a new store file at `path`, encrypted with `key`; refuses if anything is
    /// already there.
    pub async fn create(path: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        Self::create_with(path, Some(key)).await
    }

    /// A new store file at `path` **in clear**, otherwise exactly like [`Store::create`]:
    /// only for the import benchmark, which measures what encryption costs against it.
    /// No node ever uses one: [`Store::open`] refuses an unencrypted store.
    #[doc(hidden)]
    pub async fn create_unencrypted(path: &Path) -> Result<Self, StoreError> {
        Self::create_with(path, None).await
    }

    async fn create_with(path: &Path, key: Option<&StoreKey>) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::Exists {
                path: path.to_path_buf(),
            });
        }
        let options = |path: &Path| match key {
            Some(key) => options(path, key),
            None => clear_options(path),
        };
        let write_thread = WriteThread::start(path)?;
        let writer = writer_pool(&write_thread, options(path).create_if_missing(true)).await?;
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
            write_thread,
            path: path.to_path_buf(),
            analyzed_rows: Arc::new(AtomicI64::new(0)),
            checkpoints: Arc::default(),
        })
    }

    /// Opens an existing store, checking it is a Coalition store that `key` opens, and
    /// applies any migrations this version ships. An unencrypted store is refused with
    /// [`StoreError::Unencrypted`] (see `coalition store encrypt`), one `key` does not
    /// open with [`StoreError::WrongKey`].
    pub async fn open(path: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        let not_store = |reason: String| StoreError::NotAStore {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(not_store("no such file".into()));
        }
        // Check the header read-only before WAL mode or migrations could write anything.
        cipher::check(path, key).await?;
        let write_thread = WriteThread::start(path)?;
        let writer = writer_pool(&write_thread, options(path, key))
            .await
            .map_err(|e| not_store(e.to_string()))?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let rows: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM records")
            .fetch_one(&writer)
            .await?;
        // Planner statistics for the query indexes, refreshed if they are missing or
        // stale (a sample of each index, so a large store opens fast). The readers
        // connect afterwards, so they load what this leaves.
        super::upkeep::refresh_stats_if_stale(&writer, rows).await?;
        let pool = reader_pool(options(path, key)).await?;
        Ok(Self {
            pool,
            writer,
            write_thread,
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

    /// The underlying pool (query module uses it read-only).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
