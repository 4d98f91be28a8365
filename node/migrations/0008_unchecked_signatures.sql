-- Coalition store, schema 8: records a sync took on their author's checkpoint
-- (docs/PROTOCOL.md §4.2.1, docs/THREAT_MODEL.md §2.3.2).
--
-- A sync may store a record without verifying its own signature when a checkpoint of its
-- author, whose signature was verified, commits to the record's id at its seq. Such a
-- record's rowid is listed here until the node has verified its signature after the sync
-- (then the row here is deleted). Until then the record is read like any other, but never
-- served to a peer nor put in a bundle; a record whose signature does not verify is
-- removed. A table of its own, not a column of `records`: marking and clearing 100 000
-- records then appends and deletes small rows in rowid order instead of rewriting every
-- record row.
CREATE TABLE unchecked (
    record INTEGER PRIMARY KEY NOT NULL   -- records.rowid
) STRICT;
