-- Coalition store, schema 5: counts of current findings by country, category and month,
-- kept up to date by triggers in the same transaction as every change to `findings`.
--
-- Grouping a million findings by country x category x month from an index still visits a
-- million index entries (about 0.3-0.6 s here); this table holds one row per group that
-- has findings (a few thousand), so the aggregates the dashboard and most reports ask for
-- (filters on country and category only, grouped by country, category, month, quarter or
-- year) read it instead. Everything else still reads `findings`. A finding counts when it
-- is current: is_head = 1 and retracted = 0, the same rule every query applies.

CREATE TABLE finding_rollup (
    country  TEXT NOT NULL,
    category TEXT NOT NULL,
    month    TEXT NOT NULL,               -- substr(occurred_start, 1, 7): YYYY-MM
    findings INTEGER NOT NULL,
    affected INTEGER NOT NULL,            -- sum of affected_count (absent counts 0)
    PRIMARY KEY (country, category, month)
) STRICT, WITHOUT ROWID;

INSERT INTO finding_rollup (country, category, month, findings, affected)
    SELECT country, category, substr(occurred_start, 1, 7), COUNT(*),
           COALESCE(SUM(affected_count), 0)
    FROM findings WHERE is_head = 1 AND retracted = 0
    GROUP BY 1, 2, 3;

CREATE TRIGGER findings_rollup_insert AFTER INSERT ON findings
WHEN new.is_head = 1 AND new.retracted = 0 BEGIN
    INSERT INTO finding_rollup (country, category, month, findings, affected)
        VALUES (new.country, new.category, substr(new.occurred_start, 1, 7), 1,
                COALESCE(new.affected_count, 0))
        ON CONFLICT (country, category, month) DO UPDATE SET
            findings = findings + 1,
            affected = affected + excluded.affected;
END;

-- Only the flags ever change on a finding row (a correction or retraction arrived).
CREATE TRIGGER findings_rollup_uncount AFTER UPDATE OF is_head, retracted ON findings
WHEN (old.is_head = 1 AND old.retracted = 0) AND NOT (new.is_head = 1 AND new.retracted = 0) BEGIN
    UPDATE finding_rollup SET
        findings = findings - 1,
        affected = affected - COALESCE(old.affected_count, 0)
    WHERE country = old.country AND category = old.category
      AND month = substr(old.occurred_start, 1, 7);
    DELETE FROM finding_rollup
    WHERE country = old.country AND category = old.category
      AND month = substr(old.occurred_start, 1, 7) AND findings = 0;
END;

CREATE TRIGGER findings_rollup_recount AFTER UPDATE OF is_head, retracted ON findings
WHEN NOT (old.is_head = 1 AND old.retracted = 0) AND (new.is_head = 1 AND new.retracted = 0) BEGIN
    INSERT INTO finding_rollup (country, category, month, findings, affected)
        VALUES (new.country, new.category, substr(new.occurred_start, 1, 7), 1,
                COALESCE(new.affected_count, 0))
        ON CONFLICT (country, category, month) DO UPDATE SET
            findings = findings + 1,
            affected = affected + excluded.affected;
END;
