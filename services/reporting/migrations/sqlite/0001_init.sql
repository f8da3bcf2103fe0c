-- Events already folded into the aggregates: consumers are idempotent by event id.
CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    processed_at INTEGER NOT NULL
);
