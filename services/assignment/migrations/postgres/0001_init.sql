-- Ownership history: who owned which conversation, when, and why. Append-only.
CREATE TABLE ownership_changes (
    id              UUID PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    owner_user_id   TEXT,
    previous_owner  TEXT,
    actor           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX ownership_changes_by_conversation ON ownership_changes (tenant_id, conversation_id, at);
