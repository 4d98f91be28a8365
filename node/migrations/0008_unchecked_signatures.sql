-- Coalition store, schema 8: records a sync took on their author's checkpoint
-- (docs/PROTOCOL.md §4.3, docs/THREAT_MODEL.md "Sync from checkpoints").
--
-- A sync may store a record without verifying its own signature when a checkpoint of its
-- author, whose signature was verified, commits to the record's id at its seq. Such a
-- row has `unchecked = 1` until the node has verified its signature after the sync
-- (then 0). Until then it is read like any other, but never served to a peer nor put
-- in a bundle; a row whose signature does not verify is removed.
ALTER TABLE records ADD COLUMN unchecked INTEGER NOT NULL DEFAULT 0;

CREATE INDEX records_unchecked ON records (unchecked) WHERE unchecked = 1;
