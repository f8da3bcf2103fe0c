-- Newest-first reads across a whole tenant (search of common words, export by tenant,
-- reporting backfills) walk this index instead of sorting every match.
CREATE INDEX messages_by_tenant_time ON messages (tenant_id, sent_at DESC, id DESC);
