-- An agent's inbox (owner filter), a supervisor's (team filter) and a handover's "everything
-- the leaver owns" read newest activity first: without these, each page walked the tenant's
-- whole activity index past other people's conversations (a handover of N conversations
-- became quadratic).
CREATE INDEX conversations_by_owner ON conversations (tenant_id, owner_user_id, last_activity_at DESC, id DESC);
CREATE INDEX conversations_by_team ON conversations (tenant_id, team_id, last_activity_at DESC, id DESC);
