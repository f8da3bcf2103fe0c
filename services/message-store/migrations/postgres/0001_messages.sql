-- Conversations: one per (channel account, external thread), per tenant.
CREATE TABLE conversations (
    id                   UUID PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    channel_account_id   TEXT NOT NULL,
    channel_kind         SMALLINT NOT NULL,
    external_thread_id   TEXT NOT NULL,
    thread_kind          SMALLINT NOT NULL,
    customer_external_id TEXT NOT NULL DEFAULT '',
    title                TEXT NOT NULL DEFAULT '',
    status               SMALLINT NOT NULL,
    owner_user_id        TEXT,
    team_id              TEXT,
    unread_count         INTEGER NOT NULL DEFAULT 0,
    last_inbound_at      TIMESTAMPTZ,
    last_outbound_at     TIMESTAMPTZ,
    last_activity_at     TIMESTAMPTZ NOT NULL,
    last_message_preview TEXT NOT NULL DEFAULT '',
    created_at           TIMESTAMPTZ NOT NULL,
    CONSTRAINT conversations_thread_key UNIQUE (tenant_id, channel_account_id, external_thread_id)
);
CREATE INDEX conversations_by_activity ON conversations (tenant_id, last_activity_at DESC, id DESC);

-- The dedupe key of every channel message. It lives outside the partitioned messages table
-- because a partitioned table can only enforce uniqueness that includes the partition key.
CREATE TABLE message_keys (
    tenant_id           TEXT NOT NULL,
    channel_account_id  TEXT NOT NULL,
    external_message_id TEXT NOT NULL,
    message_id          UUID NOT NULL,
    sent_at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id, external_message_id)
);

-- Messages, partitioned by month of sent_at. Monthly partitions are created ahead of time by
-- the service; the default partition catches anything outside them so nothing is ever refused.
CREATE TABLE messages (
    id                  UUID NOT NULL,
    tenant_id           TEXT NOT NULL,
    conversation_id     UUID NOT NULL,
    channel_account_id  TEXT NOT NULL,
    external_message_id TEXT,
    direction           SMALLINT NOT NULL,
    sender_kind         SMALLINT NOT NULL,
    sender_user_id      TEXT,
    sender_external_id  TEXT NOT NULL DEFAULT '',
    content_type        SMALLINT NOT NULL,
    text                TEXT NOT NULL DEFAULT '',
    -- The full normalised content (giao.common.v1.MessageContent, protobuf-encoded).
    content             BYTEA NOT NULL,
    quote_external_id   TEXT,
    delivery_status     SMALLINT NOT NULL,
    sent_at             TIMESTAMPTZ NOT NULL,
    stored_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, sent_at)
) PARTITION BY RANGE (sent_at);
CREATE INDEX messages_history ON messages (tenant_id, conversation_id, sent_at DESC, id DESC);
CREATE TABLE messages_default PARTITION OF messages DEFAULT;
