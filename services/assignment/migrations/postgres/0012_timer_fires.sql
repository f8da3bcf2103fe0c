-- Every time a scheduler replica fires a timer (an SLA breach, a reminder): the event id it
-- publishes under, and which replica. Normally one row per timer; a second one means a
-- replica died between firing and recording and another fired again. A replica retrying its
-- own publish keeps its one row.
CREATE TABLE timer_fires (
    tenant_id   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    replica     TEXT NOT NULL,
    fired_at_us BIGINT NOT NULL
);
CREATE UNIQUE INDEX timer_fires_by_event ON timer_fires (tenant_id, event_id, replica);
