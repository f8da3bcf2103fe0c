-- Same model as the PostgreSQL schema. Times are INTEGER microseconds since the Unix epoch
-- (exact ordering, no text-format pitfalls); ids are UUIDs stored as 16-byte BLOBs.
CREATE TABLE conversations (
    id                   BLOB PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    channel_account_id   TEXT NOT NULL,
    channel_kind         INTEGER NOT NULL,
    external_thread_id   TEXT NOT NULL,
    thread_kind          INTEGER NOT NULL,
    customer_external_id TEXT NOT NULL DEFAULT '',
    title                TEXT NOT NULL DEFAULT '',
    status               INTEGER NOT NULL,
    owner_user_id        TEXT,
    team_id              TEXT,
    unread_count         INTEGER NOT NULL DEFAULT 0,
    last_inbound_at      INTEGER,
    last_outbound_at     INTEGER,
    last_activity_at     INTEGER NOT NULL,
    last_message_preview TEXT NOT NULL DEFAULT '',
    created_at           INTEGER NOT NULL,
    CONSTRAINT conversations_thread_key UNIQUE (tenant_id, channel_account_id, external_thread_id)
);
CREATE INDEX conversations_by_activity ON conversations (tenant_id, last_activity_at DESC, id DESC);

CREATE TABLE messages (
    id                  BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    conversation_id     BLOB NOT NULL REFERENCES conversations (id),
    channel_account_id  TEXT NOT NULL,
    external_message_id TEXT,
    direction           INTEGER NOT NULL,
    sender_kind         INTEGER NOT NULL,
    sender_user_id      TEXT,
    sender_external_id  TEXT NOT NULL DEFAULT '',
    content_type        INTEGER NOT NULL,
    text                TEXT NOT NULL DEFAULT '',
    content             BLOB NOT NULL,
    quote_external_id   TEXT,
    delivery_status     INTEGER NOT NULL,
    sent_at             INTEGER NOT NULL,
    stored_at           INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_external_key ON messages (tenant_id, channel_account_id, external_message_id)
    WHERE external_message_id IS NOT NULL;
CREATE INDEX messages_history ON messages (tenant_id, conversation_id, sent_at DESC, id DESC);
