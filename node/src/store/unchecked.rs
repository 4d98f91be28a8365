//! Records a sync took on their author's checkpoint (migration 0008, table `unchecked`): stored before their
//! own signatures were verified, because a verified checkpoint of their author commits to
//! their ids (`crate::merkle::vouched`). The node verifies them after the sync
//! (`Node::check_unchecked`); until then they are not served to peers, and one whose
//! signature fails is removed with everything the store derived from it.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{id_col, push_id_list, Store, StoreError, INSERT_CHUNK};
use crate::record::RecordId;

impl Store {
    /// Up to `limit` records whose signatures are not verified yet, in storage order.
    pub async fn unchecked(&self, limit: usize) -> Result<Vec<(RecordId, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, r.bytes FROM unchecked u JOIN records r ON r.rowid = u.record \
             ORDER BY u.record LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (id_col(r, 0), r.get(1))).collect())
    }

    /// The ids of the records whose signatures are not verified yet.
    pub async fn unchecked_ids(&self) -> Result<HashSet<RecordId>, StoreError> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT r.id FROM unchecked u JOIN records r ON r.rowid = u.record")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|b| RecordId::from_slice(b))
            .collect())
    }

    /// How many records' signatures are not verified yet.
    pub async fn count_unchecked(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM unchecked")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// In one transaction: the records in `verified` are checked (served like any other
    /// from now on), those in `failed` (their signatures do not verify) are removed with
    /// their audience, opened content, finding row, full-text entry and rollup count, and
    /// the findings they superseded get their flags back. Only unchecked rows are touched.
    /// Returns the ids of those removed (each kept in `refused_signatures`).
    pub async fn settle_unchecked(
        &self,
        verified: &[RecordId],
        failed: &[RecordId],
    ) -> Result<Vec<RecordId>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for part in verified.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "DELETE FROM unchecked WHERE record IN (SELECT rowid FROM records WHERE id IN ",
            );
            push_id_list(&mut qb, part.iter());
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        let mut removed = Vec::new();
        let now = crate::now_ms();
        for id in failed {
            if remove(&mut tx, id).await? {
                removed.push(*id);
                sqlx::query(
                    "INSERT OR IGNORE INTO refused_signatures (id, refused_at) VALUES (?, ?)",
                )
                .bind(id.0.as_slice())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Which of `ids` name records removed because their signatures failed after a sync
    /// took them on a checkpoint ([`Store::settle_unchecked`]): no sync takes them again.
    pub async fn refused_signatures(
        &self,
        ids: &[RecordId],
    ) -> Result<HashSet<RecordId>, StoreError> {
        // Nearly always empty: one cheap look before any list of ids is sent.
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refused_signatures)")
            .fetch_one(&self.pool)
            .await?;
        if !any {
            return Ok(HashSet::new());
        }
        self.ids_among("SELECT id FROM refused_signatures WHERE id IN ", ids)
            .await
    }
}

/// Removes the unchecked record `id` and every row derived from it; whether it was there.
async fn remove(tx: &mut Transaction<'_, Sqlite>, id: &RecordId) -> Result<bool, StoreError> {
    let id = id.0.as_slice();
    let Some(row) = sqlx::query(
        "SELECT r.rowid, r.supersedes FROM records r JOIN unchecked u ON u.record = r.rowid \
         WHERE r.id = ?",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(false);
    };
    let rowid: i64 = row.get(0);
    let supersedes: Option<Vec<u8>> = row.get(1);
    sqlx::query("DELETE FROM unchecked WHERE record = ?")
        .bind(rowid)
        .execute(&mut **tx)
        .await?;
    if let Some(f) = sqlx::query("SELECT rowid, title, summary FROM findings WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
    {
        let key: i64 = f.get(0);
        // Uncounted from the rollup by the update trigger (migration 0005) if counted.
        sqlx::query("UPDATE findings SET is_head = 0 WHERE rowid = ?")
            .bind(key)
            .execute(&mut **tx)
            .await?;
        // A contentless FTS5 table forgets a row given the text it indexed.
        sqlx::query(
            "INSERT INTO finding_fts (finding_fts, rowid, title, summary) VALUES ('delete', ?, ?, ?)",
        )
        .bind(key)
        .bind(f.get::<String, _>(1))
        .bind(f.get::<String, _>(2))
        .execute(&mut **tx)
        .await?;
        for table in ["finding_actors", "finding_groups", "finding_tags"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE finding = ?"))
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("DELETE FROM findings WHERE rowid = ?")
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM opened WHERE id = ?")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM audience_members WHERE record = ?")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM records WHERE id = ?")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if let Some(target) = supersedes {
        // The finding it superseded, without it.
        super::write::supersession_flags(tx, &[target]).await?;
    }
    Ok(true)
}
