-- Following one detection through the platform: an event keeps the id of its
-- EventCreated message (its enforcements' correlation_id) and the traceparent of the
-- request that caused it; an enforcement keeps both for its EnforcementCreated.
ALTER TABLE attune.event
    ADD COLUMN message_id  uuid,
    ADD COLUMN traceparent text;
ALTER TABLE attune.enforcement
    ADD COLUMN correlation_id uuid,
    ADD COLUMN traceparent    text;
