//! Where an account's next listener resumes. After each message or recall is published its
//! msgId is stored as the account's newest of its thread kind (`personal_positions`); a
//! listener started later (after a crash, on another replica, after a new login) passes
//! them to the library, whose first connection asks for what came after. A message published
//! whose position was not stored yet is asked for again and deduped by its event id.

use chrono::Utc;
use giao_storage::Database;
use zalo_personal::{
    client::ResumePoint,
    events::{Event, ThreadKind},
};

use super::PersonalRuntime;

/// The thread position of a captured event: (msgId, is group).
pub(crate) fn position_of(event: &Event) -> Option<(&str, bool)> {
    let (msg_id, kind) = match event {
        Event::Message(message) => (&message.msg_id, message.thread_kind),
        Event::Recall(recall) => (&recall.msg_id, recall.thread_kind),
        _ => return None,
    };
    (!msg_id.is_empty()).then_some((msg_id.as_str(), kind == ThreadKind::Group))
}

/// msgIds are growing decimal numbers; anything else never replaces a known one.
fn newer(candidate: &str, known: Option<&str>) -> bool {
    let Some(known) = known else { return true };
    match (candidate.parse::<u128>(), known.parse::<u128>()) {
        (Ok(candidate), Ok(known)) => candidate > known,
        _ => false,
    }
}

impl PersonalRuntime {
    /// The account's resume point; the first time, records now as the time from which a
    /// thread kind without a msgId is replayed.
    pub(crate) async fn resume_point(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<ResumePoint, sqlx::Error> {
        let select = "SELECT last_direct_msg_id, last_group_msg_id, since_ms \
                      FROM personal_positions WHERE tenant_id = $1 AND channel_account_id = $2";
        let insert = "INSERT INTO personal_positions (tenant_id, channel_account_id, since_ms, \
                      updated_at) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (tenant_id, channel_account_id) DO NOTHING";
        type Row = (Option<String>, Option<String>, i64);
        let now = Utc::now();
        let database = self.inner.ledger.database();
        for _ in 0..2 {
            let row: Option<Row> = match database {
                Database::Postgres(pool) => {
                    sqlx::query_as(select)
                        .bind(tenant)
                        .bind(account)
                        .fetch_optional(pool)
                        .await?
                }
                Database::Sqlite(pool) => {
                    sqlx::query_as(sqlx::AssertSqlSafe(select.replace('$', "?")))
                        .bind(tenant)
                        .bind(account)
                        .fetch_optional(pool)
                        .await?
                }
            };
            if let Some((direct, group, since_ms)) = row {
                return Ok(ResumePoint {
                    direct,
                    group,
                    since_ms: Some(since_ms),
                });
            }
            match database {
                Database::Postgres(pool) => {
                    sqlx::query(insert)
                        .bind(tenant)
                        .bind(account)
                        .bind(now.timestamp_millis())
                        .bind(now.timestamp_micros())
                        .execute(pool)
                        .await?;
                }
                Database::Sqlite(pool) => {
                    sqlx::query(sqlx::AssertSqlSafe(insert.replace('$', "?")))
                        .bind(tenant)
                        .bind(account)
                        .bind(now.timestamp_millis())
                        .bind(now.timestamp_micros())
                        .execute(pool)
                        .await?;
                }
            }
        }
        Err(sqlx::Error::RowNotFound)
    }

    /// Stores `event`'s msgId as the account's newest of its kind when it is newer than
    /// `current` (the listener's copy), after the event was published.
    pub(crate) async fn advance_position(
        &self,
        tenant: &str,
        account: &str,
        current: &mut ResumePoint,
        event: &Event,
    ) {
        let Some((msg_id, group)) = position_of(event) else {
            return;
        };
        let known = if group {
            &mut current.group
        } else {
            &mut current.direct
        };
        if !newer(msg_id, known.as_deref()) {
            return;
        }
        let column = if group {
            "last_group_msg_id"
        } else {
            "last_direct_msg_id"
        };
        let sql = format!(
            "UPDATE personal_positions SET {column} = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND channel_account_id = $2"
        );
        let now = Utc::now().timestamp_micros();
        let result = match self.inner.ledger.database() {
            Database::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(account)
                .bind(msg_id)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ()),
            Database::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                .bind(tenant)
                .bind(account)
                .bind(msg_id)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => *known = Some(msg_id.to_string()),
            // The next listener asks from an older msgId: more replays, deduped, none lost.
            Err(error) => {
                tracing::warn!(account = %account, %error, "listener position not stored")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_larger_msg_id_advances() {
        assert!(newer("5", None));
        assert!(newer("10", Some("9")));
        assert!(!newer("9", Some("10")));
        assert!(!newer("x", Some("9")));
    }
}
