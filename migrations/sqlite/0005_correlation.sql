-- Following one detection through the platform: an event keeps the id of its
-- EventCreated message (its enforcements' correlation_id) and the traceparent of the
-- request that caused it; an enforcement keeps both for its EnforcementCreated.
ALTER TABLE event ADD COLUMN message_id TEXT;
ALTER TABLE event ADD COLUMN traceparent TEXT;
ALTER TABLE enforcement ADD COLUMN correlation_id TEXT;
ALTER TABLE enforcement ADD COLUMN traceparent TEXT;
