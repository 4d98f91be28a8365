//! A consistent copy of a store, taken while another process (`coalition run`) may be
//! writing to it: one read transaction's view of the database (the main file and
//! whatever the WAL holds), copied with SQLCipher's `sqlcipher_export` into a new file
//! attached with the store's own key, so the copy is as encrypted as the store. Copying
//! `coalition.db` and its `-wal` file by hand could catch them between two writes; this
//! cannot.
//!
//! `VACUUM INTO` (what this used before the store was encrypted) gives the same view,
//! but SQLCipher 4.5 writes its file so that the store's key and page size do not open
//! it. A copy that came out in clear anyway is removed and refused, never left as a
//! backup.

use std::path::Path;

use super::cipher::{self, Header, StoreKey};
use super::{Store, StoreError};

/// Writes a consistent snapshot of the store file `db` to `dest`, which must not exist or
/// must be an empty file, encrypted with the same `key`. Refuses a file that is not a
/// Coalition store that `key` opens.
pub async fn snapshot_into(db: &Path, dest: &Path, key: &StoreKey) -> Result<(), StoreError> {
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
    cipher::check(db, key).await?;
    if std::fs::metadata(dest).is_ok_and(|m| m.len() > 0) {
        return Err(StoreError::Exists {
            path: Path::new(dest).to_path_buf(),
        });
    }
    // Not read-only: the attached copy opens with this connection's flags. Nothing here
    // writes to the store itself.
    let mut conn = {
        use sqlx::ConnectOptions;
        cipher::read_write_options(db, key)
            .connect()
            .await
            .map_err(|e| not_store(e.to_string()))?
    };
    let exported = cipher::export_into(&mut conn, dest, key, "BEGIN").await;
    sqlx::Connection::close(conn).await.ok();
    exported?;
    if cipher::header(Path::new(dest))? == Header::Plain {
        std::fs::remove_file(dest).ok();
        return Err(StoreError::NotAStore {
            path: Path::new(dest).to_path_buf(),
            reason: "SQLCipher wrote the snapshot unencrypted; it was removed".into(),
        });
    }
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
        let key = StoreKey::random();
        let store = Store::create(&db, &key).await.unwrap();
        // Written while the store stays open: the value is in the WAL, not yet in the
        // main file, so a copy of coalition.db alone would miss it.
        store.set_meta("node_salt", "abc").await.unwrap();
        let dest = dir.path().join("snap.db");
        snapshot_into(&db, &dest, &key).await.unwrap();
        let copy = Store::open(&dest, &key).await.unwrap();
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
        let err = snapshot_into(&other, &dir.path().join("x.db"), &key)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        // An existing destination is never overwritten.
        let err = snapshot_into(&db, &dest, &key).await;
        assert!(err.is_err());
    }

    /// A backup of an encrypted store is as encrypted as the store: no plain SQLite
    /// header, no text of any record, and only the same key opens it.
    #[tokio::test]
    async fn snapshot_is_encrypted_with_the_stores_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("coalition.db");
        let key = StoreKey::random();
        let store = Store::create(&db, &key).await.unwrap();
        let marker = "SNAPSHOT-MARKER-7f3c9a";
        store.set_meta("node_salt", marker).await.unwrap();
        let dest = dir.path().join("snap.db");
        snapshot_into(&db, &dest, &key).await.unwrap();
        store.close().await;
        let bytes = std::fs::read(&dest).unwrap();
        assert!(!bytes.starts_with(b"SQLite format 3"));
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()));
        assert!(matches!(
            Store::open(&dest, &StoreKey::random()).await,
            Err(StoreError::WrongKey { .. })
        ));
        let copy = Store::open(&dest, &key).await.unwrap();
        assert_eq!(
            copy.meta("node_salt").await.unwrap().as_deref(),
            Some(marker)
        );
        copy.close().await;
    }
}
