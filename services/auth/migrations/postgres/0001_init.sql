-- Tenants: every row of every service carries one of these ids.
CREATE TABLE tenants (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    time_zone    TEXT NOT NULL DEFAULT 'Asia/Ho_Chi_Minh',
    created_at   TIMESTAMPTZ NOT NULL
);
