-- What custom sensor runtimes need: where the pack lives on disk, how the sensor runs
-- (poll or stream) and which environment variables it may see; and a place for sensors
-- (and timers) to remember state across polls and restarts.
ALTER TABLE sensor ADD COLUMN pack_path TEXT;
ALTER TABLE sensor ADD COLUMN mode TEXT;
ALTER TABLE sensor ADD COLUMN pass_env TEXT NOT NULL DEFAULT '[]';

CREATE TABLE sensor_state (
    sensor_ref TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated TEXT NOT NULL
) STRICT;

-- How far the rule matcher got: every event with an id up to `matched_through` has its
-- enforcements stored. Events above it (stored, then the service stopped) are matched
-- again when the matcher starts; one row, updated once per batch.
CREATE TABLE matcher_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    matched_through INTEGER NOT NULL
) STRICT;
INSERT INTO matcher_progress (id, matched_through)
    SELECT 1, COALESCE(max(id), 0) FROM event;
