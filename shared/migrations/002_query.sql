-- A transactional change log of the three data tables, so the query service can cache a metric and
-- know, with one index probe per request, whether any write has committed since it computed it.
--
-- Each writing transaction leaves one row (its transaction id), inserted by a statement-level
-- trigger in the same transaction: the row becomes visible exactly when the data does. Writers never
-- wait on each other here (each inserts its own key). A reader that computed a result under snapshot
-- S knows the result is still current iff no row is visible now that S could not see:
--   NOT EXISTS (SELECT 1 FROM data_changes WHERE xid >= pg_snapshot_xmin(S)
--                                           AND NOT pg_visible_in_snapshot(xid, S))
CREATE TABLE IF NOT EXISTS data_changes (
    xid         xid8        PRIMARY KEY,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION note_data_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO data_changes (xid) VALUES (pg_current_xact_id()) ON CONFLICT (xid) DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS departments_changed ON departments;
CREATE TRIGGER departments_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON departments
    FOR EACH STATEMENT EXECUTE FUNCTION note_data_change();
DROP TRIGGER IF EXISTS jobs_changed ON jobs;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION note_data_change();
DROP TRIGGER IF EXISTS hired_employees_changed ON hired_employees;
CREATE TRIGGER hired_employees_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hired_employees
    FOR EACH STATEMENT EXECUTE FUNCTION note_data_change();
