//! Upkeep after writes, off the write path: background WAL checkpoints and refreshed
//! planner statistics. Neither can lose or change what was committed; a failure is
//! logged and the next write tries again.

use std::sync::atomic::Ordering;

use sqlx::SqlitePool;

use super::Store;

/// Record bytes inserted after which a background checkpoint starts (the WAL grows by
/// about three times this: the findings rows, indexes and full-text index come too).
pub(super) const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Planner statistics are refreshed when `records` has grown by this factor since the
/// last refresh (and holds at least [`STATS_MIN_ROWS`]).
const STATS_GROWTH: i64 = 4;
/// Below this many records every plan is cheap; statistics are left alone.
pub(super) const STATS_MIN_ROWS: i64 = 1000;

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

/// Refreshes the planner statistics of a store being opened (see [`refresh_stats`]) if it
/// holds [`STATS_MIN_ROWS`] records or more and its statistics are missing, or were taken
/// when `records` held a [`STATS_GROWTH`]th of its `rows` or less, or that many times more.
/// Returns whether it did.
///
/// This is what `PRAGMA optimize = 0x10002` did here before the store was encrypted, but
/// only on SQLite 3.46 and later, where the 0x10000 flag ("every table") first exists.
/// SQLCipher 4.5 bundles SQLite 3.45.3: there `optimize` on a fresh connection considers
/// only the tables that connection has already queried, none, so it never analyzed
/// anything, and a store whose statistics were taken nearly empty kept them across
/// restarts (`lookups_stay_indexed_as_a_store_grows_from_empty`). The rule here is this
/// module's own, so it holds whatever SQLite the build bundles.
pub(super) async fn refresh_stats_if_stale(
    writer: &SqlitePool,
    rows: i64,
) -> Result<bool, sqlx::Error> {
    if rows < STATS_MIN_ROWS {
        return Ok(false);
    }
    let has_stats: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'",
    )
    .fetch_one(writer)
    .await?;
    let taken: Option<i64> = if has_stats {
        // Each row's `stat` starts with the table's row count (estimated from a sample
        // under `analysis_limit`).
        sqlx::query_scalar(
            "SELECT max(CAST(stat AS INTEGER)) FROM sqlite_stat1 WHERE tbl = 'records'",
        )
        .fetch_one(writer)
        .await?
    } else {
        None
    };
    let stale = match taken {
        None => true,
        Some(t) => rows >= t.saturating_mul(STATS_GROWTH) || t >= rows.saturating_mul(STATS_GROWTH),
    };
    if stale {
        refresh_stats(writer).await?;
    }
    Ok(stale)
}

impl Store {
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
    pub(super) fn checkpoint_soon(&self, bytes: u64) {
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
    pub(super) async fn refresh_stats_if_grown(&self) {
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
}
