-- Idempotency keys (POST /events' Idempotency-Key, a webhook's dedup_header): written in
-- the transaction of the event they name, so a repeat within the window finds the first
-- event whether the first request was answered, timed out or was stored late.
CREATE TABLE idempotency_key (
    scope     TEXT    NOT NULL,
    key_value TEXT    NOT NULL,
    event     INTEGER NOT NULL REFERENCES event (id) ON DELETE CASCADE,
    created   TEXT    NOT NULL,
    PRIMARY KEY (scope, key_value)
) STRICT;
CREATE INDEX idempotency_key_created_idx ON idempotency_key (created);
CREATE INDEX idempotency_key_event_idx ON idempotency_key (event);
