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
DROP TABLE attune.matcher_progress;
