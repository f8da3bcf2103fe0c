-- Roster mirrored from auth: who may take conversations, in which teams. `team_ids` is
-- ",t1,t2," so that membership is one LIKE on both backends.
CREATE TABLE roster_users (
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    role         TEXT NOT NULL,
    active       BOOLEAN NOT NULL,
    team_ids     TEXT NOT NULL DEFAULT ',',
    display_name TEXT NOT NULL DEFAULT '',
    synced_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
-- Per-agent capacity overriding the routing policy's default.
CREATE TABLE agent_capacity (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    max_open  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
-- One policy per channel account; '' is the tenant's default. `last_user_id` is the
-- round-robin position.
CREATE TABLE routing_policies (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    strategy           TEXT NOT NULL,
    sticky_owner       BOOLEAN NOT NULL,
    max_open_per_agent BIGINT NOT NULL,
    rules_json         TEXT NOT NULL,
    last_user_id       TEXT NOT NULL DEFAULT '',
    updated_at_us      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id)
);
-- Every conversation this service has seen: its owner (routing's reservation until
-- `applied`), whether it is open (capacity), and its contact (sticky owner).
CREATE TABLE conversation_load (
    tenant_id          TEXT NOT NULL,
    conversation_id    TEXT NOT NULL,
    contact_id         TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    owner_user_id      TEXT,
    team_id            TEXT NOT NULL DEFAULT '',
    is_open            BOOLEAN NOT NULL DEFAULT TRUE,
    applied            BOOLEAN NOT NULL DEFAULT TRUE,
    -- Why routing chose the owner, for the history written when it is applied.
    reason             TEXT NOT NULL DEFAULT '',
    updated_at_us      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX conversation_load_by_owner ON conversation_load (tenant_id, owner_user_id) WHERE is_open;
CREATE INDEX conversation_load_by_contact ON conversation_load (tenant_id, contact_id, updated_at_us);
CREATE INDEX conversation_load_unapplied ON conversation_load (tenant_id) WHERE NOT applied;
-- Conversations nobody could take yet; handed out oldest first as capacity frees.
CREATE TABLE routing_queue (
    tenant_id          TEXT NOT NULL,
    conversation_id    TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    contact_id         TEXT NOT NULL,
    lead_source        TEXT NOT NULL DEFAULT '',
    tags               TEXT NOT NULL DEFAULT ',',
    enqueued_at_us     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX routing_queue_oldest ON routing_queue (tenant_id, enqueued_at_us, conversation_id);
