-- Who runs each account's session. An acquisition bumps the fencing token; renewals and
-- releases are conditional on (owner, token), so a replica that lost its lease cannot act
-- on it. Times are microseconds since the epoch; owner '' = free.
CREATE TABLE session_leases (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    owner              TEXT NOT NULL,
    token              BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id)
);

-- Every acquisition, for operators and for checking that tokens only grow.
CREATE TABLE session_history (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    owner              TEXT NOT NULL,
    token              BIGINT NOT NULL,
    acquired_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id, token)
);

-- Live connector replicas (heartbeat), to share accounts fairly.
CREATE TABLE connector_replicas (
    replica_id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
