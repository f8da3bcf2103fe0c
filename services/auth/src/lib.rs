//! auth: tenants, staff, roles, tokens, API keys and the audit log.
//!
//! Issues short-lived EdDSA-signed access tokens and rotating refresh tokens, manages users
//! (password login with lockout, roles, status, teams), API keys for internal callers and the
//! signing keys (JWKS over gRPC and `GET /.well-known/jwks.json`), and keeps each tenant's
//! append-only, hash-chained audit log, fed by its own actions and by `AuditRequested` events
//! from the other services.
//!
//! Layout: [`api`] (the gRPC service, permissions) → [`core`] (logins, tokens, deactivation)
//! → [`store`] (PostgreSQL and SQLite side by side); [`domain`] holds the rules (validation,
//! passwords, the audit hash chain); [`keys`] the signing keys; [`authn`] how this service
//! verifies its callers; [`consumer`] the audit consumer; [`http`] the JWKS endpoint;
//! [`admin`] bootstrap (first tenant and admin, the demo tenant of `giao dev`).

pub mod admin;
pub mod api;
pub mod authn;
pub mod consumer;
pub mod core;
pub mod domain;
pub mod error;
pub mod http;
pub mod keys;
pub mod store;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use giao_authz::AuthConfig;
use giao_bus::{BusConfig, EventBus, envelope::EventPublisher};
use giao_platform::{
    config::{GrpcConfig, MetricsConfig, Validate},
    grpc::GrpcServer,
    metrics::Metrics,
    service::{BackgroundTask, Listeners, ServiceConfig, ServiceParts},
    telemetry::TelemetryConfig,
};
use giao_proto::auth::auth_service_server::AuthServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::keys::{KeyEncryptionKey, KeyRing};

pub const SERVICE: &str = "auth";
pub const DEFAULT_PORT: u16 = 7105;

pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// A configuration value that must never be printed (debug output shows `***`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub grpc: GrpcConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
    pub health_interval_ms: u64,
    /// Lifetime of access tokens (minutes: they cannot be revoked one by one, only through
    /// the session version).
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Consecutive wrong passwords that lock an account.
    pub lockout_threshold: u32,
    pub lockout_secs: u64,
    /// A new signing key is made when the current one is this old.
    pub signing_key_rotation_hours: u64,
    /// Base64 of 32 random bytes; encrypts the signing keys at rest. Required unless
    /// `dev_generate_key_encryption_key` is set.
    pub key_encryption_key: Secret,
    /// Laptop only: generate the key-encryption key on first start and keep it in a file
    /// next to the SQLite database (`<database file>.kek`).
    pub dev_generate_key_encryption_key: bool,
    /// How long an audit request pulled by a replica that died stays invisible to others.
    pub audit_ack_wait_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_listen(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            metrics: MetricsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9105))),
            },
            database: DatabaseConfig {
                url: "sqlite://data/auth.db".into(),
                ..DatabaseConfig::default()
            },
            bus: BusConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            health_interval_ms: 2_000,
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            lockout_threshold: 5,
            lockout_secs: 900,
            signing_key_rotation_hours: 24 * 7,
            key_encryption_key: Secret::default(),
            dev_generate_key_encryption_key: false,
            audit_ack_wait_secs: 30,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        if self.health_interval_ms < 100 {
            return Err("health_interval_ms must be at least 100".into());
        }
        if !(1..=86_400).contains(&self.access_token_ttl_secs) {
            return Err("access_token_ttl_secs must be between 1 and 86400".into());
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            return Err("refresh_token_ttl_secs must be at least access_token_ttl_secs".into());
        }
        if self.lockout_threshold == 0 {
            return Err("lockout_threshold must be at least 1".into());
        }
        if self.signing_key_rotation_hours == 0 {
            return Err("signing_key_rotation_hours must be at least 1".into());
        }
        if self.audit_ack_wait_secs == 0 {
            return Err("audit_ack_wait_secs must be at least 1".into());
        }
        if self.key_encryption_key.0.is_empty() {
            if !self.dev_generate_key_encryption_key {
                return Err(
                    "missing key_encryption_key: required (base64 of 32 random bytes, \
                     e.g. `openssl rand -base64 32`); on a laptop set \
                     dev_generate_key_encryption_key = true instead"
                        .into(),
                );
            }
            if !self.database.url.starts_with("sqlite:") {
                return Err(
                    "dev_generate_key_encryption_key needs a SQLite database.url: \
                     set key_encryption_key for PostgreSQL"
                        .into(),
                );
            }
        } else {
            KeyEncryptionKey::from_base64(&self.key_encryption_key.0)?;
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl Config {
    pub fn policy(&self) -> core::Policy {
        core::Policy {
            access_ttl: chrono::Duration::seconds(secs(self.access_token_ttl_secs)),
            refresh_ttl: chrono::Duration::seconds(secs(self.refresh_token_ttl_secs)),
            lockout_threshold: i64::from(self.lockout_threshold),
            lockout: chrono::Duration::seconds(secs(self.lockout_secs)),
        }
    }

    /// The configured key-encryption key, or on a laptop the generated one from its file.
    pub fn key_encryption_key(&self) -> anyhow::Result<KeyEncryptionKey> {
        if !self.key_encryption_key.0.is_empty() {
            return KeyEncryptionKey::from_base64(&self.key_encryption_key.0)
                .map_err(anyhow::Error::msg);
        }
        let Some(path) = self.dev_key_file() else {
            // An in-memory database lives no longer than this process; neither need its key.
            return Ok(KeyEncryptionKey::generate());
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return KeyEncryptionKey::from_base64(&text)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()));
        }
        let key = KeyEncryptionKey::generate();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        write_private(&path, &key.to_base64())
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::warn!(file = %path.display(), "generated a development key-encryption key; never use this in production");
        Ok(key)
    }

    /// `<sqlite file>.kek`, or `None` for an in-memory database.
    fn dev_key_file(&self) -> Option<PathBuf> {
        let url = &self.database.url;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path.contains(":memory:") {
            return None;
        }
        Some(PathBuf::from(format!("{path}.kek")))
    }
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 1_000_000)
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

/// The service with its listeners bound and its dependencies connected and migrated.
pub struct Auth {
    config: Config,
    listeners: Listeners,
    database: Database,
    bus: Arc<dyn EventBus>,
    kek: KeyEncryptionKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

pub async fn bind(config: Config) -> anyhow::Result<Auth> {
    config.validate().map_err(anyhow::Error::msg)?;
    let kek = config.key_encryption_key()?;
    let listeners = Listeners::bind(&config.grpc, &config.metrics).await?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the auth database")?;
    let bus = giao_bus::connect(&config.bus).await?;
    Ok(Auth {
        config,
        listeners,
        database,
        bus,
        kek,
    })
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

impl Auth {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc_addr()
            .unwrap_or(self.config.grpc.listen)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Auth {
            config,
            listeners,
            database,
            bus,
            kek,
        } = self;
        giao_platform::grpc::register_descriptor_set(giao_proto::FILE_DESCRIPTOR_SET);
        let store = store::for_database(&database);
        let policy = config.policy();
        let keys = Arc::new(KeyRing::new(store.clone(), kek, policy.access_ttl));
        keys.start()
            .await
            .context("cannot load the token signing keys")?;
        let core = Arc::new(core::Core {
            store: store.clone(),
            keys: keys.clone(),
            publisher: EventPublisher::new(bus.clone(), SERVICE),
            policy,
        });
        let authenticator = Arc::new(authn::AuthServiceAuthenticator::new(
            core.clone(),
            config.auth.dev_tokens,
        ));
        let server = GrpcServer::new(&config.grpc)
            .add_service(AuthServiceServer::new(api::Api::new(core.clone())))
            .with_authenticator(authenticator);

        let audit: BackgroundTask = {
            let bus = bus.clone();
            let store = store.clone();
            let ack_wait = Duration::from_secs(config.audit_ack_wait_secs);
            Box::new(move |stop| Box::pin(consumer::consume(bus, store, ack_wait, stop)))
        };
        let rotation: BackgroundTask = {
            let keys = keys.clone();
            let every = chrono::Duration::hours(secs(config.signing_key_rotation_hours));
            Box::new(move |stop| {
                Box::pin(async move {
                    loop {
                        // Also picks up keys rotated by another replica.
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        }
                        if let Err(error) = keys.rotate_if_older_than(every).await {
                            tracing::warn!(%error, "signing key check failed");
                        }
                    }
                })
            })
        };
        giao_platform::service::run_with_http(
            ServiceParts {
                name: SERVICE,
                listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes: vec![database.probe(), giao_bus::probe(&bus)],
                health_interval: Duration::from_millis(config.health_interval_ms),
                tasks: vec![audit, rotation],
            },
            http::routes(keys),
            shutdown,
        )
        .await
    }
}
