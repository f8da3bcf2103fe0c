-- The scheduler forgets fires older than a month.
CREATE INDEX timer_fires_by_time ON timer_fires (fired_at_us);
