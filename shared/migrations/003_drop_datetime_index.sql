-- hired_employees' index on datetime made every COPY insert each row at a random place of a second
-- B-tree: loading was 3-4x slower than into the table without it (bench/README.md), and the ingest
-- path is this system's hot path. Its one reader, the metrics' year filter, reads about a third of
-- the table for a year and is served from the query service's cache between writes: without the
-- index a recompute over 1,000,000 employees takes ~300 ms instead of ~170 ms.
DROP INDEX IF EXISTS hired_employees_datetime_idx;
