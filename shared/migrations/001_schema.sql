-- The three tables of the data dictionary (CONTRACT §1). Each row also keeps where it came from:
-- src_object is the ledger row (ingest_objects.id) of the object version that last wrote it, and
-- src_line its physical line in that file, so "later upload wins" can be decided on every merge.
CREATE TABLE IF NOT EXISTS departments (
    id          integer PRIMARY KEY,
    department  text    NOT NULL,
    src_object  bigint  NOT NULL,
    src_line    integer NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id          integer PRIMARY KEY,
    job         text    NOT NULL,
    src_object  bigint  NOT NULL,
    src_line    integer NOT NULL
);

CREATE TABLE IF NOT EXISTS hired_employees (
    id             integer     PRIMARY KEY,
    name           text        NOT NULL,
    datetime       timestamptz NOT NULL,
    department_id  integer     NOT NULL,
    job_id         integer     NOT NULL,
    src_object     bigint      NOT NULL,
    src_line       integer     NOT NULL
);
CREATE INDEX IF NOT EXISTS hired_employees_datetime_idx ON hired_employees (datetime);

-- Uploads accepted by the query service's POST /upload (before any event is consumed).
CREATE TABLE IF NOT EXISTS uploads (
    id          uuid        PRIMARY KEY,
    table_name  text        NOT NULL,
    bucket      text        NOT NULL,
    key         text        NOT NULL,
    filename    text,
    size_bytes  bigint,
    trace_id    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one row per object version seen in the raw bucket, and its outcome. The three tables
-- are a projection of these rows applied in order_key order.
CREATE TABLE IF NOT EXISTS ingest_objects (
    id             bigserial   PRIMARY KEY,
    bucket         text        NOT NULL,
    key            text        NOT NULL,
    version        text        NOT NULL,  -- S3 versionId, or 'etag:<etag>@<sequencer|time>' when unversioned
    etag           text,
    sequencer      text,
    event_time     timestamptz NOT NULL,
    order_key      text        NOT NULL,  -- sorts object versions in upload order
    table_name     text,
    upload_id      uuid,
    size_bytes     bigint,
    status         text        NOT NULL DEFAULT 'processing'
                               CHECK (status IN ('processing', 'loaded', 'failed')),
    lines_done     integer     NOT NULL DEFAULT 0,  -- checkpoint: physical lines committed
    bytes_done     bigint      NOT NULL DEFAULT 0,  -- checkpoint: bytes of the object committed
    rows_loaded    integer     NOT NULL DEFAULT 0,
    rows_rejected  integer     NOT NULL DEFAULT 0,
    batches        integer     NOT NULL DEFAULT 0,
    attempts       integer     NOT NULL DEFAULT 0,
    error          text,
    trace_id       text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    UNIQUE (bucket, key, version)
);
CREATE INDEX IF NOT EXISTS ingest_objects_upload_idx ON ingest_objects (upload_id);
CREATE INDEX IF NOT EXISTS ingest_objects_order_idx ON ingest_objects (table_name, order_key);

-- Every S3 event message received and what the consumer did with it (the event log).
CREATE TABLE IF NOT EXISTS ingest_events (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    message_id   text,
    event_name   text,
    bucket       text,
    key          text,
    version      text,
    etag         text,
    sequencer    text,
    event_time   timestamptz,
    object_id    bigint REFERENCES ingest_objects (id),
    outcome      text        NOT NULL,
    detail       text
);

-- Rejected rows: never loaded, always kept with a reason a person can act on.
CREATE TABLE IF NOT EXISTS ingest_rejects (
    object_id  bigint  NOT NULL REFERENCES ingest_objects (id) ON DELETE CASCADE,
    line       integer NOT NULL,
    raw        text    NOT NULL,
    reason     text    NOT NULL,
    PRIMARY KEY (object_id, line)
);
