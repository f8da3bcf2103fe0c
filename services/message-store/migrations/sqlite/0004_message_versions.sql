-- Earlier versions of edited messages, oldest first.
CREATE TABLE message_versions (
    tenant_id   TEXT NOT NULL,
    message_id  BLOB NOT NULL,
    version     INTEGER NOT NULL,
    content     BLOB NOT NULL,
    replaced_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, message_id, version)
);
