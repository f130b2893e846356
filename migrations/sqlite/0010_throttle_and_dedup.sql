-- Rule throttling: a rule's throttle, the window each group of its matches is in (held
-- `once_after` enforcements wait in `pending` until `closes`), and on an enforcement the
-- window it sums up.
ALTER TABLE rule ADD COLUMN throttle TEXT;
ALTER TABLE enforcement ADD COLUMN throttle TEXT;
CREATE TABLE rule_throttle (
    rule_ref    TEXT    NOT NULL,
    group_key   TEXT    NOT NULL,
    opened      TEXT    NOT NULL,
    closes      TEXT    NOT NULL,
    matched     INTEGER NOT NULL,
    first_event INTEGER NOT NULL,
    last_event  INTEGER NOT NULL,
    pending     TEXT,
    PRIMARY KEY (rule_ref, group_key)
) STRICT;
CREATE INDEX rule_throttle_closes_idx ON rule_throttle (closes);

-- Content dedup on a trigger or a sensor; its keys are idempotency keys that expire with
-- their own window (request keys keep expiring with dedup.window).
ALTER TABLE "trigger" ADD COLUMN dedup TEXT;
ALTER TABLE sensor ADD COLUMN dedup TEXT;
ALTER TABLE idempotency_key ADD COLUMN expires TEXT;
