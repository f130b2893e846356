-- The rows waiting to be published get a narrow table of their own, and publishing a
-- row deletes its entry there. Marking a row published used to write a new version of
-- the whole outbox row (not a HOT update: `published_at` is indexed) with an entry in
-- every index, so every message was written twice; now the outbox row is written once
-- and never updated. A waiting row's refusals live with its entry. A parked row moves to
-- a table of its own, so the publisher reads by one primary key whatever the planner
-- guesses: filtered on `parked_at IS NULL`, which it guesses without statistics to keep
-- 0.5 % of the rows, PostgreSQL sorted every waiting row for each read. Retention goes
-- by when a row was written (and only once it is published), so the outbox is indexed by
-- `created`. No foreign key to the outbox: its check would lock, and so write, each
-- outbox row again.
CREATE TABLE attune.outbox_pending (
    id         bigint  PRIMARY KEY,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE TABLE attune.outbox_parked (
    id         bigint      PRIMARY KEY,
    attempts   integer     NOT NULL,
    last_error text,
    parked_at  timestamptz NOT NULL
);
INSERT INTO attune.outbox_pending (id, attempts, last_error)
    SELECT id, attempts, last_error FROM attune.outbox
    WHERE published_at IS NULL AND parked_at IS NULL;
INSERT INTO attune.outbox_parked (id, attempts, last_error, parked_at)
    SELECT id, attempts, last_error, parked_at FROM attune.outbox
    WHERE published_at IS NULL AND parked_at IS NOT NULL;

DROP INDEX attune.outbox_unpublished_idx;
DROP INDEX attune.outbox_parked_idx;
DROP INDEX attune.outbox_published_idx;
ALTER TABLE attune.outbox
    DROP COLUMN published_at,
    DROP COLUMN attempts,
    DROP COLUMN last_error,
    DROP COLUMN parked_at;
CREATE INDEX outbox_created_idx ON attune.outbox (created);
