//! A consistent copy of a store, taken while another process (`coalition run`) may be
//! writing to it: SQLite's `VACUUM INTO`, on a read-only connection of its own, copies
//! one read transaction's view of the database (the main file and whatever the WAL
//! holds) into a new file. Copying `coalition.db` and its `-wal` file by hand could
//! catch them between two writes; this cannot.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

use super::{Store, StoreError, APPLICATION_ID};

/// Writes a consistent snapshot of the store file `db` to `dest`, which must not exist or
/// must be an empty file. Refuses a file that is not a Coalition store.
pub async fn snapshot_into(db: &Path, dest: &Path) -> Result<(), StoreError> {
    let not_store = |reason: String| StoreError::NotAStore {
        path: db.to_path_buf(),
        reason,
    };
    if !db.is_file() {
        return Err(not_store("no such file".into()));
    }
    let dest = dest
        .to_str()
        .ok_or_else(|| not_store(format!("{} is not valid UTF-8", dest.display())))?;
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        // A writer's transaction may hold the lock for a moment.
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| not_store(e.to_string()))?;
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| not_store(format!("not an SQLite database: {e}")))?;
    if app_id != APPLICATION_ID {
        return Err(not_store(format!(
            "SQLite application_id is {app_id:#x}, a Coalition store has {APPLICATION_ID:#x}"
        )));
    }
    sqlx::query("VACUUM INTO ?")
        .bind(dest)
        .execute(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await.ok();
    Ok(())
}

impl Store {
    /// Removes a value from the `meta` table (nothing happens if it is absent).
    pub async fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM meta WHERE key = ?")
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_holds_what_the_wal_holds_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("coalition.db");
        let store = Store::create(&db).await.unwrap();
        // Written while the store stays open: the value is in the WAL, not yet in the
        // main file, so a copy of coalition.db alone would miss it.
        store.set_meta("node_salt", "abc").await.unwrap();
        let dest = dir.path().join("snap.db");
        snapshot_into(&db, &dest).await.unwrap();
        let copy = Store::open(&dest).await.unwrap();
        assert_eq!(
            copy.meta("node_salt").await.unwrap().as_deref(),
            Some("abc")
        );
        copy.delete_meta("node_salt").await.unwrap();
        assert_eq!(copy.meta("node_salt").await.unwrap(), None);
        assert_eq!(
            store.meta("node_salt").await.unwrap().as_deref(),
            Some("abc")
        );
        copy.close().await;
        store.close().await;

        let other = dir.path().join("other.db");
        std::fs::write(&other, b"not a database at all, just text").unwrap();
        let err = snapshot_into(&other, &dir.path().join("x.db"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        // An existing destination is never overwritten.
        let err = snapshot_into(&db, &dest).await;
        assert!(err.is_err());
    }
}
