//! Channel accounts, on PostgreSQL or SQLite.

use chrono::Utc;
use giao_storage::Database;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: String,
    pub tenant_id: String,
    pub kind: i32,
    pub display_name: String,
    pub status: i32,
}

#[derive(Debug, Clone)]
pub struct AccountStore {
    database: Database,
}

impl AccountStore {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Creates the account unless it exists; returns what is stored.
    pub async fn ensure(&self, account: &AccountRecord) -> Result<AccountRecord, sqlx::Error> {
        match &self.database {
            Database::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO channel_accounts (id, tenant_id, kind, display_name, status, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&account.id)
                .bind(&account.tenant_id)
                .bind(account.kind as i16)
                .bind(&account.display_name)
                .bind(account.status as i16)
                .bind(Utc::now())
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO channel_accounts (id, tenant_id, kind, display_name, status, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )
                .bind(&account.id)
                .bind(&account.tenant_id)
                .bind(account.kind)
                .bind(&account.display_name)
                .bind(account.status)
                .bind(Utc::now().timestamp_micros())
                .execute(pool)
                .await?;
            }
        }
        self.get(&account.tenant_id, &account.id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<AccountRecord>, sqlx::Error> {
        Ok(self
            .list(tenant_id)
            .await?
            .into_iter()
            .find(|account| account.id == id))
    }

    pub async fn list(&self, tenant_id: &str) -> Result<Vec<AccountRecord>, sqlx::Error> {
        let rows: Vec<(String, String, i32, String, i32)> = match &self.database {
            Database::Postgres(pool) => sqlx::query_as::<_, (String, String, i16, String, i16)>(
                "SELECT id, tenant_id, kind, display_name, status FROM channel_accounts \
                     WHERE tenant_id = $1 ORDER BY id",
            )
            .bind(tenant_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(id, tenant, kind, name, status)| (id, tenant, kind.into(), name, status.into()))
            .collect(),
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT id, tenant_id, kind, display_name, status FROM channel_accounts \
                     WHERE tenant_id = ?1 ORDER BY id",
                )
                .bind(tenant_id)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(
                |(id, tenant_id, kind, display_name, status)| AccountRecord {
                    id,
                    tenant_id,
                    kind,
                    display_name,
                    status,
                },
            )
            .collect())
    }
}
