-- Several instances on one database: each registers and heartbeats; a lease is held by
-- one instance at a time until it expires, its generation growing at each new holder.
CREATE TABLE attune.instance (
    id        text        PRIMARY KEY,
    labels    jsonb       NOT NULL,
    host      text        NOT NULL,
    pid       bigint      NOT NULL,
    version   text        NOT NULL,
    started   timestamptz NOT NULL,
    heartbeat timestamptz NOT NULL
);
CREATE TABLE attune.lease (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    generation bigint      NOT NULL,
    expires    timestamptz NOT NULL
);
