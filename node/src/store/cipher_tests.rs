//! Tests of encryption at rest: what lies in the files under a store's directory, wrong
//! keys, unencrypted stores and encrypting them in place (also after an interruption).

use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::cipher::{encrypting_path, header, Header};
use super::tests::{finding_chain, finding_json, key};
use super::*;
use crate::check::prepare;
use crate::identity::Identity;

/// `n` findings whose summaries carry `marker`, stored in `store`; their ids.
async fn plant(store: &Store, marker: &str, n: u64) -> Vec<RecordId> {
    let org = Identity::from_seed(&[3; 32]);
    let chain = finding_chain(&org, 1, n, None, |i| {
        let mut v = finding_json(&format!("Finding {i}"));
        v["summary"] = format!("Witness named {marker} at the checkpoint.").into();
        v
    });
    let batch: Vec<_> = chain.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
    store.insert(&batch).await.unwrap()
}

/// Every file directly in `dir` that contains `needle`, with the offset of the hit.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).ok()?;
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            Some(format!("{} at byte {at}", path.display()))
        })
        .collect()
}

/// Waits until the store's WAL is gone: the last connection, closing on sqlx's worker
/// thread, checkpoints it into the file and removes it, possibly after `close` returned.
async fn settled(path: &Path) {
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!wal.exists(), "the WAL of a closed store stays");
}

/// Ids of every record, sorted.
async fn ids(store: &Store) -> Vec<RecordId> {
    let mut ids: Vec<RecordId> = store
        .all_records()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// An unencrypted copy of the encrypted store `from`, as a store written before
/// encryption existed would be (SQLCipher's documented way out: export to a database
/// attached with an empty key).
async fn decrypted_copy(from: &Path, to: &Path) {
    let mut c = SqliteConnectOptions::new()
        .filename(from)
        // Attached databases open with the main one's flags: `to` is created.
        .create_if_missing(true)
        .pragma("key", key().pragma())
        .pragma("cipher_page_size", super::cipher::CIPHER_PAGE_SIZE)
        .pragma("cipher_hmac_algorithm", super::cipher::CIPHER_HMAC)
        .connect()
        .await
        .unwrap();
    sqlx::query("ATTACH DATABASE ? AS plain KEY ''")
        .bind(to.to_str().unwrap())
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("SELECT sqlcipher_export('plain')")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query(&format!("PRAGMA plain.application_id = {APPLICATION_ID}"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("DETACH DATABASE plain")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    assert_eq!(header(to).unwrap(), Header::Plain, "the premise");
}

#[tokio::test]
async fn no_file_of_an_open_or_closed_store_holds_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coalition.db");
    let store = Store::create(&path, &key()).await.unwrap();
    let marker = "MARKER-at-rest-51d0c7";
    plant(&store, marker, 30).await;
    store.set_meta("note", marker).await.unwrap();
    // Open: the records are in the WAL (and maybe the file); neither shows them.
    assert!(
        Path::new(&format!("{}-wal", path.display())).exists(),
        "the premise: a WAL"
    );
    for needle in [marker.as_bytes(), b"SQLite format 3", b"CREATE TABLE"] {
        assert_eq!(files_containing(dir.path(), needle), Vec::<String>::new());
    }
    assert!(!format!("{store:?}").contains(&hex::encode([0x5a; 32])));
    store.close().await;
    for needle in [marker.as_bytes(), b"SQLite format 3", b"CREATE TABLE"] {
        assert_eq!(files_containing(dir.path(), needle), Vec::<String>::new());
    }
    // Reopened with the key, everything is there.
    let store = Store::open(&path, &key()).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 30);
    assert_eq!(store.meta("note").await.unwrap().as_deref(), Some(marker));
    let secure: i64 = sqlx::query_scalar("PRAGMA secure_delete")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(secure, 1, "secure_delete is on");
    // SQLCipher answers its own pragmas (and `page_size`) as text.
    let page: String = sqlx::query_scalar("PRAGMA cipher_page_size")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(page, "16384");
    let hmac: String = sqlx::query_scalar("PRAGMA cipher_hmac_algorithm")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(hmac, "HMAC_SHA256");
    store.close().await;
}

#[tokio::test]
async fn another_key_is_told_apart_from_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coalition.db");
    let store = Store::create(&path, &key()).await.unwrap();
    plant(&store, "x", 3).await;
    store.close().await;
    settled(&path).await;
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, &StoreKey::new([7; 32]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("key.enc"),
        "{text}"
    );
    assert!(!text.contains("file is not a database"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "left untouched");
    assert!(matches!(
        snapshot_into(&path, &dir.path().join("s.db"), &StoreKey::new([7; 32])).await,
        Err(StoreError::WrongKey { .. })
    ));
    assert!(matches!(
        Store::encrypt_in_place(&path, &StoreKey::new([7; 32])).await,
        Err(StoreError::WrongKey { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before, "left untouched");
    // The right key still opens it.
    Store::open(&path, &key()).await.unwrap().close().await;
}

#[tokio::test]
async fn an_unencrypted_store_is_refused_until_encrypted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("made.db");
    let store = Store::create(&enc, &key()).await.unwrap();
    let marker = "MARKER-migrate-0b81e2";
    plant(&store, marker, 40).await;
    let expected = ids(&store).await;
    store.close().await;
    let path = dir.path().join("coalition.db");
    decrypted_copy(&enc, &path).await;
    assert!(!files_containing(dir.path(), marker.as_bytes()).is_empty());

    // Opening it in clear is refused, with the command that fixes it, and nothing is
    // written.
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, &key()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unencrypted { .. }), "{err}");
    assert!(err.to_string().contains("coalition store encrypt"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!is_encrypted(&path).unwrap());

    let done = Store::encrypt_in_place(&path, &key()).await.unwrap();
    assert_eq!(done, Encryption::Encrypted { records: 40 });
    assert!(is_encrypted(&path).unwrap());
    std::fs::remove_file(&enc).unwrap();
    assert_eq!(
        files_containing(dir.path(), marker.as_bytes()),
        Vec::<String>::new()
    );
    assert!(!encrypting_path(&path).exists());
    let store = Store::open(&path, &key()).await.unwrap();
    assert_eq!(ids(&store).await, expected);
    assert!(store.integrity_check().await.unwrap().is_empty());
    // The full-text index came along (a virtual table and its shadow tables).
    let q = crate::query::Query {
        q: Some(marker.into()),
        ..Default::default()
    };
    let page = crate::query::Page {
        limit: 100,
        cursor: None,
        with_total: false,
    };
    let found = crate::query::findings(&store.reader(), &q, &page)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 40);
    store.close().await;
    assert_eq!(
        Store::encrypt_in_place(&path, &key()).await.unwrap(),
        Encryption::AlreadyEncrypted
    );
}

/// A run interrupted before its rename leaves the store in clear and a partial copy
/// beside it; the next run removes the copy and starts again. What was still in the WAL
/// (a crash, not a clean close) is carried over too.
#[tokio::test]
async fn an_interrupted_encryption_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("made.db");
    let store = Store::create(&enc, &key()).await.unwrap();
    plant(&store, "x", 25).await;
    let mut expected = ids(&store).await;
    store.close().await;
    let clear = dir.path().join("clear.db");
    decrypted_copy(&enc, &clear).await;

    // The store as a crash leaves it: the last write is in the WAL only.
    let crashed = tempfile::tempdir().unwrap();
    let path = crashed.path().join("coalition.db");
    {
        let mut c = SqliteConnectOptions::new()
            .filename(&clear)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0")
            .connect()
            .await
            .unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('late', 'in the WAL')")
            .execute(&mut c)
            .await
            .unwrap();
        for suffix in ["", "-wal"] {
            std::fs::copy(
                format!("{}{suffix}", clear.display()),
                format!("{}{suffix}", path.display()),
            )
            .unwrap();
        }
        c.close().await.unwrap();
    }
    assert!(
        std::fs::metadata(format!("{}-wal", path.display()))
            .unwrap()
            .len()
            > 0
    );
    // A partial copy from the interrupted run.
    let tmp = encrypting_path(&path);
    std::fs::write(&tmp, vec![0xA5; 3 * 8192]).unwrap();
    std::fs::write(format!("{}-journal", tmp.display()), b"partial").unwrap();

    let done = Store::encrypt_in_place(&path, &key()).await.unwrap();
    assert_eq!(done, Encryption::Encrypted { records: 25 });
    assert!(!tmp.exists());
    let names: Vec<String> = std::fs::read_dir(crashed.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["coalition.db"], "nothing else is left beside it");
    let store = Store::open(&path, &key()).await.unwrap();
    expected.sort();
    assert_eq!(ids(&store).await, expected);
    assert_eq!(
        store.meta("late").await.unwrap().as_deref(),
        Some("in the WAL")
    );
    store.close().await;
}
