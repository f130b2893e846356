-- Instances and leases, as on PostgreSQL; SQLite runs one instance (the lock file beside
-- the database enforces it), which registers and holds every lease.
CREATE TABLE instance (
    id        TEXT    PRIMARY KEY,
    labels    TEXT    NOT NULL,
    host      TEXT    NOT NULL,
    pid       INTEGER NOT NULL,
    version   TEXT    NOT NULL,
    started   TEXT    NOT NULL,
    heartbeat TEXT    NOT NULL
) STRICT;
CREATE TABLE lease (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    expires    TEXT    NOT NULL
) STRICT;
