-- Aggregates built from events. Every time is microseconds since the epoch (UTC); hours are
-- the start of a UTC hour. Empty strings stand for "none" in dimension columns, so that
-- they can be part of primary keys.

-- The response clock of each conversation (see docs/reporting.md).
CREATE TABLE conversations (
    tenant_id              TEXT NOT NULL,
    conversation_id        TEXT NOT NULL,
    channel_account_id     TEXT NOT NULL DEFAULT '',
    contact_id             TEXT NOT NULL DEFAULT '',
    lead_source            TEXT NOT NULL DEFAULT '',
    owner_user_id          TEXT NOT NULL DEFAULT '',
    team_id                TEXT NOT NULL DEFAULT '',
    opened_at              BIGINT,
    closed_at              BIGINT,
    customer_waiting_since BIGINT,
    segment_started_at     BIGINT,
    segment_first          BIGINT NOT NULL DEFAULT 1,
    segment_breached       BIGINT NOT NULL DEFAULT 0,
    first_response_micros  BIGINT,
    messages_in            BIGINT NOT NULL DEFAULT 0,
    messages_out           BIGINT NOT NULL DEFAULT 0,
    last_message_at        BIGINT,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX conversations_by_contact ON conversations (tenant_id, contact_id);

-- Counters per tenant × agent × team × channel account × lead source × hour.
CREATE TABLE hourly (
    tenant_id              TEXT NOT NULL,
    hour                   BIGINT NOT NULL,
    user_id                TEXT NOT NULL,
    team_id                TEXT NOT NULL,
    channel_account_id     TEXT NOT NULL,
    lead_source            TEXT NOT NULL,
    messages_in            BIGINT NOT NULL DEFAULT 0,
    messages_out           BIGINT NOT NULL DEFAULT 0,
    conversations_opened   BIGINT NOT NULL DEFAULT 0,
    conversations_assigned BIGINT NOT NULL DEFAULT 0,
    conversations_closed   BIGINT NOT NULL DEFAULT 0,
    first_responses        BIGINT NOT NULL DEFAULT 0,
    responses              BIGINT NOT NULL DEFAULT 0,
    sla_met                BIGINT NOT NULL DEFAULT 0,
    sla_breached           BIGINT NOT NULL DEFAULT 0,
    new_contacts           BIGINT NOT NULL DEFAULT 0,
    conversions            BIGINT NOT NULL DEFAULT 0,
    transferred_waiting    BIGINT NOT NULL DEFAULT 0,
    flagged_messages       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, hour, team_id, channel_account_id, lead_source)
);
-- Scorecards sum one agent's counters from the index alone.
CREATE INDEX hourly_by_user ON hourly (tenant_id, user_id, hour) INCLUDE (messages_in,
    messages_out, conversations_assigned, first_responses, responses, sla_met, sla_breached,
    conversions, transferred_waiting, flagged_messages);
CREATE INDEX hourly_by_team ON hourly (tenant_id, team_id, hour);
CREATE INDEX hourly_by_account ON hourly (tenant_id, channel_account_id, hour);
CREATE INDEX hourly_by_hour ON hourly (tenant_id, hour);

-- Response-time distributions: log-bucket histograms, merged by adding counts.
CREATE TABLE hourly_hist (
    tenant_id          TEXT NOT NULL,
    hour               BIGINT NOT NULL,
    user_id            TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    lead_source        TEXT NOT NULL,
    kind               TEXT NOT NULL,
    bucket             BIGINT NOT NULL,
    count              BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, kind, hour, team_id, channel_account_id, lead_source, bucket)
);
-- Scorecards read one agent's buckets from the index alone.
CREATE INDEX hourly_hist_by_user ON hourly_hist (tenant_id, user_id, kind, hour) INCLUDE (bucket, count);
CREATE INDEX hourly_hist_by_team ON hourly_hist (tenant_id, team_id, kind, hour);
CREATE INDEX hourly_hist_by_hour ON hourly_hist (tenant_id, kind, hour);

-- The conversations behind each figure, for distinct counts and drill-down.
CREATE TABLE facts (
    tenant_id          TEXT NOT NULL,
    metric             TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    hour               BIGINT NOT NULL,
    conversation_id    TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    lead_source        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, metric, user_id, hour, conversation_id, team_id, channel_account_id, lead_source)
);
CREATE INDEX facts_by_user ON facts (tenant_id, user_id, hour, metric);
CREATE INDEX facts_by_team ON facts (tenant_id, team_id, hour, metric);
CREATE INDEX facts_by_hour ON facts (tenant_id, metric, hour);

-- Each owner's share of each customer wait; open while ended_at is NULL.
CREATE TABLE waits (
    tenant_id          TEXT NOT NULL,
    conversation_id    TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    user_id            TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    lead_source        TEXT NOT NULL,
    first_wait         BIGINT NOT NULL,
    ended_at           BIGINT,
    outcome            TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, conversation_id, started_at)
);
-- "Waiting at a cut-off" reads the few waits still open (or closed after it).
CREATE INDEX waits_by_user ON waits (tenant_id, user_id, ended_at);
CREATE INDEX waits_by_end ON waits (tenant_id, ended_at);

-- Staff seen in events, with their teams: visibility and "unknown agent".
CREATE TABLE known_users (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    team_id   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, team_id)
);

-- Contacts as the funnel sees them.
CREATE TABLE contacts (
    tenant_id   TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    lead_source TEXT NOT NULL DEFAULT '',
    care_status TEXT NOT NULL DEFAULT '',
    created_at  BIGINT,
    PRIMARY KEY (tenant_id, contact_id)
);

-- Care-status transitions per hour and lead source.
CREATE TABLE care_transitions (
    tenant_id   TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    lead_source TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour, lead_source, from_status, to_status)
);

-- Periods a channel account was not connected; open while ended_at is NULL.
CREATE TABLE account_outages (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    ended_at           BIGINT,
    status             TEXT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id, started_at)
);
