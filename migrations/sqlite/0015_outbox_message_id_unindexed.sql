-- The same table without the unique index on `message_id` (a random UUID v4: each insert
-- touched a random page of it; nothing looks rows up by it and the ids stay unique by
-- construction). SQLite cannot drop a column constraint, so the table is rebuilt, keeping
-- its AUTOINCREMENT counter so no id is ever handed out twice.
CREATE TABLE outbox_rebuilt (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    message_type TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    created      TEXT    NOT NULL,
    published_at TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    parked_at    TEXT
) STRICT;
INSERT INTO outbox_rebuilt (id, message_id, message_type, routing_key, body, created,
        published_at, attempts, last_error, parked_at)
    SELECT id, message_id, message_type, routing_key, body, created,
        published_at, attempts, last_error, parked_at
    FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_rebuilt';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_rebuilt', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_unpublished_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NOT NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
