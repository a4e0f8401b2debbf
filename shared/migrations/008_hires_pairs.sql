-- The hires projection (migration 005) packed by quarter: one cell per (UTC year, department id,
-- job id) holding the four UTC quarters' counts, in the folded table and in the deltas alike.
--
-- Why: both metrics read a year per (department, job) pair, and a writing statement's rows spread
-- over most pairs of a year. With one cell per quarter a 20,000-row batch left ~15,000 delta cells
-- and the folder upserted up to 4 x 12 x 183 cells per year (bench/README.md, section 4: folding
-- cost PostgreSQL about as much CPU as the COPY itself); packed, the same batch leaves about half
-- as many array elements, a fold upserts a quarter as many rows, and a metric reads a quarter as
-- many folded rows. Semantics are unchanged: every writing statement still appends its net change
-- inside its own transaction, and every snapshot sees each delta exactly once.
--
-- hires_projected is the projection's one definition of "hires per (year, quarter, department,
-- job)": the folded cells plus the unfolded deltas, summed. `hiring check` compares it with a
-- recount of hired_employees.

DROP VIEW IF EXISTS hires_projected;
DROP TABLE IF EXISTS hires_cells;
DROP TABLE IF EXISTS hires_deltas;

CREATE TABLE hires_cells (
    year           integer NOT NULL,
    department_id  integer NOT NULL,
    job_id         integer NOT NULL,
    q1             bigint  NOT NULL,
    q2             bigint  NOT NULL,
    q3             bigint  NOT NULL,
    q4             bigint  NOT NULL,
    PRIMARY KEY (year, department_id, job_id)
);

CREATE TABLE hires_deltas (
    year            integer    NOT NULL,
    department_ids  integer[]  NOT NULL,
    job_ids         integer[]  NOT NULL,
    q1              integer[]  NOT NULL,  -- net change of each cell's quarter (negative: rows removed)
    q2              integer[]  NOT NULL,
    q3              integer[]  NOT NULL,
    q4              integer[]  NOT NULL,
    cells           integer    NOT NULL,  -- the arrays' length: the folder's measure of backlog
    written_at      timestamptz NOT NULL DEFAULT now()
);

-- The query that appends a writing statement's net change, given the statement's rows as `source`
-- (a query giving datetime, department_id, job_id and n, +1 or -1 per row): one delta row per UTC
-- year. Rows are bucketed into UTC quarters by width_bucket against the statement's quarter starts
-- (migration 005 says why: 5x cheaper per row than date_trunc with a zone), and year and quarter are
-- read off each bucket once. A cell whose four quarters net to zero is left out. Each trigger
-- function EXECUTEs it over its own transition tables, which are visible only inside that function.
CREATE OR REPLACE FUNCTION hires_delta_query(source text) RETURNS text
LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    INSERT INTO hires_deltas (year, department_ids, job_ids, q1, q2, q3, q4, cells)
    WITH changed AS NOT MATERIALIZED (%s),
    span AS (SELECT min(datetime) AS lo, max(datetime) AS hi FROM changed),
    qs AS (
        SELECT array_agg(s AT TIME ZONE 'UTC' ORDER BY s) AS starts,
               array_agg(date_part('year', s)::int ORDER BY s) AS years,
               array_agg(date_part('quarter', s)::int ORDER BY s) AS quarters
        FROM span, generate_series(date_trunc('quarter', lo AT TIME ZONE 'UTC'), hi AT TIME ZONE 'UTC',
                                   interval '3 months') AS s
    ),
    g AS (
        SELECT width_bucket(datetime, (SELECT starts FROM qs)) AS b, department_id, job_id, sum(n)::int AS n
        FROM changed GROUP BY 1, 2, 3
    ),
    c AS (
        SELECT (SELECT years FROM qs)[b] AS year, (SELECT quarters FROM qs)[b] AS quarter, department_id, job_id, n
        FROM g
    ),
    cells AS (
        SELECT year, department_id, job_id,
               coalesce(sum(n) FILTER (WHERE quarter = 1), 0)::int AS q1,
               coalesce(sum(n) FILTER (WHERE quarter = 2), 0)::int AS q2,
               coalesce(sum(n) FILTER (WHERE quarter = 3), 0)::int AS q3,
               coalesce(sum(n) FILTER (WHERE quarter = 4), 0)::int AS q4
        FROM c GROUP BY 1, 2, 3
    )
    SELECT year, array_agg(department_id), array_agg(job_id),
           array_agg(q1), array_agg(q2), array_agg(q3), array_agg(q4), count(*)
    FROM cells
    WHERE (q1, q2, q3, q4) <> (0, 0, 0, 0)
    GROUP BY year
$q$, source)
$f$;

CREATE OR REPLACE FUNCTION hires_projection_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE hires_delta_query('SELECT datetime, department_id, job_id, 1 AS n FROM new_rows');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION hires_projection_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE hires_delta_query('SELECT datetime, department_id, job_id, -1 AS n FROM old_rows');
    RETURN NULL;
END
$$;

-- An update moves each row's count from its old cell to its new one; a row that stays in its cell
-- nets to zero and is left out.
CREATE OR REPLACE FUNCTION hires_projection_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE hires_delta_query(
        'SELECT datetime, department_id, job_id, 1 AS n FROM new_rows'
        ' UNION ALL SELECT datetime, department_id, job_id, -1 FROM old_rows'
    );
    RETURN NULL;
END
$$;

-- (The triggers themselves and hires_projection_truncate are migration 005's, unchanged: they call
-- these functions by name and delete from both tables by name.)

-- Fold the committed deltas into hires_cells, if their backlog has at least `min_cells` cells or
-- its oldest row is at least `max_age` old. Returns the number of delta rows folded (0 when another
-- session is folding: only one folds at a time, and nobody waits for it). Cells are upserted in key
-- order and those whose four quarters reach 0 are deleted.
CREATE OR REPLACE FUNCTION fold_hires_deltas(min_cells integer DEFAULT 0, max_age interval DEFAULT '0')
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    folded integer;
    zy integer[];
    zd integer[];
    zj integer[];
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
        DELETE FROM hires_deltas RETURNING year, department_ids, job_ids, q1, q2, q3, q4
    ), counted AS (
        SELECT count(*) AS n FROM taken
    ), summed AS (
        SELECT t.year, u.department_id, u.job_id,
               sum(u.q1)::bigint AS q1, sum(u.q2)::bigint AS q2, sum(u.q3)::bigint AS q3, sum(u.q4)::bigint AS q4
        FROM taken t, unnest(t.department_ids, t.job_ids, t.q1, t.q2, t.q3, t.q4)
                      AS u(department_id, job_id, q1, q2, q3, q4)
        GROUP BY 1, 2, 3
    ), upserted AS (
        INSERT INTO hires_cells AS c (year, department_id, job_id, q1, q2, q3, q4)
        SELECT year, department_id, job_id, q1, q2, q3, q4 FROM summed
        WHERE (q1, q2, q3, q4) <> (0, 0, 0, 0)
        ORDER BY year, department_id, job_id
        ON CONFLICT (year, department_id, job_id) DO UPDATE
            SET q1 = c.q1 + excluded.q1, q2 = c.q2 + excluded.q2, q3 = c.q3 + excluded.q3, q4 = c.q4 + excluded.q4
        RETURNING c.year, c.department_id, c.job_id, (c.q1, c.q2, c.q3, c.q4) = (0, 0, 0, 0) AS empty
    )
    SELECT (SELECT n FROM counted),
           array_agg(year) FILTER (WHERE empty), array_agg(department_id) FILTER (WHERE empty),
           array_agg(job_id) FILTER (WHERE empty)
    INTO folded, zy, zd, zj
    FROM upserted;
    IF zy IS NOT NULL THEN
        DELETE FROM hires_cells c
        USING unnest(zy, zd, zj) AS z(year, department_id, job_id)
        WHERE (c.year, c.department_id, c.job_id) = (z.year, z.department_id, z.job_id)
          AND (c.q1, c.q2, c.q3, c.q4) = (0, 0, 0, 0);
    END IF;
    RETURN folded;
END
$$;

-- Recount the projection from hired_employees. SHARE mode waits for the writers in flight and keeps
-- new ones out until the caller's transaction ends, so the count is exact. (date_trunc with the
-- zone: a formula independent of the triggers' width_bucket.)
CREATE OR REPLACE FUNCTION rebuild_hires_projection() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    made bigint;
BEGIN
    LOCK TABLE hired_employees IN SHARE MODE;
    PERFORM pg_advisory_xact_lock(hires_fold_lock());
    DELETE FROM hires_deltas;
    DELETE FROM hires_cells;
    INSERT INTO hires_cells (year, department_id, job_id, q1, q2, q3, q4)
    SELECT date_part('year', q AT TIME ZONE 'UTC')::int, department_id, job_id,
           coalesce(sum(n) FILTER (WHERE date_part('quarter', q AT TIME ZONE 'UTC') = 1), 0),
           coalesce(sum(n) FILTER (WHERE date_part('quarter', q AT TIME ZONE 'UTC') = 2), 0),
           coalesce(sum(n) FILTER (WHERE date_part('quarter', q AT TIME ZONE 'UTC') = 3), 0),
           coalesce(sum(n) FILTER (WHERE date_part('quarter', q AT TIME ZONE 'UTC') = 4), 0)
    FROM (
        SELECT date_trunc('quarter', datetime, 'UTC') AS q, department_id, job_id, count(*) AS n
        FROM hired_employees GROUP BY 1, 2, 3
    ) g
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END
$$;

-- What the projection says, per (year, quarter, department, job): folded cells plus unfolded
-- deltas, summed, non-zero only. Read by `hiring check` and the tests; the metrics read one year of
-- the same two tables directly (services/query/sql.py), per pair.
CREATE VIEW hires_projected AS
SELECT year, quarter, department_id, job_id, sum(hires)::bigint AS hires
FROM (
    SELECT year, department_id, job_id, q1, q2, q3, q4 FROM hires_cells
    UNION ALL
    SELECT d.year, u.department_id, u.job_id, u.q1, u.q2, u.q3, u.q4
    FROM hires_deltas d,
         unnest(d.department_ids, d.job_ids, d.q1, d.q2, d.q3, d.q4) AS u(department_id, job_id, q1, q2, q3, q4)
) a
CROSS JOIN LATERAL (VALUES (1::smallint, a.q1), (2::smallint, a.q2), (3::smallint, a.q3), (4::smallint, a.q4))
    AS v(quarter, hires)
GROUP BY year, quarter, department_id, job_id
HAVING sum(hires) <> 0;

SELECT rebuild_hires_projection();
