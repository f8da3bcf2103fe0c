-- See the PostgreSQL migration of the same number. Microseconds since the Unix epoch.
ALTER TABLE conversations ADD COLUMN status_changed_at INTEGER;
