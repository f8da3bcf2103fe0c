-- Re-assignment of a conversation whose owner has not answered within the policy's time.
ALTER TABLE sla_policies ADD COLUMN reassign_after_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sla_clocks ADD COLUMN reassign_at_us BIGINT;
CREATE INDEX sla_clocks_reassign ON sla_clocks (reassign_at_us) WHERE reassign_at_us IS NOT NULL;
