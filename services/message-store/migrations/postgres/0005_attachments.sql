-- Which message refers to a stored attachment, so reads can be checked against visibility.
CREATE TABLE attachment_refs (
    tenant_id   TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    message_id  UUID NOT NULL,
    PRIMARY KEY (tenant_id, storage_key, message_id)
);
