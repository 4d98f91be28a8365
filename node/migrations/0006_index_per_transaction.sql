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

-- `records_schema` serves lookups of the few records that are not findings (charter,
-- proposals, approvals, node certificates, grants, annexes); findings are most of the
-- store and are never looked up by schema, so they no longer pay an index entry each.
-- Queries that use it say `schema <> 'finding/v1'` (SQLite's rule for partial indexes).
DROP INDEX records_schema;
CREATE INDEX records_schema ON records (schema) WHERE schema <> 'finding/v1';
