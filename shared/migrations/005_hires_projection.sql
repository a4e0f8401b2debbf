-- The read model of both metrics (CONTRACT §4): hires per (UTC year, UTC quarter, department id,
-- job id), maintained inside every transaction that writes hired_employees, whatever writes it
-- (direct COPY, stage + merge, replay's swap, restore, retraction, psql), by statement-level
-- triggers reading the statement's transition tables. A metric then costs what its answer's size
-- costs, never what the table's size costs, and is never stale.
--
-- Two tables, so that writers never wait on each other:
--   hires_deltas  append-only: each writing statement adds ONE row per UTC year it touched, holding
--                 its net change per cell as parallel arrays (a 20,000-row batch over 3 years is
--                 3 rows, not ~14,000 cell updates). Inserting a new row takes no lock another
--                 writer holds, so concurrent consumers and multi-statement transactions (restore,
--                 retraction) can never deadlock on the projection or queue behind each other.
--   hires_cells   the folded totals, one row per non-zero cell. fold_hires_deltas() moves deltas
--                 into it in one transaction (the query service runs it in the background), so any
--                 snapshot sees each delta exactly once: in hires_deltas or in hires_cells.
-- A metric reads its year from both: the cells plus the deltas not yet folded.
-- The triggers read only id-independent columns (datetime, department_id, job_id), so later
-- migrations may add columns freely.

CREATE TABLE IF NOT EXISTS hires_cells (
    year           integer  NOT NULL,
    quarter        smallint NOT NULL,
    department_id  integer  NOT NULL,
    job_id         integer  NOT NULL,
    hires          bigint   NOT NULL,
    PRIMARY KEY (year, department_id, job_id, quarter)
);

CREATE TABLE IF NOT EXISTS hires_deltas (
    year            integer    NOT NULL,
    department_ids  integer[]  NOT NULL,
    job_ids         integer[]  NOT NULL,
    quarters        smallint[] NOT NULL,
    hires           bigint[]   NOT NULL,  -- net change of each cell (negative for rows removed)
    cells           integer    NOT NULL,  -- the arrays' length: the folder's measure of backlog
    written_at      timestamptz NOT NULL DEFAULT now()
);

-- The advisory lock (single-key space) that serialises folding with rebuilds and TRUNCATE.
CREATE OR REPLACE FUNCTION hires_fold_lock() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT x'6869726570726f6a'::bigint $$;  -- "hireproj"

-- One function per event: a transition table is visible only inside its own trigger's function.
-- Rows are bucketed into UTC quarters by comparing each timestamp with the statement's quarter
-- starts (width_bucket: a binary search of int64 comparisons), and year and quarter are read off
-- each bucket once: per row that is 5x cheaper than date_trunc('quarter', datetime, 'UTC'), which
-- converts every timestamp through the time zone code. `s` is a UTC wall-clock time, so the
-- calendar steps of '3 months' never depend on the session's time zone.
-- (hires_cells' rebuild and `hiring check` count with date_trunc instead: an independent formula.)
CREATE OR REPLACE FUNCTION hires_projection_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hires_deltas (year, department_ids, job_ids, quarters, hires, cells)
    WITH span AS (SELECT min(datetime) AS lo, max(datetime) AS hi FROM new_rows),
    qs AS (
        SELECT array_agg(s AT TIME ZONE 'UTC' ORDER BY s) AS starts,
               array_agg(date_part('year', s)::int ORDER BY s) AS years,
               array_agg(date_part('quarter', s)::smallint ORDER BY s) AS quarters
        FROM span, generate_series(date_trunc('quarter', lo AT TIME ZONE 'UTC'), hi AT TIME ZONE 'UTC',
                                   interval '3 months') AS s
    ),
    g AS (
        SELECT width_bucket(datetime, (SELECT starts FROM qs)) AS b, department_id, job_id, count(*) AS n
        FROM new_rows GROUP BY 1, 2, 3
    )
    SELECT year, array_agg(department_id), array_agg(job_id), array_agg(quarter), array_agg(n), count(*)
    FROM (
        SELECT (SELECT years FROM qs)[b] AS year, (SELECT quarters FROM qs)[b] AS quarter, department_id, job_id, n
        FROM g
    ) c
    GROUP BY year;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION hires_projection_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hires_deltas (year, department_ids, job_ids, quarters, hires, cells)
    WITH span AS (SELECT min(datetime) AS lo, max(datetime) AS hi FROM old_rows),
    qs AS (
        SELECT array_agg(s AT TIME ZONE 'UTC' ORDER BY s) AS starts,
               array_agg(date_part('year', s)::int ORDER BY s) AS years,
               array_agg(date_part('quarter', s)::smallint ORDER BY s) AS quarters
        FROM span, generate_series(date_trunc('quarter', lo AT TIME ZONE 'UTC'), hi AT TIME ZONE 'UTC',
                                   interval '3 months') AS s
    ),
    g AS (
        SELECT width_bucket(datetime, (SELECT starts FROM qs)) AS b, department_id, job_id, -count(*) AS n
        FROM old_rows GROUP BY 1, 2, 3
    )
    SELECT year, array_agg(department_id), array_agg(job_id), array_agg(quarter), array_agg(n), count(*)
    FROM (
        SELECT (SELECT years FROM qs)[b] AS year, (SELECT quarters FROM qs)[b] AS quarter, department_id, job_id, n
        FROM g
    ) c
    GROUP BY year;
    RETURN NULL;
END
$$;

-- An update moves each row's count from its old cell to its new one; a row that stays in its cell
-- nets to zero and is left out.
CREATE OR REPLACE FUNCTION hires_projection_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hires_deltas (year, department_ids, job_ids, quarters, hires, cells)
    WITH moved AS (
        SELECT datetime, department_id, job_id, 1 AS n FROM new_rows
        UNION ALL
        SELECT datetime, department_id, job_id, -1 FROM old_rows
    ),
    span AS (SELECT min(datetime) AS lo, max(datetime) AS hi FROM moved),
    qs AS (
        SELECT array_agg(s AT TIME ZONE 'UTC' ORDER BY s) AS starts,
               array_agg(date_part('year', s)::int ORDER BY s) AS years,
               array_agg(date_part('quarter', s)::smallint ORDER BY s) AS quarters
        FROM span, generate_series(date_trunc('quarter', lo AT TIME ZONE 'UTC'), hi AT TIME ZONE 'UTC',
                                   interval '3 months') AS s
    ),
    g AS (
        SELECT width_bucket(datetime, (SELECT starts FROM qs)) AS b, department_id, job_id, sum(n)::bigint AS n
        FROM moved GROUP BY 1, 2, 3
        HAVING sum(n) <> 0
    )
    SELECT year, array_agg(department_id), array_agg(job_id), array_agg(quarter), array_agg(n), count(*)
    FROM (
        SELECT (SELECT years FROM qs)[b] AS year, (SELECT quarters FROM qs)[b] AS quarter, department_id, job_id, n
        FROM g
    ) c
    GROUP BY year;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row or DELETE trigger. It holds hired_employees ACCESS EXCLUSIVE, so no other
-- writer is in flight; after taking the fold lock every delta committed so far is visible here.
CREATE OR REPLACE FUNCTION hires_projection_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hires_fold_lock());
    DELETE FROM hires_deltas;
    DELETE FROM hires_cells;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS hires_projection_insert ON hired_employees;
CREATE TRIGGER hires_projection_insert AFTER INSERT ON hired_employees
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hires_projection_insert();
DROP TRIGGER IF EXISTS hires_projection_update ON hired_employees;
CREATE TRIGGER hires_projection_update AFTER UPDATE ON hired_employees
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hires_projection_update();
DROP TRIGGER IF EXISTS hires_projection_delete ON hired_employees;
CREATE TRIGGER hires_projection_delete AFTER DELETE ON hired_employees
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hires_projection_delete();
DROP TRIGGER IF EXISTS hires_projection_truncate ON hired_employees;
CREATE TRIGGER hires_projection_truncate AFTER TRUNCATE ON hired_employees
    FOR EACH STATEMENT EXECUTE FUNCTION hires_projection_truncate();

-- Fold the committed deltas into hires_cells, if their backlog has at least `min_cells` cells or
-- its oldest row is at least `max_age` old. Returns the number of delta rows folded (0 when another
-- session is folding: only one folds at a time, and nobody waits for it). Cells are upserted in key
-- order and those reaching 0 are deleted.
CREATE OR REPLACE FUNCTION fold_hires_deltas(min_cells integer DEFAULT 0, max_age interval DEFAULT '0')
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    folded integer;
    zy integer[];
    zd integer[];
    zj integer[];
    zq smallint[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(hires_fold_lock()) THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM hires_deltas
        HAVING sum(cells) >= min_cells OR min(written_at) <= now() - max_age
    ) THEN
        RETURN 0;
    END IF;
    WITH taken AS (
        DELETE FROM hires_deltas RETURNING year, department_ids, job_ids, quarters, hires
    ), counted AS (
        SELECT count(*) AS n FROM taken
    ), summed AS (
        SELECT t.year, u.quarter, u.department_id, u.job_id, sum(u.n)::bigint AS n
        FROM taken t, unnest(t.department_ids, t.job_ids, t.quarters, t.hires)
                      AS u(department_id, job_id, quarter, n)
        GROUP BY 1, 2, 3, 4
        HAVING sum(u.n) <> 0
    ), upserted AS (
        INSERT INTO hires_cells AS c (year, quarter, department_id, job_id, hires)
        SELECT year, quarter, department_id, job_id, n FROM summed
        ORDER BY year, department_id, job_id, quarter
        ON CONFLICT (year, department_id, job_id, quarter) DO UPDATE SET hires = c.hires + excluded.hires
        RETURNING c.year, c.quarter, c.department_id, c.job_id, c.hires
    )
    SELECT (SELECT n FROM counted),
           array_agg(year) FILTER (WHERE hires = 0), array_agg(department_id) FILTER (WHERE hires = 0),
           array_agg(job_id) FILTER (WHERE hires = 0), array_agg(quarter) FILTER (WHERE hires = 0)
    INTO folded, zy, zd, zj, zq
    FROM upserted;
    IF zy IS NOT NULL THEN
        DELETE FROM hires_cells c
        USING unnest(zy, zd, zj, zq) AS z(year, department_id, job_id, quarter)
        WHERE (c.year, c.department_id, c.job_id, c.quarter) = (z.year, z.department_id, z.job_id, z.quarter)
          AND c.hires = 0;
    END IF;
    RETURN folded;
END
$$;

-- Recount the projection from hired_employees. SHARE mode waits for the writers in flight and keeps
-- new ones out until the caller's transaction ends, so the count is exact.
CREATE OR REPLACE FUNCTION rebuild_hires_projection() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    made bigint;
BEGIN
    LOCK TABLE hired_employees IN SHARE MODE;
    PERFORM pg_advisory_xact_lock(hires_fold_lock());
    DELETE FROM hires_deltas;
    DELETE FROM hires_cells;
    INSERT INTO hires_cells (year, quarter, department_id, job_id, hires)
    SELECT date_part('year', q AT TIME ZONE 'UTC')::int, date_part('quarter', q AT TIME ZONE 'UTC')::smallint,
           department_id, job_id, n
    FROM (
        SELECT date_trunc('quarter', datetime, 'UTC') AS q, department_id, job_id, count(*) AS n
        FROM hired_employees GROUP BY 1, 2, 3
    ) g
    ORDER BY 1, 3, 4, 2;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END
$$;

SELECT rebuild_hires_projection();
