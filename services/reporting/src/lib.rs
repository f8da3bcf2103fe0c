//! reporting: real-time scorecards per staff, team, account and lead source.
//!
//! Builds aggregates from events (idempotent by event id) and answers report queries. This crate is the service's walking skeleton: it binds, migrates its own
//! database, connects the bus, and serves `ReportingService` (every RPC answers Unimplemented
//! until its issue lands), health and reflection through the shared platform stack.
//!
//! Layout: [`api`] (the gRPC service) and, as it grows, `domain/` and `store/`.

pub mod api;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use giao_authz::AuthConfig;
use giao_bus::{BusConfig, EventBus};
use giao_platform::{
    config::{GrpcConfig, MetricsConfig, Validate},
    grpc::GrpcServer,
    metrics::Metrics,
    service::{Listeners, ServiceConfig, ServiceParts},
    telemetry::TelemetryConfig,
};
use giao_proto::reporting::reporting_service_server::ReportingServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "reporting";
pub const DEFAULT_PORT: u16 = 7104;

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
    pub health_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_listen(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            metrics: MetricsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9104))),
            },
            database: DatabaseConfig {
                url: "sqlite://data/reporting.db".into(),
                ..DatabaseConfig::default()
            },
            bus: BusConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            health_interval_ms: 2_000,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        if self.health_interval_ms < 100 {
            return Err("health_interval_ms must be at least 100".into());
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// The service with its listeners bound and its dependencies connected and migrated.
pub struct Reporting {
    config: Config,
    listeners: Listeners,
    database: Database,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting").finish_non_exhaustive()
    }
}

pub async fn bind(config: Config) -> anyhow::Result<Reporting> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = Listeners::bind(&config.grpc, &config.metrics).await?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the reporting database")?;
    let bus = giao_bus::connect(&config.bus).await?;
    Ok(Reporting {
        config,
        listeners,
        database,
        bus,
    })
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

impl Reporting {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc_addr()
            .unwrap_or(self.config.grpc.listen)
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let installed = self
            .config
            .auth
            .install(SERVICE, &self.bus)
            .map_err(anyhow::Error::msg)?;
        giao_platform::grpc::register_descriptor_set(giao_proto::FILE_DESCRIPTOR_SET);
        let server = GrpcServer::new(&self.config.grpc)
            .add_service(ReportingServiceServer::new(api::Api))
            .with_authenticator(installed.authenticator);
        giao_platform::service::run(
            ServiceParts {
                name: SERVICE,
                listeners: self.listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes: vec![self.database.probe(), giao_bus::probe(&self.bus)],
                health_interval: Duration::from_millis(self.config.health_interval_ms),
                tasks: installed.task.into_iter().collect(),
            },
            shutdown,
        )
        .await
    }
}
