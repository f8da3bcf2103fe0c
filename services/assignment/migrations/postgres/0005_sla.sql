-- One SLA policy per channel account; '' is the tenant's default. Hours and holidays are
-- local to `time_zone`.
CREATE TABLE sla_policies (
    tenant_id           TEXT NOT NULL,
    channel_account_id  TEXT NOT NULL,
    first_response_secs BIGINT NOT NULL,
    next_response_secs  BIGINT NOT NULL,
    weekdays            TEXT NOT NULL DEFAULT '',
    opens_at            TEXT NOT NULL DEFAULT '',
    closes_at           TEXT NOT NULL DEFAULT '',
    holidays            TEXT NOT NULL DEFAULT '',
    time_zone           TEXT NOT NULL,
    escalate_to_user_id TEXT NOT NULL DEFAULT '',
    updated_at_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id)
);
-- One clock per conversation: waiting since the first unanswered customer message
-- (NULL: answered), when that answer is due, and whether the breach has fired. A scheduler
-- replica claims a due clock with a lease before firing it.
CREATE TABLE sla_clocks (
    tenant_id           TEXT NOT NULL,
    conversation_id     TEXT NOT NULL,
    channel_account_id  TEXT NOT NULL,
    owner_user_id       TEXT NOT NULL DEFAULT '',
    team_id             TEXT NOT NULL DEFAULT '',
    kind                TEXT NOT NULL DEFAULT 'first_response',
    waiting_since_us    BIGINT,
    due_at_us           BIGINT,
    last_outbound_at_us BIGINT NOT NULL DEFAULT 0,
    replied             BOOLEAN NOT NULL DEFAULT FALSE,
    breached_at_us      BIGINT,
    lease_owner         TEXT NOT NULL DEFAULT '',
    lease_until_us      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX sla_clocks_due ON sla_clocks (due_at_us)
    WHERE waiting_since_us IS NOT NULL AND breached_at_us IS NULL AND due_at_us IS NOT NULL;
CREATE INDEX sla_clocks_waiting ON sla_clocks (tenant_id, waiting_since_us, conversation_id)
    WHERE waiting_since_us IS NOT NULL;
