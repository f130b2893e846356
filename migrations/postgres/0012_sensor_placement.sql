-- Where a sensor runs when several instances share the database: {"mode": "one"|"all",
-- "labels": {...}}. Rows written before this read as one instance, any labels.
ALTER TABLE attune.sensor ADD COLUMN placement jsonb;
-- Webhooks are passive: every instance serves them.
UPDATE attune.sensor SET placement = '{"mode": "all"}' WHERE entrypoint = 'webhook';
