-- Coalition store, schema 7: sealed records (sealed/v1, docs/FORMATS.md §6).
--
-- `records.bytes` keeps every sealed record exactly as signed. `sealed` marks them, so
-- that the sync index treats them as what they are on the network (every member may hold
-- and serve them) whatever this node could read. On a node that opened one (it is a
-- recipient), `records.schema` holds the inner schema (finding/v1, annex/v1,
-- retraction/v1), so supersession, annex and finding queries work as for a clear record,
-- and `opened` holds the inner payload. On every other node `schema` stays 'sealed/v1'
-- and nothing of the content is stored.
ALTER TABLE records ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;

UPDATE records SET sealed = 1 WHERE schema = 'sealed/v1';

CREATE TABLE opened (
    id      BLOB PRIMARY KEY NOT NULL,   -- the sealed record
    payload BLOB NOT NULL                -- its inner payload, checked against records.schema
) STRICT, WITHOUT ROWID;
