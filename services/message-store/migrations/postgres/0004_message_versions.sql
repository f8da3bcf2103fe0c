-- Earlier versions of edited messages, oldest first.
CREATE TABLE message_versions (
    tenant_id   TEXT NOT NULL,
    message_id  UUID NOT NULL,
    version     INTEGER NOT NULL,
    content     BYTEA NOT NULL,
    replaced_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, message_id, version)
);
