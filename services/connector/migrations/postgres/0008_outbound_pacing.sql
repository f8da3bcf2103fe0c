-- OA send pacing shared by every replica (GCRA, equivalent to a token bucket): the account's
-- theoretical arrival time, microseconds since the epoch. Each send moves it on by the
-- account's interval in one conditional UPDATE; 0 means nothing was sent yet.
ALTER TABLE channel_accounts ADD COLUMN pacing_tat_us BIGINT NOT NULL DEFAULT 0;
