-- Contacts: the company's record of each customer, with a per-tenant code that is never reused.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE contact_codes (
    tenant_id   TEXT PRIMARY KEY,
    last_number BIGINT NOT NULL
);

CREATE TABLE contacts (
    id            UUID PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    customer_code TEXT NOT NULL,
    display_name  TEXT NOT NULL DEFAULT '',
    care_status   TEXT NOT NULL,
    lead_source   TEXT NOT NULL DEFAULT '',
    -- JSON object of string values.
    custom_fields TEXT NOT NULL DEFAULT '{}',
    owner_user_id TEXT,
    merged_into   UUID,
    -- fold(display name) for search.
    folded_name   TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT contacts_code_key UNIQUE (tenant_id, customer_code)
);
CREATE INDEX contacts_by_update ON contacts (tenant_id, updated_at DESC, id DESC);
CREATE INDEX contacts_name_search ON contacts USING gin (folded_name gin_trgm_ops);

CREATE TABLE contact_phones (
    tenant_id  TEXT NOT NULL,
    contact_id UUID NOT NULL,
    phone      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, phone)
);
CREATE INDEX contact_phones_by_phone ON contact_phones (tenant_id, phone);

-- Who the customer is on each channel account.
CREATE TABLE contact_identities (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    external_user_id   TEXT NOT NULL,
    contact_id         UUID NOT NULL,
    display_name       TEXT NOT NULL DEFAULT '',
    avatar_url         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, channel_account_id, external_user_id)
);
CREATE INDEX contact_identities_by_contact ON contact_identities (tenant_id, contact_id);

CREATE TABLE contact_tags (
    tenant_id  TEXT NOT NULL,
    contact_id UUID NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, tag)
);
CREATE INDEX contact_tags_by_tag ON contact_tags (tenant_id, tag);

-- A tenant's care pipeline (JSON list of stages); absent means the default pipeline.
CREATE TABLE care_pipelines (
    tenant_id TEXT PRIMARY KEY,
    stages    TEXT NOT NULL
);

ALTER TABLE conversations ADD COLUMN contact_id UUID;
CREATE INDEX conversations_by_contact ON conversations (tenant_id, contact_id);

-- fold(text) for search; recall and delivery details; outbound idempotency.
ALTER TABLE messages ADD COLUMN folded_text TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN recalled_at TIMESTAMPTZ;
ALTER TABLE messages ADD COLUMN recalled_by TEXT;
ALTER TABLE messages ADD COLUMN failure_reason TEXT;
CREATE INDEX messages_text_search ON messages USING gin (folded_text gin_trgm_ops);

CREATE TABLE outbound_keys (
    tenant_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    message_id      UUID NOT NULL,
    sent_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
