-- Daily roll-ups of `hourly`, `hourly_hist` and `facts`, kept by the fold beside them: a
-- report reads whole UTC days from these and only the hours at the edges of its range from
-- the hourly tables, so 90 days cost about 24 times fewer rows and the figures are the same
-- (sums of sums; distinct conversations over the union of the facts). The columns are the
-- hourly tables' in the same order, `hour` holding the first hour of the UTC day, so that
-- one query text reads either.
CREATE TABLE daily (
    tenant_id              TEXT NOT NULL,
    hour                   INTEGER NOT NULL,
    user_id                TEXT NOT NULL,
    team_id                TEXT NOT NULL,
    channel_account_id     TEXT NOT NULL,
    lead_source            TEXT NOT NULL,
    messages_in            INTEGER NOT NULL DEFAULT 0,
    messages_out           INTEGER NOT NULL DEFAULT 0,
    conversations_opened   INTEGER NOT NULL DEFAULT 0,
    conversations_assigned INTEGER NOT NULL DEFAULT 0,
    conversations_closed   INTEGER NOT NULL DEFAULT 0,
    first_responses        INTEGER NOT NULL DEFAULT 0,
    responses              INTEGER NOT NULL DEFAULT 0,
    sla_met                INTEGER NOT NULL DEFAULT 0,
    sla_breached           INTEGER NOT NULL DEFAULT 0,
    new_contacts           INTEGER NOT NULL DEFAULT 0,
    conversions            INTEGER NOT NULL DEFAULT 0,
    transferred_waiting    INTEGER NOT NULL DEFAULT 0,
    flagged_messages       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, hour, team_id, channel_account_id, lead_source)
);
CREATE INDEX daily_by_team ON daily (tenant_id, team_id, hour);
CREATE INDEX daily_by_account ON daily (tenant_id, channel_account_id, hour);
CREATE INDEX daily_by_hour ON daily (tenant_id, hour);

CREATE TABLE daily_hist (
    tenant_id          TEXT NOT NULL,
    hour               INTEGER NOT NULL,
    user_id            TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    lead_source        TEXT NOT NULL,
    kind               TEXT NOT NULL,
    bucket             INTEGER NOT NULL,
    count              INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, kind, hour, team_id, channel_account_id, lead_source, bucket)
);
CREATE INDEX daily_hist_by_team ON daily_hist (tenant_id, team_id, kind, hour);
CREATE INDEX daily_hist_by_hour ON daily_hist (tenant_id, kind, hour);

CREATE TABLE daily_facts (
    tenant_id          TEXT NOT NULL,
    metric             TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    hour               INTEGER NOT NULL,
    conversation_id    TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    lead_source        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, metric, user_id, hour, conversation_id, team_id, channel_account_id, lead_source)
);
CREATE INDEX daily_facts_by_user ON daily_facts (tenant_id, user_id, hour, metric);
CREATE INDEX daily_facts_by_team ON daily_facts (tenant_id, team_id, hour, metric);
CREATE INDEX daily_facts_by_hour ON daily_facts (tenant_id, metric, hour);

-- Roll up what was folded before this migration.
INSERT INTO daily
SELECT tenant_id, hour - hour % 86400000000, user_id, team_id, channel_account_id, lead_source,
    SUM(messages_in), SUM(messages_out), SUM(conversations_opened), SUM(conversations_assigned),
    SUM(conversations_closed), SUM(first_responses), SUM(responses), SUM(sla_met),
    SUM(sla_breached), SUM(new_contacts), SUM(conversions), SUM(transferred_waiting),
    SUM(flagged_messages)
FROM hourly
GROUP BY tenant_id, hour - hour % 86400000000, user_id, team_id, channel_account_id, lead_source;
INSERT INTO daily_hist
SELECT tenant_id, hour - hour % 86400000000, user_id, team_id, channel_account_id, lead_source,
    kind, bucket, SUM(count)
FROM hourly_hist
GROUP BY tenant_id, hour - hour % 86400000000, user_id, team_id, channel_account_id, lead_source,
    kind, bucket;
INSERT INTO daily_facts
SELECT DISTINCT tenant_id, metric, user_id, hour - hour % 86400000000, conversation_id, team_id,
    channel_account_id, lead_source
FROM facts;
