-- Coalition store, schema 1: signed records verbatim, plus query columns extracted at ingest.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- Every record this node holds, as the exact SignedRecord bytes it was signed/received as.
CREATE TABLE records (
    rowid       INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,      -- SHA-256 of bytes
    bytes       BLOB NOT NULL,             -- SignedRecord, verbatim
    author      BLOB NOT NULL,             -- organisation key
    seq         INTEGER NOT NULL,
    prev        BLOB,
    created_at  INTEGER NOT NULL,          -- author's claimed time, ms
    schema      TEXT NOT NULL,
    audience    INTEGER NOT NULL,          -- 0 private, 1 coalition, 2 members
    supersedes  BLOB,
    epoch       BLOB,
    subject     BLOB,                      -- annex: its finding; grant: the granted record
    received_at INTEGER NOT NULL           -- when this node stored it, ms
) STRICT;

CREATE INDEX records_author_seq ON records (author, seq);
CREATE INDEX records_supersedes ON records (supersedes) WHERE supersedes IS NOT NULL;
CREATE INDEX records_subject ON records (subject) WHERE subject IS NOT NULL;
CREATE INDEX records_schema ON records (schema);

-- Explicit audiences (audience = 2).
CREATE TABLE audience_members (
    record BLOB NOT NULL,
    member BLOB NOT NULL,
    PRIMARY KEY (record, member)
) STRICT, WITHOUT ROWID;

CREATE INDEX audience_members_member ON audience_members (member);

-- One row per finding/v1 record (every version).
CREATE TABLE findings (
    id             BLOB PRIMARY KEY NOT NULL,
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
) STRICT, WITHOUT ROWID;

CREATE INDEX findings_current ON findings (is_head, retracted, country, category);
CREATE INDEX findings_occurred ON findings (occurred_start);

CREATE TABLE finding_actors (
    finding    BLOB NOT NULL,
    actor_type TEXT NOT NULL,
    PRIMARY KEY (finding, actor_type)
) STRICT, WITHOUT ROWID;

CREATE TABLE finding_groups (
    finding BLOB NOT NULL,
    grp     TEXT NOT NULL,
    PRIMARY KEY (finding, grp)
) STRICT, WITHOUT ROWID;

CREATE TABLE finding_tags (
    finding BLOB NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (finding, tag)
) STRICT, WITHOUT ROWID;
