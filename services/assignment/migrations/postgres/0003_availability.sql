-- Whether an agent takes new work now (online, away, offline); routing reads it.
CREATE TABLE agent_availability (
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    availability TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
