-- Same model as the PostgreSQL migration; search through FTS5 over folded text.
CREATE TABLE contact_codes (
    tenant_id   TEXT PRIMARY KEY,
    last_number INTEGER NOT NULL
);

CREATE TABLE contacts (
    id            BLOB PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    customer_code TEXT NOT NULL,
    display_name  TEXT NOT NULL DEFAULT '',
    care_status   TEXT NOT NULL,
    lead_source   TEXT NOT NULL DEFAULT '',
    custom_fields TEXT NOT NULL DEFAULT '{}',
    owner_user_id TEXT,
    merged_into   BLOB,
    folded_name   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CONSTRAINT contacts_code_key UNIQUE (tenant_id, customer_code)
);
CREATE INDEX contacts_by_update ON contacts (tenant_id, updated_at DESC, id DESC);

CREATE TABLE contact_phones (
    tenant_id  TEXT NOT NULL,
    contact_id BLOB NOT NULL,
    phone      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, phone)
);
CREATE INDEX contact_phones_by_phone ON contact_phones (tenant_id, phone);

CREATE TABLE contact_identities (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    external_user_id   TEXT NOT NULL,
    contact_id         BLOB NOT NULL,
    display_name       TEXT NOT NULL DEFAULT '',
    avatar_url         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, channel_account_id, external_user_id)
);
CREATE INDEX contact_identities_by_contact ON contact_identities (tenant_id, contact_id);

CREATE TABLE contact_tags (
    tenant_id  TEXT NOT NULL,
    contact_id BLOB NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, tag)
);
CREATE INDEX contact_tags_by_tag ON contact_tags (tenant_id, tag);

CREATE TABLE care_pipelines (
    tenant_id TEXT PRIMARY KEY,
    stages    TEXT NOT NULL
);

ALTER TABLE conversations ADD COLUMN contact_id BLOB;
CREATE INDEX conversations_by_contact ON conversations (tenant_id, contact_id);

ALTER TABLE messages ADD COLUMN folded_text TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN recalled_at INTEGER;
ALTER TABLE messages ADD COLUMN recalled_by TEXT;
ALTER TABLE messages ADD COLUMN failure_reason TEXT;

-- External-content FTS5 index over messages.folded_text, kept in step by triggers.
CREATE VIRTUAL TABLE messages_fts USING fts5(folded_text, content = 'messages', content_rowid = 'rowid');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, folded_text) VALUES (new.rowid, new.folded_text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF folded_text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, folded_text) VALUES ('delete', old.rowid, old.folded_text);
    INSERT INTO messages_fts (rowid, folded_text) VALUES (new.rowid, new.folded_text);
END;

CREATE VIRTUAL TABLE contacts_fts USING fts5(folded_name, content = 'contacts', content_rowid = 'rowid');
CREATE TRIGGER contacts_fts_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO contacts_fts (rowid, folded_name) VALUES (new.rowid, new.folded_name);
END;
CREATE TRIGGER contacts_fts_update AFTER UPDATE OF folded_name ON contacts BEGIN
    INSERT INTO contacts_fts (contacts_fts, rowid, folded_name) VALUES ('delete', old.rowid, old.folded_name);
    INSERT INTO contacts_fts (rowid, folded_name) VALUES (new.rowid, new.folded_name);
END;

CREATE TABLE outbound_keys (
    tenant_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    message_id      BLOB NOT NULL,
    sent_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
