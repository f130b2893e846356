-- An outbox row the broker keeps refusing (or that no queue takes) leaves the publish
-- order: `attempts` counts refusals, `last_error` says why, and `parked_at` takes it out
-- until an operator runs `attune-sensor outbox retry`.
ALTER TABLE attune.outbox
    ADD COLUMN attempts   integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN parked_at  timestamptz;

DROP INDEX attune.outbox_unpublished_idx;
CREATE INDEX outbox_unpublished_idx ON attune.outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked_idx ON attune.outbox (id)
    WHERE published_at IS NULL AND parked_at IS NOT NULL;
