-- Channel accounts of every tenant; times in microseconds since the epoch.
CREATE TABLE channel_accounts (
    id           TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    kind         INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    status       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
