-- The sensor service's tables, in their own schema so they can share a database with the
-- other Attune services. Ids are bigserial so batch writers can preallocate them with
-- nextval() and keep the exact input order; timestamps are set by the service (the
-- defaults only serve manual inserts).

CREATE SCHEMA IF NOT EXISTS attune;

CREATE TABLE attune.pack (
    id          bigserial   PRIMARY KEY,
    ref         text        NOT NULL UNIQUE,
    label       text        NOT NULL,
    description text,
    version     text        NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);

-- Runtimes are owned by the worker service; the sensor service only needs a row per
-- runtime ref its sensors use, created on demand.
CREATE TABLE attune.runtime (
    id          bigserial   PRIMARY KEY,
    ref         text        NOT NULL UNIQUE,
    pack        bigint      REFERENCES attune.pack (id) ON DELETE SET NULL,
    pack_ref    text,
    label       text        NOT NULL,
    description text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune."trigger" (
    id             bigserial   PRIMARY KEY,
    ref            text        NOT NULL UNIQUE,
    pack           bigint      REFERENCES attune.pack (id) ON DELETE SET NULL,
    pack_ref       text,
    label          text        NOT NULL,
    description    text,
    enabled        boolean     NOT NULL DEFAULT true,
    param_schema   jsonb,
    payload_schema jsonb,
    created        timestamptz NOT NULL DEFAULT now(),
    updated        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_pack_idx ON attune."trigger" (pack);

CREATE TABLE attune.sensor (
    id            bigserial   PRIMARY KEY,
    ref           text        NOT NULL UNIQUE,
    pack          bigint      REFERENCES attune.pack (id) ON DELETE SET NULL,
    pack_ref      text,
    label         text        NOT NULL,
    description   text,
    entrypoint    text        NOT NULL,
    runtime       bigint      REFERENCES attune.runtime (id) ON DELETE SET NULL,
    runtime_ref   text        NOT NULL,
    "trigger"     bigint      NOT NULL REFERENCES attune."trigger" (id),
    trigger_ref   text        NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    poll_interval bigint,
    param_schema  jsonb,
    config        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created       timestamptz NOT NULL DEFAULT now(),
    updated       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sensor_pack_idx ON attune.sensor (pack);
CREATE INDEX sensor_enabled_idx ON attune.sensor (created, id) WHERE enabled;

-- Actions belong to the executor; rules point at them by ref and by id when known.
CREATE TABLE attune."action" (
    id          bigserial   PRIMARY KEY,
    ref         text        NOT NULL UNIQUE,
    pack        bigint      REFERENCES attune.pack (id) ON DELETE SET NULL,
    pack_ref    text,
    label       text        NOT NULL,
    description text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.rule (
    id          bigserial   PRIMARY KEY,
    ref         text        NOT NULL UNIQUE,
    pack        bigint      REFERENCES attune.pack (id) ON DELETE SET NULL,
    pack_ref    text,
    label       text        NOT NULL,
    description text,
    "action"    bigint      REFERENCES attune."action" (id) ON DELETE SET NULL,
    action_ref  text        NOT NULL,
    "trigger"   bigint      NOT NULL REFERENCES attune."trigger" (id),
    trigger_ref text        NOT NULL,
    conditions  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    enabled     boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_pack_idx ON attune.rule (pack);
CREATE INDEX rule_enabled_trigger_idx ON attune.rule (trigger_ref, created, id) WHERE enabled;

CREATE TABLE attune.event (
    id          bigserial   PRIMARY KEY,
    "trigger"   bigint      REFERENCES attune."trigger" (id) ON DELETE SET NULL,
    trigger_ref text        NOT NULL,
    config      jsonb       NOT NULL,
    payload     jsonb       NOT NULL,
    source      bigint      REFERENCES attune.sensor (id) ON DELETE SET NULL,
    source_ref  text,
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_trigger_ref_idx ON attune.event (trigger_ref, id DESC);

CREATE TABLE attune.enforcement (
    id          bigserial   PRIMARY KEY,
    rule        bigint      NOT NULL REFERENCES attune.rule (id),
    rule_ref    text        NOT NULL,
    trigger_ref text        NOT NULL,
    event       bigint      NOT NULL REFERENCES attune.event (id) ON DELETE CASCADE,
    status      text        NOT NULL DEFAULT 'created',
    payload     jsonb       NOT NULL,
    condition   text        NOT NULL CHECK (condition IN ('all', 'any')),
    conditions  jsonb       NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    -- Makes enforcement creation idempotent: re-matching an event after a crash finds the
    -- enforcement it already wrote.
    CONSTRAINT enforcement_rule_event_key UNIQUE (rule, event)
);
CREATE INDEX enforcement_rule_ref_idx ON attune.enforcement (rule_ref, id DESC);
CREATE INDEX enforcement_event_idx ON attune.enforcement (event);

-- Transactional outbox: written in the same transaction as the rows it announces,
-- published in id order, then stamped with published_at.
CREATE TABLE attune.outbox (
    id           bigserial   PRIMARY KEY,
    message_id   uuid        NOT NULL UNIQUE,
    message_type text        NOT NULL,
    routing_key  text        NOT NULL,
    body         jsonb       NOT NULL,
    created      timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON attune.outbox (id) WHERE published_at IS NULL;
