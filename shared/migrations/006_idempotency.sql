-- Idempotency keys of POST /tables/{table}/rows (CONTRACT §4). One row per key: the SHA-256 of the
-- request it first came with (method, table, content type and body), the batch (upload) id that
-- request wrote, and the answer once there is one. The primary key is what makes two concurrent
-- requests with the same key apply once: the second one's INSERT waits for the first one's
-- transaction, then finds its row. Rows older than the service's expiry (24 h) are treated as absent
-- and deleted as new keys arrive.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key             text        PRIMARY KEY,
    request_sha256  bytea       NOT NULL,
    batch_id        uuid        NOT NULL,
    table_name      text        NOT NULL,
    status_code     integer,              -- NULL while the first request works on it
    response        bytea,                -- the JSON answer given with status_code
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
