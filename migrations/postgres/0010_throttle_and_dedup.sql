-- Rule throttling: a rule's throttle, the window each group of its matches is in (held
-- `once_after` enforcements wait in `pending` until `closes`), and on an enforcement the
-- window it sums up.
ALTER TABLE attune.rule ADD COLUMN throttle jsonb;
ALTER TABLE attune.enforcement ADD COLUMN throttle jsonb;
CREATE TABLE attune.rule_throttle (
    rule_ref    text        NOT NULL,
    group_key   text        NOT NULL,
    opened      timestamptz NOT NULL,
    closes      timestamptz NOT NULL,
    matched     bigint      NOT NULL,
    first_event bigint      NOT NULL,
    last_event  bigint      NOT NULL,
    pending     jsonb,
    PRIMARY KEY (rule_ref, group_key)
);
CREATE INDEX rule_throttle_closes_idx ON attune.rule_throttle (closes);

-- Content dedup on a trigger or a sensor; its keys are idempotency keys that expire with
-- their own window (request keys keep expiring with dedup.window).
ALTER TABLE attune.trigger ADD COLUMN dedup jsonb;
ALTER TABLE attune.sensor ADD COLUMN dedup jsonb;
ALTER TABLE attune.idempotency_key ADD COLUMN expires timestamptz;
