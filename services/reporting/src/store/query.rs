//! Report queries: sums of hourly counters, merged histograms, distinct conversations behind
//! a figure, waits open at a cut-off, and the drill-down lists. Every query is scoped to one
//! tenant and to the caller's visibility.

use super::{Sql, Store, fetch_all};
use crate::{
    domain::{
        Visibility,
        clock::Counter,
        time::{MICROS_PER_DAY, day_of},
    },
    error::Error,
};

/// Which rows a report reads: dimension filters plus the caller's visibility.
#[derive(Debug, Clone)]
pub struct RowFilter {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub channel_account_id: Option<String>,
    pub lead_source: Option<String>,
    pub visibility: Visibility,
}

impl RowFilter {
    pub fn new(visibility: Visibility) -> Self {
        Self {
            user_id: None,
            team_id: None,
            channel_account_id: None,
            lead_source: None,
            visibility,
        }
    }

    /// Appends ` AND …` conditions for the filter (after `tenant_id = …`).
    fn push(&self, sql: &mut Sql) {
        for (column, value) in [
            ("user_id", &self.user_id),
            ("team_id", &self.team_id),
            ("channel_account_id", &self.channel_account_id),
            ("lead_source", &self.lead_source),
        ] {
            if let Some(value) = value {
                sql.push(&format!(" AND {column} = ")).text(value);
            }
        }
        match &self.visibility {
            Visibility::All => {}
            Visibility::Own(user_id) => {
                sql.push(" AND user_id = ").text(user_id);
            }
            Visibility::Teams { user_id, team_ids } => {
                sql.push(" AND (user_id = ").text(user_id);
                if !team_ids.is_empty() {
                    sql.push(" OR team_id IN (");
                    for (index, team) in team_ids.iter().enumerate() {
                        if index > 0 {
                            sql.push(", ");
                        }
                        sql.text(team);
                    }
                    sql.push(")");
                }
                sql.push(")");
            }
        }
    }
}

/// How rows are grouped; the key column of each result row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Total,
    User,
    LeadSource,
}

impl Group {
    fn key(self) -> &'static str {
        match self {
            Group::Total => "''",
            Group::User => "user_id",
            Group::LeadSource => "lead_source",
        }
    }

    fn group_by(self, extra: &[&str]) -> String {
        let mut columns: Vec<&str> = Vec::new();
        if self != Group::Total {
            columns.push(self.key());
        }
        columns.extend_from_slice(extra);
        if columns.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {0} ORDER BY {0}", columns.join(", "))
        }
    }
}

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CounterRow {
    pub key: String,
    pub messages_in: i64,
    pub messages_out: i64,
    pub conversations_opened: i64,
    pub conversations_assigned: i64,
    pub conversations_closed: i64,
    pub first_responses: i64,
    pub responses: i64,
    pub sla_met: i64,
    pub sla_breached: i64,
    pub new_contacts: i64,
    pub conversions: i64,
    pub transferred_waiting: i64,
    pub flagged_messages: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SlaRow {
    pub user_id: String,
    pub policy_id: String,
    pub met: i64,
    pub breached: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistRow {
    pub key: String,
    pub kind: String,
    pub bucket: i64,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FactRow {
    pub key: String,
    pub metric: String,
    pub conversations: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WaitRow {
    pub key: String,
    pub waiting: i64,
    pub long_waiting: i64,
}

fn start(sql: &mut Sql, select: &str, table: &str, tenant: &str) {
    sql.push(&format!("SELECT {select} FROM {table} WHERE tenant_id = "))
        .text(tenant);
}

fn hours(sql: &mut Sql, from: i64, to: i64) {
    sql.push(" AND hour >= ")
        .int(from)
        .push(" AND hour < ")
        .int(to);
}

/// A table kept per hour and rolled up per UTC day (migration 0004).
#[derive(Debug, Clone, Copy)]
enum Rolled {
    Counters,
    Histograms,
    Facts,
}

impl Rolled {
    /// (hourly table, daily table)
    fn tables(self) -> (&'static str, &'static str) {
        match self {
            Rolled::Counters => ("hourly", "daily"),
            Rolled::Histograms => ("hourly_hist", "daily_hist"),
            Rolled::Facts => ("facts", "daily_facts"),
        }
    }
}

/// `(…) r`: the rows of the hours `[from, to)` that pass `filter` and `extra`, read from the
/// daily roll-up for the whole UTC days inside the range and from the hourly table for the
/// hours around them. Sums and distinct conversations come out the same either way; a long
/// range reads about 24 times fewer rows.
fn rolled_rows(
    sql: &mut Sql,
    rolled: Rolled,
    tenant: &str,
    (from, to): (i64, i64),
    filter: &RowFilter,
    extra: &dyn Fn(&mut Sql),
) {
    let (hourly, daily) = rolled.tables();
    // Whole days: from the first midnight at or after `from` to the last one at or before
    // `to` (every hour of the days before it starts before `to`).
    let first_day = day_of(from + MICROS_PER_DAY - 1);
    let last_day = day_of(to);
    let parts = if first_day < last_day {
        vec![
            (daily, first_day, last_day),
            (hourly, from, first_day),
            (hourly, last_day, to),
        ]
    } else {
        vec![(hourly, from, to)]
    };
    sql.push("(");
    for (index, (table, start, end)) in parts
        .into_iter()
        .filter(|(_, start, end)| start < end)
        .enumerate()
    {
        if index > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(&format!("SELECT * FROM {table} WHERE tenant_id = "))
            .text(tenant);
        hours(sql, start, end);
        filter.push(sql);
        extra(sql);
    }
    sql.push(") r");
}

/// ` AND column IN (…)`.
fn one_of(sql: &mut Sql, column: &str, values: &[&str]) {
    sql.push(&format!(" AND {column} IN ("));
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.text(value);
    }
    sql.push(")");
}

impl Store {
    /// Counter sums over `[from, to)` hours.
    pub async fn counters(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
        group: Group,
    ) -> Result<Vec<CounterRow>, Error> {
        let sums: Vec<String> = Counter::ALL
            .iter()
            .map(|counter| {
                let column = counter.column();
                format!("CAST(COALESCE(SUM({column}), 0) AS BIGINT) AS {column}")
            })
            .collect();
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT {} AS key, {} FROM ",
            group.key(),
            sums.join(", ")
        ));
        rolled_rows(
            &mut sql,
            Rolled::Counters,
            tenant,
            (from, to),
            filter,
            &|_| {},
        );
        sql.push(&group.group_by(&[]));
        Ok(fetch_all!(&self.database, CounterRow, &sql))
    }

    /// SLA met and breached per agent and policy. Assignment keeps one SLA policy per
    /// channel account (the tenant default covering the rest) and names it by that account
    /// in `SlaBreached`, so a policy's rows are its channel account's.
    pub async fn sla_rows(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
    ) -> Result<Vec<SlaRow>, Error> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT user_id, channel_account_id AS policy_id, \
             CAST(COALESCE(SUM(sla_met), 0) AS BIGINT) AS met, \
             CAST(COALESCE(SUM(sla_breached), 0) AS BIGINT) AS breached FROM ",
        );
        rolled_rows(
            &mut sql,
            Rolled::Counters,
            tenant,
            (from, to),
            filter,
            &|_| {},
        );
        sql.push(
            " GROUP BY user_id, channel_account_id \
             HAVING SUM(sla_met) + SUM(sla_breached) > 0 ORDER BY user_id, channel_account_id",
        );
        Ok(fetch_all!(&self.database, SlaRow, &sql))
    }

    /// Merged histogram buckets of `kinds`.
    pub async fn histograms(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
        kinds: &[&str],
        group: Group,
    ) -> Result<Vec<HistRow>, Error> {
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT {} AS key, kind, bucket, CAST(SUM(count) AS BIGINT) AS count FROM ",
            group.key()
        ));
        rolled_rows(
            &mut sql,
            Rolled::Histograms,
            tenant,
            (from, to),
            filter,
            &|sql| one_of(sql, "kind", kinds),
        );
        sql.push(&group.group_by(&["kind", "bucket"]));
        Ok(fetch_all!(&self.database, HistRow, &sql))
    }

    /// Distinct conversations behind each of `metrics`.
    pub async fn fact_counts(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
        metrics: &[&str],
        group: Group,
    ) -> Result<Vec<FactRow>, Error> {
        // DISTINCT in a subquery lets the database hash instead of sorting every fact.
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT key, metric, COUNT(*) AS conversations FROM (SELECT DISTINCT {} AS key, \
             metric, conversation_id FROM ",
            group.key()
        ));
        rolled_rows(
            &mut sql,
            Rolled::Facts,
            tenant,
            (from, to),
            filter,
            &|sql| one_of(sql, "metric", metrics),
        );
        sql.push(") d GROUP BY key, metric ORDER BY key, metric");
        Ok(fetch_all!(&self.database, FactRow, &sql))
    }

    /// Conversations whose customer waits at `cutoff`, and of them those waiting since
    /// before `long_since` (from the customer's first unanswered message, across transfers).
    pub async fn waiting(
        &self,
        tenant: &str,
        cutoff: i64,
        long_since: i64,
        filter: &RowFilter,
        group: Group,
    ) -> Result<Vec<WaitRow>, Error> {
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT {} AS key, COUNT(DISTINCT conversation_id) AS waiting, \
             COUNT(DISTINCT CASE WHEN customer_since < ",
            group.key()
        ))
        .int(long_since)
        .push(" THEN conversation_id END) AS long_waiting FROM waits WHERE tenant_id = ")
        .text(tenant);
        waiting_at(&mut sql, cutoff);
        filter.push(&mut sql);
        sql.push(&group.group_by(&[]));
        Ok(fetch_all!(&self.database, WaitRow, &sql))
    }

    /// One page of the conversations behind a figure, ordered by id after `after`.
    #[allow(clippy::too_many_arguments)]
    pub async fn drill(
        &self,
        tenant: &str,
        metric: DrillMetric<'_>,
        from: i64,
        to: i64,
        filter: &RowFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, Error> {
        let mut sql = Sql::default();
        match metric {
            DrillMetric::Fact(name) => {
                sql.push("SELECT DISTINCT conversation_id FROM ");
                rolled_rows(
                    &mut sql,
                    Rolled::Facts,
                    tenant,
                    (from, to),
                    filter,
                    &|sql| one_of(sql, "metric", &[name]),
                );
                sql.push(" WHERE 1 = 1");
            }
            DrillMetric::Waiting { cutoff, long_since } => {
                start(&mut sql, "DISTINCT conversation_id", "waits", tenant);
                waiting_at(&mut sql, cutoff);
                if let Some(long_since) = long_since {
                    sql.push(" AND customer_since < ").int(long_since);
                }
                filter.push(&mut sql);
            }
        }
        sql.push(" AND conversation_id > ")
            .text(after)
            .push(" ORDER BY conversation_id LIMIT ")
            .int(limit);
        let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The teams a user was seen in; empty when the user never appeared in an event.
    pub async fn user_teams(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Vec<String>>, Error> {
        let mut sql = Sql::default();
        sql.push("SELECT team_id FROM known_users WHERE tenant_id = ")
            .text(tenant)
            .push(" AND user_id = ")
            .text(user_id);
        let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().map(|(team,)| team).collect()))
    }

    /// Whether any event named the team.
    pub async fn team_known(&self, tenant: &str, team_id: &str) -> Result<bool, Error> {
        let mut sql = Sql::default();
        sql.push("SELECT user_id FROM known_users WHERE tenant_id = ")
            .text(tenant)
            .push(" AND team_id = ")
            .text(team_id)
            .push(" LIMIT 1");
        let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
        Ok(!rows.is_empty())
    }

    /// Whether the caller may report on the channel account: any event named it, for those
    /// who see the whole tenant; for agents and supervisors, some figure of theirs (or of
    /// their teams) is on it, so an account they never worked on stays hidden.
    pub async fn account_known(
        &self,
        tenant: &str,
        account_id: &str,
        visibility: &Visibility,
    ) -> Result<bool, Error> {
        let mut sql = Sql::default();
        if *visibility == Visibility::All {
            sql.push("SELECT conversation_id FROM conversations WHERE tenant_id = ")
                .text(tenant)
                .push(" AND channel_account_id = ")
                .text(account_id)
                .push(
                    " UNION ALL SELECT channel_account_id FROM account_outages WHERE tenant_id = ",
                )
                .text(tenant)
                .push(" AND channel_account_id = ")
                .text(account_id)
                .push(" LIMIT 1");
        } else {
            start(&mut sql, "channel_account_id", "hourly", tenant);
            sql.push(" AND channel_account_id = ").text(account_id);
            RowFilter::new(visibility.clone()).push(&mut sql);
            sql.push(" LIMIT 1");
        }
        let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
        Ok(!rows.is_empty())
    }

    /// Disconnected time of an account overlapping `[from, to)`.
    pub async fn disconnected_micros(
        &self,
        tenant: &str,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<i64, Error> {
        let mut sql = Sql::default();
        sql.push("SELECT started_at, COALESCE(ended_at, ")
            .int(to)
            .push(") FROM account_outages WHERE tenant_id = ")
            .text(tenant)
            .push(" AND channel_account_id = ")
            .text(account_id)
            .push(" AND started_at < ")
            .int(to)
            .push(" AND (ended_at IS NULL OR ended_at > ")
            .int(from)
            .push(")");
        let rows: Vec<(i64, i64)> = fetch_all!(&self.database, (i64, i64), &sql);
        Ok(rows
            .into_iter()
            .map(|(started, ended)| (ended.min(to) - started.max(from)).max(0))
            .sum())
    }

    /// Contacts first seen in `[from, to)` by lead source and current care status; callers
    /// who see part of the tenant count the contacts of conversations they may see.
    pub async fn funnel(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
    ) -> Result<Vec<(String, String, i64)>, Error> {
        let mut sql = Sql::default();
        sql.push("SELECT lead_source, care_status, COUNT(*) FROM contacts c WHERE tenant_id = ")
            .text(tenant)
            .push(" AND created_at >= ")
            .int(from)
            .push(" AND created_at < ")
            .int(to);
        if filter.visibility != Visibility::All {
            sql.push(
                " AND EXISTS (SELECT 1 FROM (SELECT tenant_id AS v_tenant, contact_id AS v_contact, \
                 owner_user_id AS user_id, team_id FROM conversations) v \
                 WHERE v.v_tenant = c.tenant_id AND v.v_contact = c.contact_id",
            );
            RowFilter::new(filter.visibility.clone()).push(&mut sql);
            sql.push(")");
        }
        sql.push(" GROUP BY lead_source, care_status ORDER BY lead_source, care_status");
        Ok(fetch_all!(&self.database, (String, String, i64), &sql))
    }

    /// Care-status transitions in `[from, to)` hours, oldest first.
    pub async fn care_transitions(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, String, String, i64)>, Error> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT hour, lead_source, from_status, to_status, count FROM care_transitions \
             WHERE tenant_id = ",
        )
        .text(tenant);
        hours(&mut sql, from, to);
        sql.push(" ORDER BY hour, lead_source, from_status, to_status");
        Ok(fetch_all!(
            &self.database,
            (i64, String, String, String, i64),
            &sql
        ))
    }

    /// Every aggregate row and every conversation's clock as text, in a stable order: two
    /// databases built from the same events give equal snapshots.
    pub async fn snapshot(&self) -> Result<Vec<String>, Error> {
        let tables: [(&str, &str); 9] = [
            (
                "conversations",
                "tenant_id || '|' || conversation_id || '|' || channel_account_id || '|' || contact_id || '|' || lead_source || '|' || owner_user_id || '|' || team_id || '|' || COALESCE(CAST(opened_at AS TEXT), '-') || '|' || COALESCE(CAST(closed_at AS TEXT), '-') || '|' || COALESCE(CAST(customer_waiting_since AS TEXT), '-') || '|' || COALESCE(CAST(segment_started_at AS TEXT), '-') || '|' || CAST(segment_first AS TEXT) || '|' || CAST(segment_breached AS TEXT) || '|' || COALESCE(CAST(first_response_micros AS TEXT), '-') || '|' || CAST(messages_in AS TEXT) || '|' || CAST(messages_out AS TEXT) || '|' || COALESCE(CAST(last_message_at AS TEXT), '-')",
            ),
            (
                "hourly",
                "tenant_id || '|' || CAST(hour AS TEXT) || '|' || user_id || '|' || team_id || '|' || channel_account_id || '|' || lead_source || '|' || CAST(messages_in AS TEXT) || '|' || CAST(messages_out AS TEXT) || '|' || CAST(conversations_opened AS TEXT) || '|' || CAST(conversations_assigned AS TEXT) || '|' || CAST(conversations_closed AS TEXT) || '|' || CAST(first_responses AS TEXT) || '|' || CAST(responses AS TEXT) || '|' || CAST(sla_met AS TEXT) || '|' || CAST(sla_breached AS TEXT) || '|' || CAST(new_contacts AS TEXT) || '|' || CAST(conversions AS TEXT) || '|' || CAST(transferred_waiting AS TEXT) || '|' || CAST(flagged_messages AS TEXT)",
            ),
            (
                "hourly_hist",
                "tenant_id || '|' || CAST(hour AS TEXT) || '|' || user_id || '|' || team_id || '|' || channel_account_id || '|' || lead_source || '|' || kind || '|' || CAST(bucket AS TEXT) || '|' || CAST(count AS TEXT)",
            ),
            (
                "facts",
                "tenant_id || '|' || metric || '|' || user_id || '|' || CAST(hour AS TEXT) || '|' || conversation_id || '|' || team_id || '|' || channel_account_id || '|' || lead_source",
            ),
            (
                "waits",
                "tenant_id || '|' || conversation_id || '|' || CAST(started_at AS TEXT) || '|' || user_id || '|' || team_id || '|' || CAST(first_wait AS TEXT) || '|' || COALESCE(CAST(ended_at AS TEXT), '-') || '|' || outcome || '|' || COALESCE(CAST(customer_since AS TEXT), '-')",
            ),
            (
                "known_users",
                "tenant_id || '|' || user_id || '|' || team_id",
            ),
            (
                "contacts",
                "tenant_id || '|' || contact_id || '|' || lead_source || '|' || care_status || '|' || COALESCE(CAST(created_at AS TEXT), '-')",
            ),
            (
                "care_transitions",
                "tenant_id || '|' || CAST(hour AS TEXT) || '|' || lead_source || '|' || from_status || '|' || to_status || '|' || CAST(count AS TEXT)",
            ),
            (
                "account_outages",
                "tenant_id || '|' || channel_account_id || '|' || CAST(started_at AS TEXT) || '|' || COALESCE(CAST(ended_at AS TEXT), '-') || '|' || status",
            ),
        ];
        // The daily roll-ups have their hourly table's columns.
        let rolled = [Rolled::Counters, Rolled::Histograms, Rolled::Facts].map(|rolled| {
            let (hourly, daily) = rolled.tables();
            let row = tables
                .iter()
                .find(|(table, _)| *table == hourly)
                .map(|(_, row)| *row)
                .unwrap_or("''");
            (daily, row)
        });
        let mut lines = Vec::new();
        for (table, row) in tables.into_iter().chain(rolled) {
            let mut sql = Sql::default();
            sql.push(&format!("SELECT '{table}|' || {row} AS line FROM {table}"));
            let rows: Vec<(String,)> = fetch_all!(&self.database, (String,), &sql);
            lines.extend(rows.into_iter().map(|(line,)| line));
        }
        lines.sort();
        Ok(lines)
    }
}

/// One hourly aggregate row, for exports.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HourlyRow {
    pub hour: i64,
    pub user_id: String,
    pub team_id: String,
    pub channel_account_id: String,
    pub lead_source: String,
    pub messages_in: i64,
    pub messages_out: i64,
    pub conversations_opened: i64,
    pub conversations_assigned: i64,
    pub conversations_closed: i64,
    pub first_responses: i64,
    pub responses: i64,
    pub sla_met: i64,
    pub sla_breached: i64,
    pub new_contacts: i64,
    pub conversions: i64,
    pub transferred_waiting: i64,
    pub flagged_messages: i64,
}

/// One conversation's clock, for per-conversation exports.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub channel_account_id: String,
    pub owner_user_id: String,
    pub team_id: String,
    pub lead_source: String,
    pub opened_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub first_response_micros: Option<i64>,
    pub customer_waiting_since: Option<i64>,
    pub messages_in: i64,
    pub messages_out: i64,
    pub last_message_at: Option<i64>,
}

impl Store {
    /// Hourly rows in `[from, to)`, oldest first.
    pub async fn hourly_rows(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
    ) -> Result<Vec<HourlyRow>, Error> {
        let mut sql = Sql::default();
        start(&mut sql, "*", "hourly", tenant);
        hours(&mut sql, from, to);
        filter.push(&mut sql);
        sql.push(" ORDER BY hour, user_id, team_id, channel_account_id, lead_source");
        Ok(fetch_all!(&self.database, HourlyRow, &sql))
    }

    /// Conversations with a message in `[from, to)` (or opened then), by id.
    pub async fn conversation_rows(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        filter: &RowFilter,
    ) -> Result<Vec<ConversationRow>, Error> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT conversation_id, channel_account_id, owner_user_id, team_id, lead_source, \
             opened_at, closed_at, first_response_micros, customer_waiting_since, messages_in, \
             messages_out, last_message_at FROM (SELECT c.*, owner_user_id AS user_id \
             FROM conversations c) v WHERE tenant_id = ",
        )
        .text(tenant)
        .push(" AND COALESCE(last_message_at, opened_at, 0) >= ")
        .int(from)
        .push(" AND COALESCE(opened_at, last_message_at, 0) < ")
        .int(to);
        filter.push(&mut sql);
        sql.push(" ORDER BY conversation_id");
        Ok(fetch_all!(&self.database, ConversationRow, &sql))
    }
}

/// What a drill-down lists.
#[derive(Debug, Clone, Copy)]
pub enum DrillMetric<'a> {
    Fact(&'a str),
    Waiting {
        cutoff: i64,
        long_since: Option<i64>,
    },
}

fn waiting_at(sql: &mut Sql, cutoff: i64) {
    sql.push(" AND started_at < ")
        .int(cutoff)
        .push(" AND (ended_at IS NULL OR ended_at > ")
        .int(cutoff)
        .push(")");
}
