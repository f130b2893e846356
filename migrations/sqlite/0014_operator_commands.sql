-- Operator commands sent to an instance that does not hold the sensor: queued here for
-- the holder, which takes them at its next placement tick (about a second).
CREATE TABLE sensor_command (
    id         INTEGER PRIMARY KEY,
    sensor_ref TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    sent_by    TEXT    NOT NULL,
    created    TEXT    NOT NULL
);
-- POST /reload on any instance bumps the generation; every instance reconciles when it
-- sees a newer one.
CREATE TABLE cluster_reload (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO cluster_reload (id, generation) VALUES (1, 0);
