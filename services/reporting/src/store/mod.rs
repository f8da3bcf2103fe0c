//! Storage of the aggregates, on PostgreSQL and SQLite.
//!
//! Both backends have the same tables (times as microseconds, dimensions as text), so each
//! statement is written once and runs on either pool: [`apply`](Store::apply) is expanded
//! once per backend by a macro (the only difference is the row lock PostgreSQL takes on a
//! conversation's clock), and report queries are built with numbered placeholders that both
//! drivers accept. See docs/decisions/0008-reporting-aggregates.md.

mod apply;
mod batch;
mod query;

pub use apply::is_relevant;
pub use query::{
    ConversationRow, CounterRow, DrillMetric, FactRow, Group, HistRow, HourlyRow, RowFilter,
    SlaRow, WaitRow,
};

use giao_storage::Database;

use crate::domain::clock::FoldSettings;

/// What applying an event needs besides the event.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    pub fold: FoldSettings,
    /// Care statuses that count as a conversion (entering one from another status).
    pub won_statuses: Vec<String>,
    /// Care-quality patterns: outbound human messages matching one are flagged.
    pub poaching: Patterns,
}

/// Care-quality patterns, per tenant with a default.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    pub default: Vec<regex::Regex>,
    pub tenants: std::collections::HashMap<String, Vec<regex::Regex>>,
}

impl ApplySettings {
    /// The fold's settings for a tenant whose own zone is `zone` (stored in
    /// `tenant_settings`; the service's when it has none).
    pub fn fold_for(&self, zone: Option<&str>) -> FoldSettings {
        match zone.and_then(crate::domain::time::parse_zone) {
            Some(zone) => FoldSettings {
                schedule: self.fold.schedule.in_zone(zone),
            },
            None => self.fold.clone(),
        }
    }
}

impl Patterns {
    pub fn for_tenant(&self, tenant: &str) -> &[regex::Regex] {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// The reporting database.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
}

impl Store {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Recomputes the daily roll-ups from the hourly tables, in one transaction: repairs
    /// days that a replica older than the roll-ups folded into the hourly tables only.
    pub async fn rollup(&self) -> Result<(), crate::error::Error> {
        const DAY: &str = "hour - hour % 86400000000";
        let statements = [
            "DELETE FROM daily".to_string(),
            "DELETE FROM daily_hist".to_string(),
            "DELETE FROM daily_facts".to_string(),
            format!(
                "INSERT INTO daily SELECT tenant_id, {DAY}, user_id, team_id, channel_account_id, \
                 lead_source, SUM(messages_in), SUM(messages_out), SUM(conversations_opened), \
                 SUM(conversations_assigned), SUM(conversations_closed), SUM(first_responses), \
                 SUM(responses), SUM(sla_met), SUM(sla_breached), SUM(new_contacts), \
                 SUM(conversions), SUM(transferred_waiting), SUM(flagged_messages) FROM hourly \
                 GROUP BY tenant_id, {DAY}, user_id, team_id, channel_account_id, lead_source"
            ),
            format!(
                "INSERT INTO daily_hist SELECT tenant_id, {DAY}, user_id, team_id, \
                 channel_account_id, lead_source, kind, bucket, SUM(count) FROM hourly_hist \
                 GROUP BY tenant_id, {DAY}, user_id, team_id, channel_account_id, lead_source, \
                 kind, bucket"
            ),
            format!(
                "INSERT INTO daily_facts SELECT DISTINCT tenant_id, metric, user_id, {DAY}, \
                 conversation_id, team_id, channel_account_id, lead_source FROM facts"
            ),
        ];
        match &self.database {
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Events folded meanwhile wait for the repair rather than land in rows it
                // is about to replace.
                sqlx::query(
                    "LOCK TABLE hourly, hourly_hist, facts, daily, daily_hist, daily_facts \
                     IN SHARE ROW EXCLUSIVE MODE",
                )
                .execute(&mut *tx)
                .await?;
                for statement in &statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Database::Sqlite(pool) => {
                // One writer at a time: the repair sees no fold half-way.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for statement in &statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The tenant's own time zone, when it set one.
    pub async fn tenant_zone(&self, tenant: &str) -> Result<Option<String>, crate::error::Error> {
        let mut sql = Sql::default();
        sql.push("SELECT time_zone FROM tenant_settings WHERE tenant_id = ")
            .text(tenant);
        let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
        Ok(rows.into_iter().next().map(|(zone,)| zone))
    }

    /// Sets the tenant's time zone (an IANA name, checked by the caller); `None` goes back
    /// to the service's.
    pub async fn set_tenant_zone(
        &self,
        tenant: &str,
        zone: Option<&str>,
    ) -> Result<(), crate::error::Error> {
        let mut sql = Sql::default();
        match zone {
            Some(zone) => {
                sql.push("INSERT INTO tenant_settings (tenant_id, time_zone) VALUES (")
                    .text(tenant)
                    .push(", ")
                    .text(zone)
                    .push(") ON CONFLICT (tenant_id) DO UPDATE SET time_zone = excluded.time_zone");
            }
            None => {
                sql.push("DELETE FROM tenant_settings WHERE tenant_id = ")
                    .text(tenant);
            }
        }
        match &self.database {
            Database::Postgres(pool) => {
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(pool)
                    .await?;
            }
            Database::Sqlite(pool) => {
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Forgets the ids of events applied more than `days` ago: the bus no longer holds them
    /// (its retention is shorter), so they cannot come back. Returns how many were removed.
    pub async fn forget_processed(&self, days: u32) -> Result<u64, crate::error::Error> {
        let removed = match &self.database {
            Database::Postgres(pool) => sqlx::query(
                "DELETE FROM processed_events WHERE processed_at < now() - make_interval(days => $1)",
            )
            .bind(i32::try_from(days).unwrap_or(i32::MAX))
            .execute(pool)
            .await?
            .rows_affected(),
            Database::Sqlite(pool) => sqlx::query(
                "DELETE FROM processed_events \
                 WHERE processed_at < CAST(strftime('%s', 'now') AS INTEGER) - $1 * 86400",
            )
            .bind(i64::from(days))
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(removed)
    }
}

/// A bound value of a built query.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    OptInt(Option<i64>),
}

/// SQL text with numbered placeholders and their values.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Value>,
}

impl Sql {
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: Value) -> &mut Self {
        self.binds.push(value);
        self.text.push_str(&format!("${}", self.binds.len()));
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.bind(Value::Text(value.to_string()))
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        self.bind(Value::Int(value))
    }
}

/// Runs a built query on whichever pool the store has and collects its rows.
macro_rules! fetch_all {
    ($database:expr, $row:ty, $sql:expr) => {{
        let sql: &$crate::store::Sql = $sql;
        match $database {
            giao_storage::Database::Postgres(pool) => {
                let mut query = sqlx::query_as::<_, $row>(sqlx::AssertSqlSafe(sql.text.clone()));
                for value in &sql.binds {
                    query = match value {
                        $crate::store::Value::Text(text) => query.bind(text.clone()),
                        $crate::store::Value::Int(int) => query.bind(*int),
                        $crate::store::Value::OptInt(int) => query.bind(*int),
                    };
                }
                query.fetch_all(pool).await?
            }
            giao_storage::Database::Sqlite(pool) => {
                let mut query = sqlx::query_as::<_, $row>(sqlx::AssertSqlSafe(sql.text.clone()));
                for value in &sql.binds {
                    query = match value {
                        $crate::store::Value::Text(text) => query.bind(text.clone()),
                        $crate::store::Value::Int(int) => query.bind(*int),
                        $crate::store::Value::OptInt(int) => query.bind(*int),
                    };
                }
                query.fetch_all(pool).await?
            }
        }
    }};
}
pub(crate) use fetch_all;

/// Binds a built query's values (inside a backend-specific expansion).
macro_rules! bind_all {
    ($query:expr, $sql:expr) => {{
        let mut query = $query;
        for value in &$sql.binds {
            query = match value {
                $crate::store::Value::Text(text) => query.bind(text.clone()),
                $crate::store::Value::Int(int) => query.bind(*int),
                $crate::store::Value::OptInt(int) => query.bind(*int),
            };
        }
        query
    }};
}
pub(crate) use bind_all;
