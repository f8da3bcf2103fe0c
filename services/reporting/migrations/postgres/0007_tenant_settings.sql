-- Each tenant's own settings of reporting; a tenant without a row uses the service's.
CREATE TABLE tenant_settings (
    tenant_id TEXT PRIMARY KEY,
    time_zone TEXT NOT NULL
);
