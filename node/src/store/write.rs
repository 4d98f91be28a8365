//! Writing: every write is one `BEGIN IMMEDIATE` transaction on the one write
//! connection, committed with `synchronous=FULL` before the call returns.
//!
//! Foreign records go through [`Store::insert`]; this organisation's own records through
//! [`Store::own_writer`], which holds the transaction open while the node signs on top of
//! the chain head it read, so two processes on one home can never reuse a sequence number.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{id_col, opt_blob, push_id_list, Prepared, Store, StoreError, INSERT_CHUNK};
use crate::finding::{FindingIndex, FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::now_ms;
use crate::record::{Audience, Record, RecordId};
use crate::sealed::SEALED_SCHEMA;

/// An open write transaction for one author's own records: the chain head read inside it
/// ([`OwnAppend::head`]), inserts ([`OwnAppend::insert`]) and [`OwnAppend::commit`].
/// Dropped without `commit`, it is rolled back and nothing it inserted is kept.
///
/// The store takes what it is given: signing on top of the head and checking each record
/// is the caller's job (`Node::append`), done while this transaction holds the write lock.
#[derive(Debug)]
#[must_use = "an OwnAppend that is not committed is rolled back"]
pub struct OwnAppend {
    tx: Transaction<'static, Sqlite>,
    author: OrgKey,
    head: Option<(u64, RecordId)>,
}

impl OwnAppend {
    /// The author's latest record as (seq, id), including what this transaction inserted;
    /// `None` for an empty chain.
    pub fn head(&self) -> Option<(u64, RecordId)> {
        self.head
    }

    /// Inserts `batch` inside the transaction; records already held are skipped. Returns
    /// the ids that were new.
    pub async fn insert(&mut self, batch: &[Prepared]) -> Result<Vec<RecordId>, StoreError> {
        let new = insert_all(&mut self.tx, batch, &HashSet::new()).await?;
        if let Some(last) = batch
            .iter()
            .map(|p| &p.record)
            .filter(|r| r.author == self.author)
            .max_by_key(|r| r.seq)
        {
            if self.head.is_none_or(|(seq, _)| last.seq > seq) {
                self.head = Some((last.seq, last.id));
            }
        }
        Ok(new)
    }

    /// Commits (with `synchronous=FULL`): when this returns, the records are durable and
    /// may be announced.
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}

impl Store {
    /// Inserts records in one transaction. Records already held are skipped. Returns
    /// the ids that were new. (Copies `batch` to the write thread: callers with a
    /// large batch of their own give it to [`Store::insert_vouched`] instead.)
    pub async fn insert(&self, batch: &[Prepared]) -> Result<Vec<RecordId>, StoreError> {
        self.insert_vouched(batch.into(), HashSet::new()).await
    }

    /// As [`Store::insert`], marking the records in `unchecked` as taken on their
    /// author's checkpoint, their signatures not yet verified (migration 0008): they are
    /// not served until [`Store::settle_unchecked`] says they verify. The transaction
    /// runs on the store's write thread ([`write_thread`](super::write_thread)).
    pub async fn insert_vouched(
        &self,
        batch: Arc<[Prepared]>,
        unchecked: HashSet<RecordId>,
    ) -> Result<Vec<RecordId>, StoreError> {
        let writer = self.writer.clone();
        let records = batch.clone();
        let new = self
            .write_thread
            .run(async move {
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                let new = insert_all(&mut tx, &records, &unchecked).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(new)
            })
            .await?;
        if !new.is_empty() {
            self.checkpoint_soon(batch.iter().map(|p| p.record.bytes.len() as u64).sum());
            self.refresh_stats_if_grown().await;
        }
        Ok(new)
    }

    /// Stores what this node opened of sealed records it already held unread (a grant
    /// brought it a key later, or the key file was not unlocked when they arrived): each
    /// row gets its inner schema and subject, the content is stored beside the sealed
    /// bytes and indexed, in one transaction. Records already opened, or not held, are
    /// skipped. Returns how many were opened.
    pub async fn open_held(&self, batch: &[Prepared]) -> Result<usize, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut fresh = Vec::with_capacity(batch.len());
        for p in batch {
            let Some(content) = &p.content else { continue };
            let done = sqlx::query(
                "UPDATE records SET schema = ?, subject = ? \
                 WHERE id = ? AND sealed = 1 AND schema = 'sealed/v1'",
            )
            .bind(content.schema.as_str())
            .bind(opt_blob(p.subject))
            .bind(p.record.id.0.as_slice())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                fresh.push(p);
            }
        }
        if !fresh.is_empty() {
            let before = max_finding_key(&mut tx).await?;
            let mut next_key = before + 1;
            let touched = insert_content(&mut tx, &fresh, &mut next_key).await?;
            index_findings(&mut tx, before, touched).await?;
        }
        tx.commit().await?;
        Ok(fresh.len())
    }

    /// Starts appending `author`'s own records: opens a `BEGIN IMMEDIATE` transaction and
    /// reads the head of `author`'s chain inside it (see [`OwnAppend`]).
    pub async fn own_writer(&self, author: &OrgKey) -> Result<OwnAppend, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let head =
            sqlx::query("SELECT seq, id FROM records WHERE author = ? ORDER BY seq DESC LIMIT 1")
                .bind(author.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| (r.get::<i64, _>(0) as u64, id_col(&r, 1)));
        Ok(OwnAppend {
            tx,
            author: *author,
            head,
        })
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
    unchecked: &HashSet<RecordId>,
) -> Result<Vec<RecordId>, StoreError> {
    let before = max_finding_key(tx).await?;
    let mut new = Vec::new();
    let mut touched = Vec::new();
    let mut next_key = before + 1;
    for chunk in batch.chunks(INSERT_CHUNK) {
        let done = insert_chunk(tx, chunk, unchecked, &mut next_key).await?;
        new.extend(done.new);
        touched.extend(done.touched);
    }
    if new.is_empty() {
        return Ok(new);
    }
    index_findings(tx, before, touched).await?;
    Ok(new)
}

async fn max_finding_key(tx: &mut Transaction<'_, Sqlite>) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM findings")
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Once per transaction: the full-text index and the rollup for the finding rows after
/// key `before`, and the supersession flags of the findings in `touched`.
async fn index_findings(
    tx: &mut Transaction<'_, Sqlite>,
    before: i64,
    mut touched: Vec<Vec<u8>>,
) -> Result<(), StoreError> {
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
    supersession_flags(tx, &touched).await
}

/// Recomputes the supersession flags (`is_head`, `retracted`) of the findings with the
/// raw ids in `ids` from the records that supersede them.
pub(super) async fn supersession_flags(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[Vec<u8>],
) -> Result<(), StoreError> {
    for part in ids.chunks(INSERT_CHUNK) {
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
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'_, Sqlite>,
    chunk: &[Prepared],
    unchecked: &HashSet<RecordId>,
    next_key: &mut i64,
) -> Result<Inserted, StoreError> {
    let received = now_ms();
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT OR IGNORE INTO records (id, bytes, author, seq, prev, created_at, schema, \
         audience, supersedes, epoch, subject, received_at, sealed) ",
    );
    qb.push_values(chunk, |mut b, p| {
        let r = &p.record;
        // An opened sealed record is stored under its inner schema (migration 0007).
        b.push_bind(r.id.0.to_vec())
            .push_bind(r.bytes.as_slice())
            .push_bind(r.author.as_bytes().to_vec())
            .push_bind(r.seq as i64)
            .push_bind(opt_blob(r.prev))
            .push_bind(r.created_at_ms)
            .push_bind(p.schema())
            .push_bind(r.audience.kind_code())
            .push_bind(opt_blob(r.supersedes))
            .push_bind(r.epoch.map(|e| e.to_vec()))
            .push_bind(opt_blob(p.subject))
            .push_bind(received)
            .push_bind(i64::from(r.schema == SEALED_SCHEMA));
    });
    qb.push(" RETURNING rowid, id");
    let returned = qb.build().fetch_all(&mut **tx).await?;
    let mut new: HashSet<RecordId> = HashSet::with_capacity(returned.len());
    let mut marked: Vec<i64> = Vec::new();
    for row in &returned {
        let id = id_col(row, 1);
        if unchecked.contains(&id) {
            marked.push(row.get(0));
        }
        new.insert(id);
    }
    // Records taken on their author's checkpoint: listed until their signatures verify.
    for part in marked.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::new("INSERT INTO unchecked (record) ");
        qb.push_values(part, |mut b, rowid| {
            b.push_bind(*rowid);
        });
        qb.build().execute(&mut **tx).await?;
    }
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

    let touched = insert_content(tx, &fresh, next_key).await?;
    Ok(Inserted {
        new: fresh.iter().map(|p| p.record.id).collect(),
        touched,
    })
}

/// The content rows of newly held (or newly opened) records: opened payloads, finding
/// rows and their side tables. Returns the findings whose supersession flags may change.
async fn insert_content(
    tx: &mut Transaction<'_, Sqlite>,
    fresh: &[&Prepared],
    next_key: &mut i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let opened: Vec<(&RecordId, &[u8])> = fresh
        .iter()
        .filter_map(|p| Some((&p.record.id, p.content.as_ref()?.payload.as_slice())))
        .collect();
    for part in opened.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::new("INSERT OR IGNORE INTO opened (id, payload) ");
        qb.push_values(part, |mut b, (id, payload)| {
            b.push_bind(id.0.to_vec()).push_bind(*payload);
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
    Ok(touched)
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
