-- What the pruner looks for: published outbox rows by when they were published, events by
-- when they were stored, idempotency keys by when they were written (already indexed).
CREATE INDEX outbox_published_idx ON attune.outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX event_created_idx ON attune.event (created);
