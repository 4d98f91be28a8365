-- Supersession lookups (is a finding corrected or retracted by its author?) by all three
-- columns. The single-column partial index lost to `records_schema` in SQLite's planner,
-- which turned each lookup into a scan of every finding record and made ingest quadratic.
DROP INDEX records_supersedes;
CREATE INDEX records_supersession ON records (supersedes, author, schema) WHERE supersedes IS NOT NULL;
