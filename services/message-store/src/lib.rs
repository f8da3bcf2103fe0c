//! message-store: the company's lifetime record of every customer and conversation.
//!
//! It consumes captured messages from the bus, stores them idempotently, and serves history
//! and conversation lists over gRPC, filtered by the caller's tenant and visibility.
//!
//! Layout: [`api`] (the gRPC service) → [`domain`] (validation, cursors, visibility) →
//! [`store`] (PostgreSQL and SQLite side by side); [`ingest`] is the bus consumer.

pub mod api;
pub mod attachments;
pub mod domain;
pub mod error;
pub mod export;
pub mod ingest;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
use giao_proto::messagestore::message_store_service_server::MessageStoreServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "message-store";

/// Default gRPC port of the message store.
pub const DEFAULT_PORT: u16 = 7102;

pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub grpc: GrpcConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
    /// How often the database and bus are probed for the health status.
    pub health_interval_ms: u64,
    /// How long a captured message pulled by a replica that died stays invisible to the
    /// others before it is delivered again.
    pub inbound_ack_wait_secs: u64,
    /// Where attachment bytes are kept (a local directory; object storage in a cluster).
    pub attachments_dir: String,
    pub max_attachment_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_listen(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            metrics: MetricsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9102))),
            },
            database: DatabaseConfig {
                url: "sqlite://data/message-store.db".into(),
                ..DatabaseConfig::default()
            },
            bus: BusConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            health_interval_ms: 2_000,
            inbound_ack_wait_secs: 30,
            attachments_dir: "data/attachments".into(),
            max_attachment_bytes: 50 * 1024 * 1024,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        if self.health_interval_ms < 100 {
            return Err("health_interval_ms must be at least 100".into());
        }
        if self.attachments_dir.trim().is_empty() {
            return Err("attachments_dir must not be empty".into());
        }
        if self.max_attachment_bytes == 0 {
            return Err("max_attachment_bytes must be at least 1".into());
        }
        if self.inbound_ack_wait_secs == 0 {
            return Err("inbound_ack_wait_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// A message store with its listeners bound and its dependencies connected and migrated.
pub struct MessageStore {
    config: Config,
    listeners: Listeners,
    database: Database,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore").finish_non_exhaustive()
    }
}

/// Binds, connects and migrates; every failure names what could not be reached.
pub async fn bind(config: Config) -> anyhow::Result<MessageStore> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = Listeners::bind(&config.grpc, &config.metrics).await?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the message-store database")?;
    let bus = giao_bus::connect(&config.bus).await?;
    Ok(MessageStore {
        config,
        listeners,
        database,
        bus,
    })
}

/// Runs the message store until `shutdown`.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

impl MessageStore {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc_addr()
            .unwrap_or(self.config.grpc.listen)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let MessageStore {
            config,
            listeners,
            database,
            bus,
        } = self;
        let installed = config
            .auth
            .install(SERVICE, &bus)
            .map_err(anyhow::Error::msg)?;
        giao_platform::grpc::register_descriptor_set(giao_proto::FILE_DESCRIPTOR_SET);

        let store = store::for_database(&database);
        store
            .maintain(chrono::Utc::now())
            .await
            .context("message-store housekeeping failed")?;
        let ingestor =
            ingest::Ingestor::new(store.clone(), EventPublisher::new(bus.clone(), SERVICE));
        let attachments =
            attachments::Attachments::local(&config.attachments_dir, config.max_attachment_bytes)
                .map_err(anyhow::Error::msg)?;
        let api = api::Api::new(store.clone(), ingestor.clone(), attachments);
        let server = GrpcServer::new(&config.grpc)
            .add_service(
                MessageStoreServiceServer::new(api)
                    .max_decoding_message_size(config.grpc.max_message_bytes)
                    .max_encoding_message_size(config.grpc.max_message_bytes),
            )
            .with_authenticator(installed.authenticator);

        let probes = vec![database.probe(), giao_bus::probe(&bus)];
        let consumer: BackgroundTask = {
            let bus = bus.clone();
            let ingestor = ingestor.clone();
            let ack_wait = Duration::from_secs(config.inbound_ack_wait_secs);
            Box::new(move |stop| Box::pin(ingest::consume(bus, ingestor, ack_wait, stop)))
        };
        let updates: BackgroundTask = {
            let bus = bus.clone();
            let ingestor = ingestor.clone();
            let ack_wait = Duration::from_secs(config.inbound_ack_wait_secs);
            Box::new(move |stop| Box::pin(ingest::consume_updates(bus, ingestor, ack_wait, stop)))
        };
        let housekeeping: BackgroundTask = {
            let store = store.clone();
            Box::new(move |stop| {
                Box::pin(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(6 * 3600)) => {}
                        }
                        if let Err(error) = store.maintain(chrono::Utc::now()).await {
                            tracing::warn!(%error, "message-store housekeeping failed");
                        }
                    }
                })
            })
        };
        giao_platform::service::run(
            ServiceParts {
                name: SERVICE,
                listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes,
                health_interval: Duration::from_millis(config.health_interval_ms),
                tasks: [consumer, updates, housekeeping]
                    .into_iter()
                    .chain(installed.task)
                    .collect(),
            },
            shutdown,
        )
        .await
    }
}
