-- Coalition store, schema 4: finding rows in arrival order.
--
-- `findings` was WITHOUT ROWID, keyed by the record id (a SHA-256, i.e. random). Every
-- insert landed on a random page of a wide table, so large imports rewrote pages all over
-- the file and slowed down as the store grew (100,000 records: 80 % of import time in
-- SQLite). Now each finding row gets an integer key in arrival order: the wide rows are
-- appended, the record id is a narrow unique index, and the side tables and the full-text
-- index refer to the integer key directly (the `finding_text` mapping table is gone).
-- Nothing else changes: same columns, same meaning, same flags.

DROP TRIGGER findings_fts_insert;
DROP TABLE finding_fts;
DROP TABLE finding_text;
DROP INDEX findings_current;
DROP INDEX findings_occurred;
DROP INDEX findings_agg;

CREATE TABLE findings_v4 (
    rowid          INTEGER PRIMARY KEY,
    id             BLOB NOT NULL UNIQUE,
    author         BLOB NOT NULL,
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    language       TEXT NOT NULL,
    country        TEXT NOT NULL,
    region         TEXT,
    municipality   TEXT,
    category       TEXT NOT NULL,
    confidence     TEXT NOT NULL,
    occurred_start TEXT NOT NULL,
    occurred_end   TEXT,
    date_precision TEXT NOT NULL,
    affected_count INTEGER,
    lat            REAL,
    lon            REAL,
    created_at     INTEGER NOT NULL,
    is_head        INTEGER NOT NULL DEFAULT 1,  -- no same-author correction supersedes it
    retracted      INTEGER NOT NULL DEFAULT 0   -- a same-author retraction supersedes it
) STRICT;

INSERT INTO findings_v4 (id, author, title, summary, language, country, region, municipality,
        category, confidence, occurred_start, occurred_end, date_precision, affected_count,
        lat, lon, created_at, is_head, retracted)
    SELECT f.id, f.author, f.title, f.summary, f.language, f.country, f.region, f.municipality,
        f.category, f.confidence, f.occurred_start, f.occurred_end, f.date_precision,
        f.affected_count, f.lat, f.lon, f.created_at, f.is_head, f.retracted
    FROM findings f JOIN records r ON r.id = f.id
    ORDER BY r.rowid;

CREATE TABLE finding_actors_v4 (
    finding    INTEGER NOT NULL,  -- findings.rowid
    actor_type TEXT NOT NULL,
    PRIMARY KEY (finding, actor_type)
) STRICT, WITHOUT ROWID;
INSERT INTO finding_actors_v4 (finding, actor_type)
    SELECT n.rowid, a.actor_type FROM finding_actors a JOIN findings_v4 n ON n.id = a.finding;

CREATE TABLE finding_groups_v4 (
    finding INTEGER NOT NULL,     -- findings.rowid
    grp     TEXT NOT NULL,
    PRIMARY KEY (finding, grp)
) STRICT, WITHOUT ROWID;
INSERT INTO finding_groups_v4 (finding, grp)
    SELECT n.rowid, g.grp FROM finding_groups g JOIN findings_v4 n ON n.id = g.finding;

CREATE TABLE finding_tags_v4 (
    finding INTEGER NOT NULL,     -- findings.rowid
    tag     TEXT NOT NULL,
    PRIMARY KEY (finding, tag)
) STRICT, WITHOUT ROWID;
INSERT INTO finding_tags_v4 (finding, tag)
    SELECT n.rowid, t.tag FROM finding_tags t JOIN findings_v4 n ON n.id = t.finding;

DROP TABLE findings;
DROP TABLE finding_actors;
DROP TABLE finding_groups;
DROP TABLE finding_tags;
ALTER TABLE findings_v4 RENAME TO findings;
ALTER TABLE finding_actors_v4 RENAME TO finding_actors;
ALTER TABLE finding_groups_v4 RENAME TO finding_groups;
ALTER TABLE finding_tags_v4 RENAME TO finding_tags;

-- Every query counts only current findings (is_head = 1 AND retracted = 0, written out
-- in every WHERE clause), so the query indexes hold only those rows: partial indexes.
-- Pages of findings newest first walk `findings_current_by_date` and check the common
-- filters in the index itself; only the 50 rows shown are read from the table. Totals
-- with date, country, category and confidence filters are counted from it alone.
CREATE INDEX findings_current_by_date ON findings
    (occurred_start, id, country, category, confidence, affected_count)
    WHERE is_head = 1 AND retracted = 0;
-- Aggregates the rollup (migration 0005) cannot answer read this one in group order.
CREATE INDEX findings_agg ON findings
    (country, category, substr(occurred_start, 1, 7), affected_count)
    WHERE is_head = 1 AND retracted = 0;

-- Contentless full-text index keyed by findings.rowid (the text lives in `findings`).
-- unicode61 with remove_diacritics 2 folds case and accents in Latin, Cyrillic and
-- Georgian scripts alike ("Niš" matches "nis").
CREATE VIRTUAL TABLE finding_fts USING fts5 (
    title,
    summary,
    content = '',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO finding_fts (rowid, title, summary) SELECT rowid, title, summary FROM findings;

-- Finding rows are immutable (a correction is a new row; only the two flags change), so
-- an insert trigger keeps the index in sync.
CREATE TRIGGER findings_fts_insert AFTER INSERT ON findings BEGIN
    INSERT INTO finding_fts (rowid, title, summary) VALUES (new.rowid, new.title, new.summary);
END;
