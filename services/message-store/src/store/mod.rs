//! Persistence of conversations and messages: one trait, a PostgreSQL and a SQLite
//! implementation side by side, held to the same contract tests (tests/store_contract.rs).

mod postgres;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use giao_storage::Database;
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::{
    domain::{
        AppendOutcome, ConversationFilter, ConversationRecord, HistoryQuery, StoredMessage,
        inbound::NewInbound,
    },
    error::Error,
};

pub trait Store: Send + Sync + 'static {
    /// Stores a message idempotently on (tenant, channel account, external message id),
    /// creating its conversation on first sight, in one transaction.
    fn append_inbound<'a>(
        &'a self,
        message: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AppendOutcome, Error>>;

    fn conversation<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<ConversationRecord>, Error>>;

    fn history<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_id: Uuid,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, Error>>;

    fn list_conversations<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a ConversationFilter,
    ) -> BoxFuture<'a, Result<Vec<ConversationRecord>, Error>>;

    /// Housekeeping run at start and then daily (PostgreSQL: monthly partitions ahead).
    fn maintain(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<(), Error>>;
}

/// The store for a connected database.
pub fn for_database(database: &Database) -> Arc<dyn Store> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
    }
}
