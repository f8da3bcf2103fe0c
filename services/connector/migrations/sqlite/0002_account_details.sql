-- Account details, sealed credentials (AEAD; the key id travels with the ciphertext so keys
-- can rotate) and create idempotency. status_since is microseconds since the epoch.
ALTER TABLE channel_accounts ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
ALTER TABLE channel_accounts ADD COLUMN team_id TEXT NOT NULL DEFAULT '';
ALTER TABLE channel_accounts ADD COLUMN send_rate_per_minute INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel_accounts ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE channel_accounts ADD COLUMN status_since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channel_accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel_accounts ADD COLUMN credentials BLOB;
ALTER TABLE channel_accounts ADD COLUMN credentials_kid TEXT;
ALTER TABLE channel_accounts ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX channel_accounts_idempotency ON channel_accounts (tenant_id, idempotency_key);

-- Channel events giao does not model yet, kept verbatim so they can be replayed later.
CREATE TABLE raw_channel_events (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    event_name         TEXT NOT NULL,
    body               BLOB NOT NULL,
    received_at        BIGINT NOT NULL
);
