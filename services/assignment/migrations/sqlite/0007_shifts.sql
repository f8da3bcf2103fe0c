-- Which staff work which channel accounts when. Times are local to the account's routing
-- policy's time zone; `ends_at` before `starts_at` runs past midnight.
CREATE TABLE shifts (
    tenant_id           TEXT NOT NULL,
    shift_id            TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    channel_account_ids TEXT NOT NULL,
    weekdays            TEXT NOT NULL,
    starts_at           TEXT NOT NULL,
    ends_at             TEXT NOT NULL,
    updated_at_us       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, shift_id)
);
CREATE INDEX shifts_by_user ON shifts (tenant_id, user_id, shift_id);
-- Who was on shift per account when last looked at: a difference is a shift change.
CREATE TABLE account_shift_state (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    on_shift           TEXT NOT NULL,
    changed_at_us      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id)
);
ALTER TABLE routing_policies ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'Asia/Ho_Chi_Minh';
ALTER TABLE routing_policies ADD COLUMN on_shift_change TEXT NOT NULL DEFAULT 'stay_with_owner';
ALTER TABLE conversation_load ADD COLUMN previous_owner_user_id TEXT;
-- A handover also moves the leaver's pending reminders and shifts; counted for its report.
ALTER TABLE offboarding_jobs ADD COLUMN reminders_moved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE offboarding_jobs ADD COLUMN shifts_moved INTEGER NOT NULL DEFAULT 0;
