-- Coalition store, schema 6: the full-text index and the rollup are written once per
-- transaction by the store (node/src/store.rs `insert_all`), not by row triggers.
--
-- FTS5 writes its pending terms to disk at every statement savepoint. With an insert
-- trigger, each multi-row INSERT into `findings` (200 rows) flushed a tiny segment, and
-- FTS5 then spent about a third of a large import merging them. One
-- `INSERT INTO finding_fts … SELECT … FROM findings WHERE rowid > ?` per transaction
-- writes one segment instead. The rollup is counted the same way, from the same rows,
-- before the transaction updates any supersession flag; the update triggers of schema 5
-- (uncount and recount when a flag changes) stay as they are.
--
-- Nothing to backfill: every existing row was indexed and counted by the triggers.

DROP TRIGGER findings_fts_insert;
DROP TRIGGER findings_rollup_insert;
