//! The Zalo OA adapter: credentials, the webhook, outbound (text, uploaded images and files),
//! rate limits, customer profiles, the error-code table and the simulator.

pub mod client;
pub mod errors;
pub mod http;
pub mod media;
pub mod outbound;
pub mod profiles;
pub mod sim;
pub mod throttle;
pub mod webhook;

use chrono::Utc;
use giao_storage::Database;
use serde::{Deserialize, Serialize};

/// Describes a bad `credentials_json` by position only: serde's message can quote the
/// offending value, which may be a secret, and errors are logged.
pub fn json_error(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Data => "expected a JSON object with string fields",
        _ => "not valid JSON",
    };
    format!(
        "invalid credentials_json: {what} (line {}, column {})",
        error.line(),
        error.column()
    )
}

/// What a `zalo_oa` account's `credentials_json` holds. Sealed at rest, never returned.
// Every field defaults, so a missing one is reported by name by `parse`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OaCredentials {
    pub app_id: String,
    pub app_secret: String,
    /// Signs webhooks; distinct from the app secret.
    pub oa_secret_key: String,
    pub oa_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub access_expires_at: i64,
}

// Tokens and secrets never reach a log line.
impl std::fmt::Debug for OaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OaCredentials")
            .field("app_id", &self.app_id)
            .field("oa_id", &self.oa_id)
            .finish_non_exhaustive()
    }
}

impl OaCredentials {
    /// Parses and checks `credentials_json`; the error names the missing field.
    pub fn parse(json: &str) -> Result<Self, String> {
        let credentials: Self = serde_json::from_str(json).map_err(|error| json_error(&error))?;
        for (field, value) in [
            ("app_id", &credentials.app_id),
            ("app_secret", &credentials.app_secret),
            ("oa_secret_key", &credentials.oa_secret_key),
        ] {
            if value.trim().is_empty() {
                return Err(format!("invalid credentials_json: missing {field}"));
            }
        }
        Ok(credentials)
    }
}

/// Channel events giao does not model, kept verbatim.
#[derive(Debug, Clone)]
pub struct RawEvents {
    database: Database,
}

impl RawEvents {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Keeps an event's body once: Zalo's retry of it (`num_retry`) repeats the same body,
    /// which the digest recognises.
    pub async fn keep(
        &self,
        tenant_id: &str,
        account_id: &str,
        event_name: &str,
        body: &[u8],
    ) -> Result<(), sqlx::Error> {
        use sha2::Digest;
        let now = Utc::now().timestamp_micros();
        let digest = hex::encode(sha2::Sha256::digest(body));
        match &self.database {
            Database::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO raw_channel_events (tenant_id, channel_account_id, event_name, body, \
                     received_at, body_sha256) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(tenant_id)
                .bind(account_id)
                .bind(event_name)
                .bind(body)
                .bind(now)
                .bind(&digest)
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO raw_channel_events (tenant_id, channel_account_id, event_name, body, \
                     received_at, body_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )
                .bind(tenant_id)
                .bind(account_id)
                .bind(event_name)
                .bind(body)
                .bind(now)
                .bind(&digest)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Names of the raw events kept for an account, oldest first.
    pub async fn names(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String,)> = match &self.database {
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT event_name FROM raw_channel_events \
                     WHERE tenant_id = $1 AND channel_account_id = $2 ORDER BY seq",
                )
                .bind(tenant_id)
                .bind(account_id)
                .fetch_all(pool)
                .await?
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT event_name FROM raw_channel_events \
                     WHERE tenant_id = ?1 AND channel_account_id = ?2 ORDER BY seq",
                )
                .bind(tenant_id)
                .bind(account_id)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}
