-- Coalition store, schema 9: records taken on their author's checkpoint whose own
-- signatures then failed (docs/PROTOCOL.md §4.2.1).
--
-- Such a record is removed with everything derived from it; its id is kept here so that
-- no later sync takes it again, from the peer that sent it or any other, before or after
-- a restart. An id is the SHA-256 of the record's signed bytes, signature included: it
-- names exactly those bytes, never a validly signed record (which would have another id).
CREATE TABLE refused_signatures (
    id          BLOB PRIMARY KEY NOT NULL,   -- records.id of the removed record
    refused_at  INTEGER NOT NULL             -- ms, when its signature failed here
) STRICT, WITHOUT ROWID;
