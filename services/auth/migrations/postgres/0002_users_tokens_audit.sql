-- Staff of a tenant. Email is stored lowercased; at least one of email and phone is set.
CREATE TABLE users (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    email           TEXT,
    phone           TEXT,
    display_name    TEXT NOT NULL,
    role            TEXT NOT NULL,
    status          TEXT NOT NULL,
    session_version BIGINT NOT NULL DEFAULT 1,
    password_hash   TEXT,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_email ON users (tenant_id, email) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_phone ON users (tenant_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE user_teams (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    team_id   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, team_id)
);
CREATE INDEX user_teams_team ON user_teams (tenant_id, team_id);

-- Refresh tokens, only as SHA-256 of the token. A family is one login's chain of rotations.
CREATE TABLE refresh_tokens (
    token_hash      TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    family_id       TEXT NOT NULL,
    session_version BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    used_at         TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (tenant_id, user_id);

-- Token signing keys (shared by every tenant); the private half is AEAD-encrypted.
CREATE TABLE signing_keys (
    kid                   TEXT PRIMARY KEY,
    public_key            BYTEA NOT NULL,
    encrypted_private_key BYTEA NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    retired_at            TIMESTAMPTZ
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

-- The head of each tenant's audit chain: locked FOR UPDATE to serialise appends.
CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL
);

-- Append-only, hash-chained per tenant.
CREATE TABLE audit_log (
    tenant_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    details_json TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    -- The bus event an appended record came from, so a redelivery appends nothing.
    event_id     TEXT,
    PRIMARY KEY (tenant_id, seq)
);
CREATE UNIQUE INDEX audit_log_event ON audit_log (tenant_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (tenant_id, actor, seq);
CREATE INDEX audit_log_action ON audit_log (tenant_id, action, seq);
