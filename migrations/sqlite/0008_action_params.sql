-- A rule's action parameters (templates over the event), and on each enforcement the
-- action it asks for, the parameters rendered for it, and why rendering failed (then its
-- status is 'failed').
ALTER TABLE rule ADD COLUMN action_params TEXT;
ALTER TABLE enforcement ADD COLUMN action_ref TEXT;
ALTER TABLE enforcement ADD COLUMN action_params TEXT;
ALTER TABLE enforcement ADD COLUMN error TEXT;
