-- OA connects in progress: the PKCE verifier waits here for the callback (single use).
CREATE TABLE oauth_states (
    tenant_id     TEXT NOT NULL,
    state         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    team_id       TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, state)
);

-- One row per outbound message, written before the send: a redelivered request finds it
-- and never sends twice. state: pending (safe to send), sending (outcome unknown), sent,
-- failed.
CREATE TABLE outbound_messages (
    tenant_id           TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    channel_account_id  TEXT NOT NULL,
    state               TEXT NOT NULL,
    external_message_id TEXT NOT NULL DEFAULT '',
    failure_code        TEXT NOT NULL DEFAULT '',
    failure_reason      TEXT NOT NULL DEFAULT '',
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
