-- One handover job per leaver: its progress makes OffboardStaff resumable and its final
-- report makes a repeated call return the same answer.
CREATE TABLE offboarding_jobs (
    id                  TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    successor_user_id   TEXT NOT NULL,
    actor               TEXT NOT NULL,
    export_id           TEXT NOT NULL DEFAULT '',
    export_sha256       TEXT NOT NULL DEFAULT '',
    conversations_moved BIGINT NOT NULL DEFAULT 0,
    deactivated         BOOLEAN NOT NULL DEFAULT FALSE,
    completed           BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_us       BIGINT NOT NULL,
    completed_at_us     BIGINT,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX ownership_changes_by_previous_owner ON ownership_changes (tenant_id, previous_owner);
