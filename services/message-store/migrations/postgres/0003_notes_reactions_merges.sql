-- Notes on contacts; edits keep every earlier text.
CREATE TABLE notes (
    id              UUID PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    contact_id      UUID NOT NULL,
    conversation_id UUID,
    author_user_id  TEXT NOT NULL,
    text            TEXT NOT NULL,
    folded_text     TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT notes_idempotency_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX notes_by_contact ON notes (tenant_id, contact_id, created_at DESC, id DESC);
CREATE INDEX notes_text_search ON notes USING gin (folded_text gin_trgm_ops);

CREATE TABLE note_versions (
    note_id        UUID NOT NULL,
    version        INTEGER NOT NULL,
    text           TEXT NOT NULL,
    author_user_id TEXT NOT NULL,
    replaced_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (note_id, version)
);

-- The latest reaction of each person to a message.
CREATE TABLE message_reactions (
    tenant_id           TEXT NOT NULL,
    message_id          UUID NOT NULL,
    reactor_external_id TEXT NOT NULL,
    reaction            TEXT NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, message_id, reactor_external_id)
);

-- Contacts merged into another: the source keeps existing (merged_into set), everything it had moves.
CREATE TABLE contact_merges (
    tenant_id  TEXT NOT NULL,
    target_id  UUID NOT NULL,
    source_id  UUID NOT NULL,
    merged_by  TEXT NOT NULL,
    merged_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
);
CREATE INDEX contact_merges_by_target ON contact_merges (tenant_id, target_id);
