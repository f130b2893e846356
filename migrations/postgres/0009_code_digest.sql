-- A digest of a process sensor's code (its entrypoint and the other files of the pack's
-- sensors/ directory), so that a change to the code alone is a changed definition.
ALTER TABLE attune.sensor ADD COLUMN code_digest text;
