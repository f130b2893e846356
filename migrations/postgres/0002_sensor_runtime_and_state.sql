-- What custom sensor runtimes need: where the pack lives on disk, how the sensor runs
-- (poll or stream) and which environment variables it may see; and a place for sensors
-- (and timers) to remember state across polls and restarts.
ALTER TABLE attune.sensor ADD COLUMN pack_path text;
ALTER TABLE attune.sensor ADD COLUMN mode text;
ALTER TABLE attune.sensor ADD COLUMN pass_env jsonb NOT NULL DEFAULT '[]'::jsonb;

CREATE TABLE attune.sensor_state (
    sensor_ref text PRIMARY KEY,
    state jsonb NOT NULL,
    updated timestamptz NOT NULL
);

-- How far the rule matcher got: every event with an id up to `matched_through` has its
-- enforcements stored. Events above it (stored, then the service stopped) are matched
-- again when the matcher starts; one row, updated once per batch.
CREATE TABLE attune.matcher_progress (
    id smallint PRIMARY KEY CHECK (id = 1),
    matched_through bigint NOT NULL
);
INSERT INTO attune.matcher_progress (id, matched_through)
    SELECT 1, COALESCE(max(id), 0) FROM attune.event;
