CREATE TABLE notes (
    id              BLOB PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    contact_id      BLOB NOT NULL,
    conversation_id BLOB,
    author_user_id  TEXT NOT NULL,
    text            TEXT NOT NULL,
    folded_text     TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CONSTRAINT notes_idempotency_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX notes_by_contact ON notes (tenant_id, contact_id, created_at DESC, id DESC);

CREATE VIRTUAL TABLE notes_fts USING fts5(folded_text, content = 'notes', content_rowid = 'rowid');
CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts (rowid, folded_text) VALUES (new.rowid, new.folded_text);
END;
CREATE TRIGGER notes_fts_update AFTER UPDATE OF folded_text ON notes BEGIN
    INSERT INTO notes_fts (notes_fts, rowid, folded_text) VALUES ('delete', old.rowid, old.folded_text);
    INSERT INTO notes_fts (rowid, folded_text) VALUES (new.rowid, new.folded_text);
END;

CREATE TABLE note_versions (
    note_id        BLOB NOT NULL,
    version        INTEGER NOT NULL,
    text           TEXT NOT NULL,
    author_user_id TEXT NOT NULL,
    replaced_at    INTEGER NOT NULL,
    PRIMARY KEY (note_id, version)
);

CREATE TABLE message_reactions (
    tenant_id           TEXT NOT NULL,
    message_id          BLOB NOT NULL,
    reactor_external_id TEXT NOT NULL,
    reaction            TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, message_id, reactor_external_id)
);

CREATE TABLE contact_merges (
    tenant_id  TEXT NOT NULL,
    target_id  BLOB NOT NULL,
    source_id  BLOB NOT NULL,
    merged_by  TEXT NOT NULL,
    merged_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
);
CREATE INDEX contact_merges_by_target ON contact_merges (tenant_id, target_id);
