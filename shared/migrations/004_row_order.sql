-- Upload order on the row itself (issue: "later upload wins" under concurrent consumers).
--
-- A merge used to ask the ledger for the order of the object that last wrote a row, with a subquery
-- under the statement's snapshot: ON CONFLICT can meet a row committed after that snapshot by an
-- object whose ledger row the snapshot cannot see, which then sorted first and was overwritten.
-- Each row now carries its writer's upload order (src_order: ingest_objects.order_key), so the
-- comparison reads only the conflicting row version itself, whatever is visible.
--
-- order_key is recomputed in its compact, delimiter-free form (services/ingest/order.py holds the
-- one definition; order_key_of below is its SQL twin, used here and by nothing else):
--   <event time, UTC, microseconds, 'YYYYMMDDTHHMMSSffffff'> '.' <sequencer, upper, left-padded
--   with 0 to 24> '.' <first 16 hex digits of sha256(len(key) ':' key version)>
CREATE OR REPLACE FUNCTION order_key_of(event_time timestamptz, sequencer text, key text, version text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(event_time AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISSUS')
        || '.' || lpad(upper(coalesce(sequencer, '')), 24, '0')
        || '.' || substr(encode(sha256(convert_to(length(key)::text || ':' || key || version, 'UTF8')), 'hex'), 1, 16)
$$;

UPDATE ingest_objects SET order_key = order_key_of(event_time, sequencer, key, version);
DROP FUNCTION order_key_of(timestamptz, text, text, text);

ALTER TABLE departments ADD COLUMN IF NOT EXISTS src_order text COLLATE "C";
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS src_order text COLLATE "C";
ALTER TABLE hired_employees ADD COLUMN IF NOT EXISTS src_order text COLLATE "C";
UPDATE departments t SET src_order = o.order_key FROM ingest_objects o WHERE o.id = t.src_object;
UPDATE jobs t SET src_order = o.order_key FROM ingest_objects o WHERE o.id = t.src_object;
UPDATE hired_employees t SET src_order = o.order_key FROM ingest_objects o WHERE o.id = t.src_object;
UPDATE departments SET src_order = '' WHERE src_order IS NULL;
UPDATE jobs SET src_order = '' WHERE src_order IS NULL;
UPDATE hired_employees SET src_order = '' WHERE src_order IS NULL;
-- A row written by other means than an upload (SQL by hand) sorts before every upload.
ALTER TABLE departments ALTER COLUMN src_order SET DEFAULT '', ALTER COLUMN src_order SET NOT NULL;
ALTER TABLE jobs ALTER COLUMN src_order SET DEFAULT '', ALTER COLUMN src_order SET NOT NULL;
ALTER TABLE hired_employees ALTER COLUMN src_order SET DEFAULT '', ALTER COLUMN src_order SET NOT NULL;

-- Statuses: `retracted` (an object deleted from the bucket: what it contributed is undone).
ALTER TABLE ingest_objects DROP CONSTRAINT IF EXISTS ingest_objects_status_check;
ALTER TABLE ingest_objects ADD CONSTRAINT ingest_objects_status_check
    CHECK (status IN ('processing', 'loaded', 'failed', 'retracted'));

-- Poison is decided from the ledger: the attempt during which the last batch committed. An attempt
-- that made progress never counts towards giving a file up (services/ingest/ledger.py).
ALTER TABLE ingest_objects ADD COLUMN IF NOT EXISTS progress_attempt integer NOT NULL DEFAULT 0;
-- What kind of object version this is: an ordinary file, or a whole-table snapshot (a restore).
ALTER TABLE ingest_objects ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'file'
    CHECK (kind IN ('file', 'snapshot'));
