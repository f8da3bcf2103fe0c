-- Closing frees capacity; a later customer message reopens. The times keep the two in order
-- whichever event is handled first.
ALTER TABLE conversation_load ADD COLUMN closed_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversation_load ADD COLUMN last_inbound_at_us BIGINT NOT NULL DEFAULT 0;
