-- The outbox body is kept as the text the service wrote, as on SQLite. As `jsonb`, every
-- message was parsed on insert and printed again on each read, in PostgreSQL's own key
-- order, though nothing queries inside a body: the broker gets what the service wrote.
-- Rewrites the table once (the outbox holds published rows for `retention.outbox`).
ALTER TABLE attune.outbox ALTER COLUMN body TYPE text USING body::text;
