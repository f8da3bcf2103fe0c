-- Channel accounts of every tenant. Credentials arrive with the Zalo adapters (encrypted column).
CREATE TABLE channel_accounts (
    id           TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    kind         SMALLINT NOT NULL,
    display_name TEXT NOT NULL,
    status       SMALLINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
