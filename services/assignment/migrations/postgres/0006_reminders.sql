-- Reminders staff set themselves ("call back Friday 10:00") and those follow-up rules
-- create; fired once by the scheduler (lease as for SLA clocks).
CREATE TABLE reminders (
    tenant_id       TEXT NOT NULL,
    reminder_id     TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL DEFAULT '',
    contact_id      TEXT NOT NULL DEFAULT '',
    text            TEXT NOT NULL,
    due_at_us       BIGINT NOT NULL,
    fired_at_us     BIGINT,
    -- 'manual' or 'follow_up:<rule_id>'.
    source          TEXT NOT NULL DEFAULT 'manual',
    -- A follow-up's quiet period: a message sent to the customer pushes it this far.
    quiet_secs      BIGINT NOT NULL DEFAULT 0,
    created_by      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL DEFAULT '',
    created_at_us   BIGINT NOT NULL,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, reminder_id)
);
CREATE UNIQUE INDEX reminders_idempotency ON reminders (tenant_id, created_by, idempotency_key)
    WHERE idempotency_key <> '';
CREATE INDEX reminders_due ON reminders (due_at_us) WHERE fired_at_us IS NULL;
CREATE INDEX reminders_by_user ON reminders (tenant_id, user_id, due_at_us, reminder_id);
CREATE INDEX reminders_by_conversation ON reminders (tenant_id, conversation_id);
CREATE INDEX reminders_by_contact ON reminders (tenant_id, contact_id);
CREATE TABLE follow_up_rules (
    tenant_id     TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    care_status   TEXT NOT NULL,
    quiet_secs    BIGINT NOT NULL,
    text          TEXT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, rule_id)
);
