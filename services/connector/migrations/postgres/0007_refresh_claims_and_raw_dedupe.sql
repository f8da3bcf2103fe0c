-- OA token refreshes across replicas. credentials_version is bumped by every credentials
-- write; a refresh first claims the row (refresh_claim, until refresh_claim_until, microseconds)
-- for the version it read, so only one replica presents the single-use refresh token, and
-- it stores the new pair only if the version is still the one it claimed.
ALTER TABLE channel_accounts ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channel_accounts ADD COLUMN refresh_claim TEXT NOT NULL DEFAULT '';
ALTER TABLE channel_accounts ADD COLUMN refresh_claim_until BIGINT NOT NULL DEFAULT 0;
-- A raw event retried by Zalo (num_retry, the same body) is kept once. Older rows have no
-- digest (NULL), which the unique index does not compare.
ALTER TABLE raw_channel_events ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX raw_channel_events_body
    ON raw_channel_events (tenant_id, channel_account_id, body_sha256);
