-- Operator commands sent to an instance that does not hold the sensor: queued here for
-- the holder, which takes them at its next placement tick (about a second).
CREATE TABLE attune.sensor_command (
    id         bigserial   PRIMARY KEY,
    sensor_ref text        NOT NULL,
    action     text        NOT NULL,
    sent_by    text        NOT NULL,
    created    timestamptz NOT NULL
);
-- POST /reload on any instance bumps the generation; every instance reconciles when it
-- sees a newer one.
CREATE TABLE attune.cluster_reload (
    id         smallint PRIMARY KEY CHECK (id = 1),
    generation bigint   NOT NULL
);
INSERT INTO attune.cluster_reload (id, generation) VALUES (1, 0);
