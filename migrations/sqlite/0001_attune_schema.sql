-- The sensor service's tables for SQLite (single-node deployments and development).
-- Same shape as the PostgreSQL schema: JSON is TEXT, booleans are 0/1, timestamps are
-- fixed-width UTC RFC 3339 text ('2024-01-02T03:04:05.678901Z') so that text order is
-- time order. AUTOINCREMENT keeps ids from being reused after deletes, which the outbox
-- relies on (it is published in id order).

CREATE TABLE pack (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ref         TEXT    NOT NULL UNIQUE,
    label       TEXT    NOT NULL,
    description TEXT,
    version     TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    updated     TEXT    NOT NULL
) STRICT;

CREATE TABLE runtime (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ref         TEXT    NOT NULL UNIQUE,
    pack        INTEGER REFERENCES pack (id) ON DELETE SET NULL,
    pack_ref    TEXT,
    label       TEXT    NOT NULL,
    description TEXT,
    created     TEXT    NOT NULL,
    updated     TEXT    NOT NULL
) STRICT;

CREATE TABLE "trigger" (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    ref            TEXT    NOT NULL UNIQUE,
    pack           INTEGER REFERENCES pack (id) ON DELETE SET NULL,
    pack_ref       TEXT,
    label          TEXT    NOT NULL,
    description    TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    param_schema   TEXT,
    payload_schema TEXT,
    created        TEXT    NOT NULL,
    updated        TEXT    NOT NULL
) STRICT;
CREATE INDEX trigger_pack_idx ON "trigger" (pack);

CREATE TABLE sensor (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ref           TEXT    NOT NULL UNIQUE,
    pack          INTEGER REFERENCES pack (id) ON DELETE SET NULL,
    pack_ref      TEXT,
    label         TEXT    NOT NULL,
    description   TEXT,
    entrypoint    TEXT    NOT NULL,
    runtime       INTEGER REFERENCES runtime (id) ON DELETE SET NULL,
    runtime_ref   TEXT    NOT NULL,
    "trigger"     INTEGER NOT NULL REFERENCES "trigger" (id),
    trigger_ref   TEXT    NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    poll_interval INTEGER,
    param_schema  TEXT,
    config        TEXT    NOT NULL DEFAULT '{}',
    created       TEXT    NOT NULL,
    updated       TEXT    NOT NULL
) STRICT;
CREATE INDEX sensor_pack_idx ON sensor (pack);
CREATE INDEX sensor_enabled_idx ON sensor (created, id) WHERE enabled;

CREATE TABLE "action" (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ref         TEXT    NOT NULL UNIQUE,
    pack        INTEGER REFERENCES pack (id) ON DELETE SET NULL,
    pack_ref    TEXT,
    label       TEXT    NOT NULL,
    description TEXT,
    created     TEXT    NOT NULL,
    updated     TEXT    NOT NULL
) STRICT;

CREATE TABLE rule (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ref         TEXT    NOT NULL UNIQUE,
    pack        INTEGER REFERENCES pack (id) ON DELETE SET NULL,
    pack_ref    TEXT,
    label       TEXT    NOT NULL,
    description TEXT,
    "action"    INTEGER REFERENCES "action" (id) ON DELETE SET NULL,
    action_ref  TEXT    NOT NULL,
    "trigger"   INTEGER NOT NULL REFERENCES "trigger" (id),
    trigger_ref TEXT    NOT NULL,
    conditions  TEXT    NOT NULL DEFAULT '{}',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created     TEXT    NOT NULL,
    updated     TEXT    NOT NULL
) STRICT;
CREATE INDEX rule_pack_idx ON rule (pack);
CREATE INDEX rule_enabled_trigger_idx ON rule (trigger_ref, created, id) WHERE enabled;

CREATE TABLE event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    "trigger"   INTEGER REFERENCES "trigger" (id) ON DELETE SET NULL,
    trigger_ref TEXT    NOT NULL,
    config      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    source      INTEGER REFERENCES sensor (id) ON DELETE SET NULL,
    source_ref  TEXT,
    created     TEXT    NOT NULL
) STRICT;
CREATE INDEX event_trigger_ref_idx ON event (trigger_ref, id DESC);

CREATE TABLE enforcement (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        INTEGER NOT NULL REFERENCES rule (id),
    rule_ref    TEXT    NOT NULL,
    trigger_ref TEXT    NOT NULL,
    event       INTEGER NOT NULL REFERENCES event (id) ON DELETE CASCADE,
    status      TEXT    NOT NULL DEFAULT 'created',
    payload     TEXT    NOT NULL,
    condition   TEXT    NOT NULL CHECK (condition IN ('all', 'any')),
    conditions  TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    UNIQUE (rule, event)
) STRICT;
CREATE INDEX enforcement_rule_ref_idx ON enforcement (rule_ref, id DESC);
CREATE INDEX enforcement_event_idx ON enforcement (event);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL UNIQUE,
    message_type TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    created      TEXT    NOT NULL,
    published_at TEXT
) STRICT;
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
