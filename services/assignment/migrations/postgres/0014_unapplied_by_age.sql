-- The drain takes the oldest unapplied routing decisions across tenants: an index in that
-- order holds only the few pending ones, so each pass reads those alone instead of every
-- conversation (a scan that a large handover, which writes 100,000 rows here, made slow).
DROP INDEX conversation_load_unapplied;
CREATE INDEX conversation_load_unapplied ON conversation_load (updated_at_us) WHERE NOT applied;
