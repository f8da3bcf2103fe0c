-- The previous owner's share of a transferred wait was kept as a histogram no report read;
-- the fold no longer writes it (transferred waits are counted as `transferred_waiting`).
DELETE FROM hourly_hist WHERE kind = 'handoff';
DELETE FROM daily_hist WHERE kind = 'handoff';
