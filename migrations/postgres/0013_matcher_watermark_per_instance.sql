-- Several instances match the events they store themselves, so "every event up to the
-- watermark is matched" is said per instance: an event records who stored it, and each
-- instance keeps its own watermark. A live instance adopts the watermark of one that died
-- (matches what it left, then forgets the row). Rows stored before this belong to '',
-- which is never live, and the old single watermark becomes ''s (a database without
-- events needs none).
ALTER TABLE attune.event ADD COLUMN stored_by text NOT NULL DEFAULT '';
CREATE TABLE attune.matcher_watermark (
    instance        text   PRIMARY KEY,
    matched_through bigint NOT NULL
);
INSERT INTO attune.matcher_watermark (instance, matched_through)
    SELECT '', matched_through FROM attune.matcher_progress WHERE id = 1 AND EXISTS (SELECT 1 FROM attune.event);
-- Adoption and recovery read one instance's events above its watermark.
CREATE INDEX event_stored_by ON attune.event (stored_by, id);
-- `matcher_progress` stays for instances of the previous version during a rolling
-- upgrade: they keep matching their own events (stored as ''s) until they stop.
