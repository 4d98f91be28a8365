//! Lookups on the reader connections: records by id or prefix, chains, findings as
//! listed, what the sync index and gossip need, meta values, and the file's own
//! integrity check. Records read back are decoded with [`super::reread`], which reports
//! bytes altered outside Coalition as [`StoreError::Corrupt`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use sqlx::{QueryBuilder, Row};

use super::{
    id_col, is_unchecked, key_col, push_id_list, reread_opened, unchecked_col, Authored,
    FindingRow, Holding, Store, StoreError, INSERT_CHUNK,
};
use crate::finding::FINDING_SCHEMA;
use crate::identity::OrgKey;
use crate::record::{Record, RecordId};

impl Store {
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
    ///
    /// An opened sealed record comes with the content this node opened (its `bytes` stay
    /// the sealed record as signed).
    pub async fn record(&self, id: &RecordId) -> Result<Record, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT r.bytes, r.schema, o.payload, ",
            is_unchecked!(),
            " FROM records r LEFT JOIN opened o ON o.id = r.id WHERE r.id = ?"
        ))
        .bind(id.0.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| StoreError::NotFound(id.to_hex()))?;
        let bytes: Vec<u8> = row.get(0);
        let opened = row
            .get::<Option<Vec<u8>>, _>(2)
            .map(|payload| (row.get::<String, _>(1), payload));
        let r = reread_opened(id, &bytes, opened, unchecked_col(&row, 3))?;
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
        self.records_by_ids(ids).await
    }

    /// The records with the raw ids in `ids`, in that order, each re-read and checked.
    async fn records_by_ids(&self, ids: Vec<Vec<u8>>) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
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
        self.records_by_ids(ids).await
    }

    /// Every record with one of `schemas`, re-verified, in storage order.
    pub async fn records_with_schemas(&self, schemas: &[&str]) -> Result<Vec<Record>, StoreError> {
        let mut qb = QueryBuilder::new(concat!(
            "SELECT r.id, r.bytes, r.schema, o.payload, ",
            is_unchecked!(),
            " FROM records r LEFT JOIN opened o ON o.id = r.id WHERE r.schema IN ("
        ));
        let mut sep = qb.separated(", ");
        for s in schemas {
            sep.push_bind(*s);
        }
        qb.push(")");
        if !schemas.contains(&FINDING_SCHEMA) {
            // Lets SQLite use the partial index `records_schema` (migration 0006).
            qb.push(format_args!(" AND r.schema <> '{FINDING_SCHEMA}'"));
        }
        qb.push(" ORDER BY r.rowid");
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id = id_col(r, 0);
                let bytes: Vec<u8> = r.get(1);
                let opened = r
                    .get::<Option<Vec<u8>>, _>(3)
                    .map(|payload| (r.get::<String, _>(2), payload));
                reread_opened(&id, &bytes, opened, unchecked_col(r, 4))
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
            "SELECT r.rowid, r.id, r.author, r.seq, r.audience, \
             CASE WHEN r.sealed = 1 THEN 'sealed/v1' ELSE r.schema END, \
             CASE WHEN r.schema = 'grant/v1' THEN r.bytes END, \
             (SELECT group_concat(hex(member)) FROM audience_members m WHERE m.record = r.id), \
             length(r.bytes) FROM records r WHERE r.rowid > ? ORDER BY r.rowid",
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
                    members: super::member_keys(members),
                    size: r.get::<i64, _>(8) as u64,
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
            // A record taken on a checkpoint is served once its signature verified.
            let mut qb = QueryBuilder::new(concat!(
                "SELECT rowid, id, bytes FROM records r WHERE NOT ",
                is_unchecked!(),
                " AND rowid IN ("
            ));
            let mut sep = qb.separated(", ");
            for (rowid, _) in part {
                sep.push_bind(*rowid);
            }
            qb.push(") ORDER BY rowid");
            let expected: HashMap<i64, RecordId> = part.iter().copied().collect();
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
    pub async fn held(&self, ids: &[RecordId]) -> Result<HashSet<RecordId>, StoreError> {
        self.ids_among("SELECT id FROM records WHERE id IN ", ids)
            .await
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

    /// Every record's id and stored bytes, in the order they were stored.
    pub async fn all_records(&self) -> Result<Vec<(RecordId, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT id, bytes FROM records ORDER BY rowid")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (id_col(r, 0), r.get(1))).collect())
    }

    /// Every record in storage order, re-read from its bytes, with whether it is sealed:
    /// an opened one comes with the content this node opened (as [`Store::record`]), one
    /// it could not open as the sealed record it is.
    pub async fn all_records_opened(&self) -> Result<Vec<(Record, bool)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT r.id, r.bytes, r.schema, o.payload, r.sealed, ",
            is_unchecked!(),
            " FROM records r LEFT JOIN opened o ON o.id = r.id ORDER BY r.rowid"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id = id_col(r, 0);
                let bytes: Vec<u8> = r.get(1);
                let opened = r
                    .get::<Option<Vec<u8>>, _>(3)
                    .map(|payload| (r.get::<String, _>(2), payload));
                Ok((
                    reread_opened(&id, &bytes, opened, unchecked_col(r, 5))?,
                    r.get::<i64, _>(4) != 0,
                ))
            })
            .collect()
    }

    /// Sealed records held unread (`sealed/v1` rows this node did not open), as signed;
    /// with `ids`, only those among them.
    pub async fn unopened_sealed(
        &self,
        ids: Option<&[RecordId]>,
    ) -> Result<Vec<Record>, StoreError> {
        let sql = concat!(
            "SELECT r.id, r.bytes, ",
            is_unchecked!(),
            " FROM records r WHERE r.schema = 'sealed/v1'"
        );
        let rows = match ids {
            None => sqlx::query(sql).fetch_all(&self.pool).await?,
            Some(ids) => {
                let mut rows = Vec::new();
                for part in ids.chunks(INSERT_CHUNK) {
                    let mut qb = QueryBuilder::new(format!("{sql} AND id IN "));
                    push_id_list(&mut qb, part.iter());
                    rows.extend(qb.build().fetch_all(&self.pool).await?);
                }
                rows
            }
        };
        rows.iter()
            .map(|r| {
                reread_opened(
                    &id_col(r, 0),
                    &r.get::<Vec<u8>, _>(1),
                    None,
                    unchecked_col(r, 2),
                )
            })
            .collect()
    }

    /// The grant records held for each of `ids` (by any author: the caller keeps only the
    /// record author's own).
    pub async fn grants_about(
        &self,
        ids: &[RecordId],
    ) -> Result<HashMap<RecordId, Vec<Record>>, StoreError> {
        let mut out: HashMap<RecordId, Vec<Record>> = HashMap::new();
        for part in ids.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new(concat!(
                "SELECT r.subject, r.id, r.bytes, ",
                is_unchecked!(),
                " FROM records r WHERE r.schema = 'grant/v1' AND r.subject IN "
            ));
            push_id_list(&mut qb, part.iter());
            for r in qb.build().fetch_all(&self.pool).await? {
                let grant = reread_opened(
                    &id_col(&r, 1),
                    &r.get::<Vec<u8>, _>(2),
                    None,
                    unchecked_col(&r, 3),
                )?;
                out.entry(id_col(&r, 0)).or_default().push(grant);
            }
        }
        Ok(out)
    }

    /// Number of records held.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Every held record's place in its author's chain (author, seq, prev, id), sealed
    /// and unopened ones included: chain integrity needs no content.
    pub async fn chain_links(&self) -> Result<Vec<crate::chain::Link>, StoreError> {
        let rows = sqlx::query(
            "SELECT author, seq, prev, id, CASE WHEN schema IN (?, ?) THEN bytes END, \
             (audience = 1 AND schema != ?) OR sealed = 1 FROM records",
        )
        .bind(crate::merkle::CHECKPOINT_SCHEMA)
        .bind(crate::merkle::COSIGNATURE_SCHEMA)
        // What `chain::in_every_view` says, in SQL: node certificates stay out of bundles.
        .bind(crate::charter::NODE_CERT_SCHEMA)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let prev: Option<Vec<u8>> = r.get(2);
                // Checkpoints and cosignatures carry their statement (verified again: a
                // damaged row states nothing rather than something false).
                let bytes: Option<Vec<u8>> = r.get(4);
                let rec = bytes.and_then(|b| crate::record::verify(&b).ok());
                let rec = rec.as_ref();
                let checkpoint = rec.and_then(|rec| {
                    crate::merkle::Checkpoint::of_record(&rec.schema, &rec.payload)
                });
                let cosignature = rec.and_then(|rec| {
                    crate::merkle::Cosignature::of_record(&rec.schema, &rec.payload)
                });
                Ok(crate::chain::Link {
                    author: key_col(r, 0)?,
                    seq: r.get::<i64, _>(1) as u64,
                    prev: prev.as_deref().and_then(RecordId::from_slice),
                    id: id_col(r, 3),
                    to_everyone: r.get::<bool, _>(5),
                    checkpoint,
                    cosignature,
                })
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
}
