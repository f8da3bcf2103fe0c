//! connector: channel accounts, live sessions and the bridge between Zalo and the bus.
//!
//! Every captured message is published as `MessageReceived` with a dedupe id before anything
//! is acknowledged to the channel. Today the simulator channel feeds it; the Zalo OA and
//! personal adapters plug into the same path.
//!
//! Layout: [`api`] (gRPC) → [`simulator`] (the simulator channel) → [`store`] (accounts).

pub mod api;
pub mod error;
pub mod simulator;
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
use giao_proto::connector::connector_service_server::ConnectorServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use simulator::SimulatorConfig;

pub const SERVICE: &str = "connector";
pub const DEFAULT_PORT: u16 = 7101;

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
    pub simulator: SimulatorConfig,
    pub health_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_listen(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            metrics: MetricsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9101))),
            },
            database: DatabaseConfig {
                url: "sqlite://data/connector.db".into(),
                ..DatabaseConfig::default()
            },
            bus: BusConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            simulator: SimulatorConfig::default(),
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

/// A connector with its listeners bound and its dependencies connected and migrated.
pub struct Connector {
    config: Config,
    listeners: Listeners,
    database: Database,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

pub async fn bind(config: Config) -> anyhow::Result<Connector> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = Listeners::bind(&config.grpc, &config.metrics).await?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the connector database")?;
    let bus = giao_bus::connect(&config.bus).await?;
    Ok(Connector {
        config,
        listeners,
        database,
        bus,
    })
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

impl Connector {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc_addr()
            .unwrap_or(self.config.grpc.listen)
    }

    /// The simulator of this connector, for demo seeding and tests.
    pub fn simulator(&self) -> simulator::Simulator {
        simulator::Simulator::new(
            store::AccountStore::new(self.database.clone()),
            EventPublisher::new(self.bus.clone(), SERVICE),
        )
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let simulator = self.simulator();
        let Connector {
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
        let api = api::Api::new(
            store::AccountStore::new(database.clone()),
            simulator.clone(),
        );
        let server = GrpcServer::new(&config.grpc)
            .add_service(
                ConnectorServiceServer::new(api)
                    .max_decoding_message_size(config.grpc.max_message_bytes)
                    .max_encoding_message_size(config.grpc.max_message_bytes),
            )
            .with_authenticator(installed.authenticator);
        let probes = vec![database.probe(), giao_bus::probe(&bus)];
        let mut tasks: Vec<BackgroundTask> = installed.task.into_iter().collect();
        if config.simulator.demo {
            let demo = config.simulator.clone();
            tasks.push(Box::new(move |stop| {
                Box::pin(simulator::feed_demo(simulator, demo, stop))
            }));
        }
        giao_platform::service::run(
            ServiceParts {
                name: SERVICE,
                listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes,
                health_interval: Duration::from_millis(config.health_interval_ms),
                tasks,
            },
            shutdown,
        )
        .await
    }
}
