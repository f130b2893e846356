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

-- Whether the rule matcher has finished with an event. Events stored but never matched
-- (the service stopped in between) are matched again when the matcher starts; rows that
-- predate this column were matched already.
ALTER TABLE event ADD COLUMN matched INTEGER NOT NULL DEFAULT 0;
UPDATE event SET matched = 1;
CREATE INDEX event_unmatched_idx ON event (id) WHERE matched = 0;
