//! Tests of the store: supersession, batches, statistics, checkpoints, migrations,
//! foreign files and id prefixes.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;

use super::open::options;
use super::upkeep::{CHECKPOINT_BYTES, STATS_MIN_ROWS};
use super::*;
use crate::check::{prepare, Prepared};
use crate::finding::{to_payload, FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::Identity;
use crate::record::{sign, Audience, Draft};

/// The key of every store these tests make (one fixed key, so a store reopens).
pub(super) fn key() -> StoreKey {
    StoreKey::new([0x5a; 32])
}

pub(super) fn finding_json(title: &str) -> serde_json::Value {
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
pub(super) fn finding_chain(
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

/// A coalition finding titled `title`, superseding nothing.
fn finding(org: &Identity, seq: u64, prev: Option<RecordId>, title: &str) -> Record {
    rec(org, seq, prev, FINDING_SCHEMA, finding_json(title), None)
}

/// A new version of `old`, written right after it in the chain.
fn correction(org: &Identity, seq: u64, old: &Record, title: &str) -> Record {
    rec(
        org,
        seq,
        Some(old.id),
        FINDING_SCHEMA,
        finding_json(title),
        Some(old.id),
    )
}

/// The titles of the current findings in `store`.
async fn titles(store: &Store) -> Vec<String> {
    store
        .findings(false)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.title)
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
    let v1 = finding(&org, 1, None, "First version");
    let v2 = correction(&org, 2, &v1, "Second version");
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
        let store = Store::create(&dir.path().join("s.db"), &key())
            .await
            .unwrap();
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
    let store = Store::create(&dir.path().join("s.db"), &key())
        .await
        .unwrap();
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
    // Every match is counted (`total`), however many statements the batch took.
    let page = crate::query::Page {
        limit: 10,
        cursor: None,
        with_total: true,
    };
    let hits = |text: &'static str| {
        let reader = store.reader();
        let q = search(text);
        let page = page.clone();
        async move {
            crate::query::findings(&reader, &q, &page)
                .await
                .unwrap()
                .total
                .expect("the total was asked for")
                .findings
        }
    };
    assert_eq!(hits("checkpoint").await, current);
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

/// The plans each reader connection of `store` uses for a lookup by rowid and by id: it
/// runs the lookups (a statement checks the schema and statistics are current before it
/// runs), then explains them.
async fn lookup_plans(store: &Store) -> Vec<String> {
    let by_rowid = "SELECT bytes FROM records WHERE rowid IN (5, 7, 9)";
    let by_id = "SELECT bytes FROM records WHERE id IN (x'00', x'01')";
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
}

/// A store whose statistics were taken while it was nearly empty says `records` holds a
/// row; once it has grown, every reader connection must plan with fresh ones, or lookups
/// by rowid or id scan the whole table. Also when the store is opened again with such
/// statistics: they are refreshed before the readers connect.
#[tokio::test]
async fn lookups_stay_indexed_as_a_store_grows_from_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let org = Identity::from_seed(&[9; 32]);
    let first = finding(&org, 1, None, "Finding 1");
    let created = Store::create(&path, &key()).await.unwrap();
    created
        .insert(&[prepare(&first.bytes).unwrap()])
        .await
        .unwrap();
    // Statistics of a one-record store, as `PRAGMA optimize` at open left them before
    // this version (on SQLite 3.46+), and as a store made then may still carry.
    sqlx::query("ANALYZE")
        .execute(&created.writer)
        .await
        .unwrap();
    created.close().await;
    let store = Store::open(&path, &key()).await.unwrap();
    let plans = || lookup_plans(&store);
    let before = plans().await;
    // The premise holds from SQLite 3.46 on, whose planner weighs a full scan against
    // IN-lookups by the statistics: with one-row ones it scans. SQLCipher 4.5 bundles
    // SQLite 3.45.3, whose planner always searches for these lookups, whatever the
    // statistics; there the assertions after the growth and the reopening still apply.
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    if minor >= 46 {
        assert!(
            before.iter().all(|p| p.contains("SCAN records")),
            "the premise: one-row statistics make SQLite {version} scan; {before:?}"
        );
    }
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
    store.close().await;

    // Opened again with the one-record statistics put back (the row count that starts
    // each `stat` set to 1): refreshed at open, so every reader searches.
    {
        use sqlx::ConnectOptions;
        let mut c = options(&path, &key()).connect().await.unwrap();
        sqlx::query(
            "UPDATE sqlite_stat1 SET stat = CASE WHEN instr(stat, ' ') > 0 \
             THEN '1' || substr(stat, instr(stat, ' ')) ELSE '1' END WHERE tbl = 'records'",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let reopened = Store::open(&path, &key()).await.unwrap();
    let reopened_plans = lookup_plans(&reopened).await;
    assert!(
        reopened_plans
            .iter()
            .all(|p| p.contains(": SEARCH records")),
        "{reopened_plans:?}"
    );
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_database_file_without_waiting_for_the_writers_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::create(&path, &key()).await.unwrap();
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
    let v1 = finding(&a, 1, None, "Original by A");
    let hijack = rec(
        &b,
        1,
        None,
        FINDING_SCHEMA,
        finding_json("Hijack by B"),
        Some(v1.id),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.db"), &key())
        .await
        .unwrap();
    store
        .insert(&[prepare(&v1.bytes).unwrap(), prepare(&hijack.bytes).unwrap()])
        .await
        .unwrap();
    let titles: Vec<String> = titles(&store).await;
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
    let v1 = finding(&org, 1, None, "Checkpoint raid");
    let v2 = correction(&org, 2, &v1, "Checkpoint raid at night");
    let other = finding(&org, 3, Some(v2.id), "Bridge protest");
    let path = dir.path().join("old.db");
    {
        let mut c = options(&path, &key())
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
            sqlx::query("INSERT INTO finding_actors (finding, actor_type) VALUES (?, 'police')")
                .bind(r.id.0.as_slice())
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let store = Store::open(&path, &key()).await.unwrap();
    assert!(store.integrity_check().await.unwrap().is_empty());
    let mut titles: Vec<String> = titles(&store).await;
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
    let none = crate::query::findings(&store.reader(), &search("checkpoint", "military"), &page)
        .await
        .unwrap();
    assert!(none.items.is_empty());
    // New findings after the migration are appended and indexed the same way.
    let later = finding(&org, 4, Some(other.id), "Market search");
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
    let err = Store::open(&path, &key()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not sqlite at all, just text").unwrap();
    assert!(matches!(
        Store::open(&junk, &key()).await,
        Err(StoreError::NotAStore { .. })
    ));
}

#[tokio::test]
async fn prefixes_resolve_uniquely() {
    let org = Identity::from_seed(&[8; 32]);
    let r = finding(&org, 1, None, "Prefix test");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.db"), &key())
        .await
        .unwrap();
    store.insert(&[prepare(&r.bytes).unwrap()]).await.unwrap();
    assert_eq!(store.resolve(&r.id.to_hex()[..9]).await.unwrap(), r.id);
    assert!(store.resolve("abc").await.is_err());
}

/// Own records: the chain head is read inside the transaction and follows what it
/// inserts; a writer dropped without `commit` keeps nothing, a committed one everything.
#[tokio::test]
async fn own_writer_keeps_nothing_unless_committed() {
    let org = Identity::from_seed(&[3; 32]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.db"), &key())
        .await
        .unwrap();
    let chain = finding_chain(&org, 1, 3, None, |i| finding_json(&format!("Own {i}")));
    let batch: Vec<Prepared> = chain.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
    {
        let mut own = store.own_writer(&org.key()).await.unwrap();
        assert_eq!(own.head(), None);
        assert_eq!(own.insert(&batch[..2]).await.unwrap().len(), 2);
        assert_eq!(own.head(), Some((2, chain[1].id)));
    }
    assert_eq!(store.count().await.unwrap(), 0, "dropped means rolled back");
    let mut own = store.own_writer(&org.key()).await.unwrap();
    assert_eq!(own.head(), None);
    assert_eq!(own.insert(&batch).await.unwrap().len(), 3);
    own.commit().await.unwrap();
    assert_eq!(
        store.chain_head(&org.key()).await.unwrap(),
        Some((3, chain[2].id))
    );
    let own = store.own_writer(&org.key()).await.unwrap();
    assert_eq!(own.head(), Some((3, chain[2].id)));
}

/// A sync whose peer drops mid-page, or a node shutting down, stops waiting for a write
/// it began: the transaction is on the write thread and still writes the page whole (or
/// nothing), never part of it, and the store takes the next write.
#[tokio::test]
async fn a_write_its_caller_stops_waiting_for_is_written_whole() {
    let org = Identity::generate();
    let records = finding_chain(&org, 1, 1_500, None, |i| {
        finding_json(&format!("Finding {i} given up on"))
    });
    let prepared: Vec<Prepared> = records.iter().map(|r| prepare(&r.bytes).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.db"), &key())
        .await
        .unwrap();
    let write = store.insert_vouched(prepared.clone().into(), HashSet::new());
    // Polled once (so handed to the write thread), then dropped.
    assert!(tokio::time::timeout(Duration::ZERO, write).await.is_err());
    // The next write queues behind it on the one write thread: every record is held by
    // then, and none twice.
    assert!(store.insert(&prepared).await.unwrap().is_empty());
    assert_eq!(store.count().await.unwrap(), prepared.len() as u64);
    assert_eq!(
        store.findings(false).await.unwrap().len(),
        prepared.len(),
        "each finding row written once"
    );
}
