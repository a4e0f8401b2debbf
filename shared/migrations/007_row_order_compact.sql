-- The upload order on each row, compact: src_order becomes the upload time in microseconds since
-- the epoch (bigint), the leading part of ingest_objects.order_key. Migration 004 kept the whole
-- key (63 characters) on every row, which about doubled a hired_employees row and PostgreSQL's
-- CPU per loaded row. Two rows of different uploads with the same time are told apart by their
-- full order keys, read by upload_order_of below (services/ingest/order.py has the rule).
SET LOCAL TIME ZONE 'UTC';

-- VOLATILE on purpose: its query takes a snapshot of its own when called, so a merge comparing
-- a row committed after the merge's statement began still finds that row's ledger entry (ledger
-- rows are committed before any row of their object is written).
CREATE OR REPLACE FUNCTION upload_order_of(object_id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT order_key FROM ingest_objects WHERE id = object_id);
END
$$;

CREATE OR REPLACE FUNCTION order_time_of(order_key text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN order_key = '' THEN 0
        ELSE extract(epoch FROM to_timestamp(substr(order_key, 1, 15), 'YYYYMMDD"T"HH24MISS'))::bigint * 1000000
             + substr(order_key, 16, 6)::bigint
    END
$$;

ALTER TABLE departments ALTER COLUMN src_order DROP DEFAULT;
ALTER TABLE jobs ALTER COLUMN src_order DROP DEFAULT;
ALTER TABLE hired_employees ALTER COLUMN src_order DROP DEFAULT;
ALTER TABLE departments ALTER COLUMN src_order TYPE bigint USING order_time_of(src_order);
ALTER TABLE jobs ALTER COLUMN src_order TYPE bigint USING order_time_of(src_order);
ALTER TABLE hired_employees ALTER COLUMN src_order TYPE bigint USING order_time_of(src_order);
-- A row written by other means than an upload (SQL by hand) sorts before every upload.
ALTER TABLE departments ALTER COLUMN src_order SET DEFAULT 0;
ALTER TABLE jobs ALTER COLUMN src_order SET DEFAULT 0;
ALTER TABLE hired_employees ALTER COLUMN src_order SET DEFAULT 0;
DROP FUNCTION order_time_of(text);
