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

-- Whether the rule matcher has finished with an event. Events stored but never matched
-- (the service stopped in between) are matched again when the matcher starts; rows that
-- predate this column were matched already.
ALTER TABLE attune.event ADD COLUMN matched boolean NOT NULL DEFAULT false;
UPDATE attune.event SET matched = true;
CREATE INDEX event_unmatched_idx ON attune.event (id) WHERE NOT matched;
