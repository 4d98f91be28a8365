//! A read-only handle on the store, for the analysis side (queries, reports, the API):
//! it can read every table, and has no way to write.

use sqlx::SqlitePool;

/// Read-only access to a store's tables, over the store's reader connections.
#[derive(Debug, Clone)]
pub struct Reader {
    pool: SqlitePool,
}

impl Reader {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The reader connections, for SQL that only reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
