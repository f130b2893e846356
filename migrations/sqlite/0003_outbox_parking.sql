-- An outbox row the broker keeps refusing (or that no queue takes) leaves the publish
-- order: `attempts` counts refusals, `last_error` says why, and `parked_at` takes it out
-- until an operator runs `attune-sensor outbox retry`.
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN parked_at TEXT;

DROP INDEX outbox_unpublished_idx;
CREATE INDEX outbox_unpublished_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NOT NULL;
