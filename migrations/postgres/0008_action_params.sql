-- A rule's action parameters (templates over the event), and on each enforcement the
-- action it asks for, the parameters rendered for it, and why rendering failed (then its
-- status is 'failed').
ALTER TABLE attune.rule ADD COLUMN action_params jsonb;
ALTER TABLE attune.enforcement
    ADD COLUMN action_ref    text,
    ADD COLUMN action_params jsonb,
    ADD COLUMN error         text;
