-- Marking a row published is not a HOT update (`published_at` is indexed), so it writes
-- a new entry into every index of the table. The unique index on `message_id` (a random
-- UUID v4, so each entry lands on a random page) made every insert and every mark pay
-- for one more: about a third of the publisher's database time. Nothing looks rows up by
-- it; the ids stay unique by construction (122 random bits each).
ALTER TABLE attune.outbox DROP CONSTRAINT outbox_message_id_key;
