//! Database plumbing every service uses: one pool type over PostgreSQL (production) and
//! SQLite (the embedded default), per-service migrations for each backend, a cheap health
//! ping, and error helpers. Each service keeps its own SQL for both backends side by side in
//! its `store` module; this crate knows nothing of their tables.

use std::{str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::{
    ConnectOptions,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:5432/db`, `sqlite://path/to/file.db` or `sqlite::memory:`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 10,
            connect_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.is_empty() {
            Err(StorageError::Config(
                "missing database.url: required".into(),
            ))
        } else {
            Err(StorageError::Config(format!(
                "invalid database.url \"{}\": expected postgres://… or sqlite:…",
                redact_url(url)
            )))
        }
    }
}

/// The migrations of one service, one set per backend, embedded with `sqlx::migrate!`.
#[derive(Debug)]
pub struct Migrations {
    pub postgres: Migrator,
    pub sqlite: Migrator,
}

/// A connection pool to a service's own database.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Config(String),
    #[error("cannot connect to database {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("cannot migrate database {url}: {cause}")]
    Migrate { url: String, cause: String },
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl Database {
    /// Connects and checks the connection; fails within `connect_timeout_secs` with an
    /// error naming the (redacted) url and the cause.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StorageError> {
        let backend = Backend::of_url(&config.url)?;
        let timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let connect_error = |cause: String| StorageError::Connect {
            url: redact_url(&config.url),
            cause,
        };
        match backend {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(&config.url)
                    .map_err(|error| connect_error(error.to_string()))?
                    .log_statements(tracing::log::LevelFilter::Trace);
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections.max(1))
                    .acquire_timeout(timeout)
                    .connect_with(options);
                let pool = tokio::time::timeout(timeout, pool)
                    .await
                    .map_err(|_| connect_error(format!("no answer within {}s", timeout.as_secs())))?
                    .map_err(|error| connect_error(error.to_string()))?;
                Ok(Database::Postgres(pool))
            }
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(&config.url)
                    .map_err(|error| connect_error(error.to_string()))?;
                let in_memory =
                    config.url.contains(":memory:") || config.url.contains("mode=memory");
                if !in_memory
                    && let Some(parent) = std::path::Path::new(options.get_filename()).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| connect_error(error.to_string()))?;
                }
                let options = options
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                // An in-memory database lives as long as one connection: keep exactly one.
                let max = if in_memory {
                    1
                } else {
                    config.max_connections.max(1)
                };
                let pool = SqlitePoolOptions::new()
                    .max_connections(max)
                    .min_connections(if in_memory { 1 } else { 0 })
                    .idle_timeout(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(600))
                    })
                    .max_lifetime(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(3600))
                    })
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(|error| connect_error(error.to_string()))?;
                Ok(Database::Sqlite(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the service's migrations for this backend (never edited once landed).
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StorageError> {
        let outcome = match self {
            Database::Postgres(pool) => migrations.postgres.run(pool).await,
            Database::Sqlite(pool) => migrations.sqlite.run(pool).await,
        };
        outcome.map_err(|error| StorageError::Migrate {
            url: self.describe(),
            cause: error.to_string(),
        })
    }

    /// A round trip with a short timeout, for the health watcher.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let query = async {
            match self {
                Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
                Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), query).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StorageError::Unavailable(error.to_string())),
            Err(_) => Err(StorageError::Unavailable("no answer within 2s".into())),
        }
    }

    /// A health probe for [`giao_platform::health::watch`].
    pub fn probe(&self) -> giao_platform::health::Probe {
        let database = self.clone();
        giao_platform::health::Probe::new("database", move || {
            let database = database.clone();
            async move { database.ping().await.map_err(|error| error.to_string()) }
        })
    }

    fn describe(&self) -> String {
        match self {
            Database::Postgres(pool) => {
                let options = pool.connect_options();
                format!(
                    "postgres://{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                )
            }
            Database::Sqlite(pool) => {
                format!(
                    "sqlite://{}",
                    pool.connect_options().get_filename().display()
                )
            }
        }
    }
}

/// The url with any password replaced, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let shown = if credentials.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            let tail = redact_query(tail);
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{}", redact_query(tail)),
    }
}

fn redact_query(tail: &str) -> String {
    match tail.split_once('?') {
        Some((path, query)) => {
            let redacted: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", redacted.join("&"))
        }
        None => tail.to_string(),
    }
}

/// True when `error` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The name of the violated unique constraint, when the backend reports it.
pub fn unique_violation_constraint(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint().map(str::to_string)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://giao:s3cret@db:5432/msg"),
            "postgres://giao:***@db:5432/msg"
        );
        assert_eq!(
            redact_url("postgres://db:5432/msg?user=a&password=s3cret"),
            "postgres://db:5432/msg?user=a&password=***"
        );
        assert_eq!(
            redact_url("postgres://giao@db/msg"),
            "postgres://giao@db/msg"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn unknown_schemes_name_the_field() {
        let error = Backend::of_url("mysql://x").expect_err("unsupported");
        assert!(error.to_string().contains("database.url"), "{error}");
        let error = Backend::of_url("").expect_err("missing");
        assert_eq!(error.to_string(), "missing database.url: required");
    }

    #[tokio::test]
    async fn sqlite_creates_its_file_and_answers_pings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/nested/db.sqlite", dir.path().display());
        let database = Database::connect(&DatabaseConfig {
            url,
            ..Default::default()
        })
        .await
        .expect("connects");
        database.ping().await.expect("pings");
        assert!(dir.path().join("nested/db.sqlite").exists());
    }

    #[tokio::test]
    async fn unreachable_postgres_fails_fast_with_a_clear_message() {
        let started = std::time::Instant::now();
        let error = Database::connect(&DatabaseConfig {
            url: "postgres://giao:pw@127.0.0.1:1/none".into(),
            connect_timeout_secs: 2,
            ..Default::default()
        })
        .await
        .expect_err("nothing listens on port 1");
        let message = error.to_string();
        assert!(
            message.starts_with("cannot connect to database postgres://giao:***@127.0.0.1:1/none"),
            "{message}"
        );
        assert!(!message.contains("pw"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
