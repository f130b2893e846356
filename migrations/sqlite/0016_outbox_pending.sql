-- The rows waiting to be published get a narrow table of their own, and publishing a
-- row deletes its entry there. Marking a row published used to rewrite the whole outbox
-- row (its body included), take it out of one partial index and put it into another, so
-- every message was written twice; now the outbox row is written once and never updated.
-- A waiting row's refusals live with its entry; a parked row moves to a table of its own
-- (as on PostgreSQL, where that keeps the publisher's read on one primary key). Retention
-- goes by when a row was written (and only once it is published), so the outbox is
-- indexed by `created`.
CREATE TABLE outbox_pending (
    id         INTEGER PRIMARY KEY,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
) STRICT;
CREATE TABLE outbox_parked (
    id         INTEGER PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    last_error TEXT,
    parked_at  TEXT    NOT NULL
) STRICT;
INSERT INTO outbox_pending (id, attempts, last_error)
    SELECT id, attempts, last_error FROM outbox
    WHERE published_at IS NULL AND parked_at IS NULL;
INSERT INTO outbox_parked (id, attempts, last_error, parked_at)
    SELECT id, attempts, last_error, parked_at FROM outbox
    WHERE published_at IS NULL AND parked_at IS NOT NULL;

DROP INDEX outbox_unpublished_idx;
DROP INDEX outbox_parked_idx;
DROP INDEX outbox_published_idx;
ALTER TABLE outbox DROP COLUMN published_at;
ALTER TABLE outbox DROP COLUMN attempts;
ALTER TABLE outbox DROP COLUMN last_error;
ALTER TABLE outbox DROP COLUMN parked_at;
CREATE INDEX outbox_created_idx ON outbox (created);
