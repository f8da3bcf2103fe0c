-- See the PostgreSQL migration of the same number.
CREATE INDEX conversations_by_owner ON conversations (tenant_id, owner_user_id, last_activity_at DESC, id DESC);
CREATE INDEX conversations_by_team ON conversations (tenant_id, team_id, last_activity_at DESC, id DESC);
