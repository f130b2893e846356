-- Idempotency keys (POST /events' Idempotency-Key, a webhook's dedup_header): written in
-- the transaction of the event they name, so a repeat within the window finds the first
-- event whether the first request was answered, timed out or was stored late.
CREATE TABLE attune.idempotency_key (
    scope     text        NOT NULL,
    key_value text        NOT NULL,
    event     bigint      NOT NULL REFERENCES attune.event (id) ON DELETE CASCADE,
    created   timestamptz NOT NULL,
    PRIMARY KEY (scope, key_value)
);
CREATE INDEX idempotency_key_created_idx ON attune.idempotency_key (created);
CREATE INDEX idempotency_key_event_idx ON attune.idempotency_key (event);
