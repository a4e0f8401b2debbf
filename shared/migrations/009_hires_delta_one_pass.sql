-- The projection's delta query (migration 008) in one aggregation instead of two.
--
-- 008 grouped a statement's rows by (quarter bucket, department, job), then regrouped those groups
-- by (year, department, job), reading year and quarter out of arrays per group. Here each row's
-- bucket becomes k = year * 4 + quarter - 1 by adding the first bucket's k to width_bucket's
-- result (integer arithmetic, no array lookups), and one aggregation by (k / 4, department, job)
-- sums each quarter with FILTER (k % 4 = ...; written %% inside format()). Same result; measured on one 20,000-row statement,
-- 66 ms -> 34 ms (half the projection's cost on the direct COPY path).
CREATE OR REPLACE FUNCTION hires_delta_query(source text) RETURNS text
LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    INSERT INTO hires_deltas (year, department_ids, job_ids, q1, q2, q3, q4, cells)
    WITH changed AS NOT MATERIALIZED (%s),
    span AS (SELECT min(datetime) AS lo, max(datetime) AS hi FROM changed),
    qs AS (
        SELECT array_agg(s AT TIME ZONE 'UTC' ORDER BY s) AS starts,
               (date_part('year', min(s)) * 4 + date_part('quarter', min(s)) - 2)::int AS k0
        FROM span, generate_series(date_trunc('quarter', lo AT TIME ZONE 'UTC'), hi AT TIME ZONE 'UTC',
                                   interval '3 months') AS s
    ),
    keyed AS (
        SELECT (SELECT k0 FROM qs) + width_bucket(datetime, (SELECT starts FROM qs)) AS k, department_id, job_id, n
        FROM changed
    ),
    cells AS (
        SELECT k / 4 AS year, department_id, job_id,
               coalesce(sum(n) FILTER (WHERE k %% 4 = 0), 0)::int AS q1,
               coalesce(sum(n) FILTER (WHERE k %% 4 = 1), 0)::int AS q2,
               coalesce(sum(n) FILTER (WHERE k %% 4 = 2), 0)::int AS q3,
               coalesce(sum(n) FILTER (WHERE k %% 4 = 3), 0)::int AS q4
        FROM keyed GROUP BY 1, 2, 3
    )
    SELECT year, array_agg(department_id), array_agg(job_id),
           array_agg(q1), array_agg(q2), array_agg(q3), array_agg(q4), count(*)
    FROM cells
    WHERE (q1, q2, q3, q4) <> (0, 0, 0, 0)
    GROUP BY year
$q$, source)
$f$;
