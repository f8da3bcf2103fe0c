//! assignment: routing, ownership, shifts, offboarding handover, SLA and reminders.
//!
//! Owns ownership history, offboarding handover jobs, the roster mirror, agent availability
//! and capacity, routing policies and the unassigned queue (shifts, SLA timers and reminders
//! are still to come). Ownership itself lives in
//! message-store, which enforces visibility; this service changes it there synchronously with
//! the caller's credential and keeps the history.
//!
//! Layout: [`api`] (the gRPC service), [`routing`] (routing decisions as plain functions),
//! [`router`] (the background routing worker), [`store`] (both backends' SQL side by side),
//! [`error`].

pub mod api;
pub mod error;
pub mod router;
pub mod routing;
pub mod sla;
pub mod store;
pub mod timers;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use giao_authz::AuthConfig;
use giao_bus::{BusConfig, EventBus, envelope::EventPublisher};
use giao_platform::{
    config::{GrpcConfig, MetricsConfig, Validate},
    grpc::GrpcServer,
    metrics::Metrics,
    service::{Listeners, ServiceConfig, ServiceParts},
    telemetry::TelemetryConfig,
};
use giao_proto::assignment::assignment_service_server::AssignmentServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "assignment";
pub const DEFAULT_PORT: u16 = 7103;

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
    /// Where message-store answers, and the API key for background work (routing, SLA).
    pub message_store: MessageStoreLink,
    /// Where auth answers (roster look-ups, deactivating a leaver).
    pub auth_service: AuthServiceLink,
    pub routing: RoutingConfig,
    pub sla: SlaConfig,
}

/// SLA clocks and their scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaConfig {
    /// Follow MessageStored and fire breaches; off stops both on this replica.
    pub enabled: bool,
    /// How often this replica looks for due clocks.
    pub tick_ms: u64,
    /// How long a claimed clock stays this replica's before another may fire it.
    pub lease_secs: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 1_000,
            lease_secs: 30,
        }
    }
}

/// Routing of new conversations and the roster mirror.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Consume ConversationOpened and route; off leaves new conversations unassigned.
    pub enabled: bool,
    /// Service keys per tenant (`tenant → gk_<id>_<secret>`), taking precedence over
    /// `message_store.api_key`. Secrets: never logged, never shown by Debug. Scopes needed:
    /// `messages.read`, `contacts.read`, `assignment.manage`, `users.manage` (roster).
    pub tenant_api_keys: BTreeMap<String, String>,
    /// How often the queue is re-examined when nothing woke it.
    pub drain_interval_ms: u64,
    /// How often the roster of each routed tenant is mirrored from auth.
    pub roster_sync_secs: u64,
    /// New conversations this replica routes at once (decisions of one tenant still take
    /// turns; the calls to message-store around them overlap).
    pub parallelism: u32,
    pub ack_wait_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant_api_keys: BTreeMap::new(),
            drain_interval_ms: 2_000,
            roster_sync_secs: 300,
            parallelism: 8,
            ack_wait_secs: 30,
        }
    }
}

impl std::fmt::Debug for RoutingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingConfig")
            .field("enabled", &self.enabled)
            .field(
                "tenant_api_keys",
                &self.tenant_api_keys.keys().collect::<Vec<_>>(),
            )
            .field("drain_interval_ms", &self.drain_interval_ms)
            .field("roster_sync_secs", &self.roster_sync_secs)
            .field("parallelism", &self.parallelism)
            .field("ack_wait_secs", &self.ack_wait_secs)
            .finish()
    }
}

/// How this service reaches message-store. Synchronous RPCs forward the caller's own
/// credential; `api_key` is only for work no caller is waiting on.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageStoreLink {
    /// `http://host:port`; empty leaves ownership RPCs Unavailable.
    pub endpoint: String,
    /// A secret: never logged, never shown by Debug.
    pub api_key: Option<String>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for MessageStoreLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStoreLink")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// How this service reaches auth.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthServiceLink {
    /// `http://host:port`; empty until roster mirroring and offboarding need it.
    pub endpoint: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_listen(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            metrics: MetricsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9103))),
            },
            database: DatabaseConfig {
                url: "sqlite://data/assignment.db".into(),
                ..DatabaseConfig::default()
            },
            bus: BusConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            health_interval_ms: 2_000,
            message_store: MessageStoreLink {
                timeout_ms: 10_000,
                ..MessageStoreLink::default()
            },
            auth_service: AuthServiceLink::default(),
            routing: RoutingConfig::default(),
            sla: SlaConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        if self.health_interval_ms < 100 {
            return Err("health_interval_ms must be at least 100".into());
        }
        if self.routing.drain_interval_ms < 50 {
            return Err("routing.drain_interval_ms must be at least 50".into());
        }
        if self.sla.tick_ms < 50 || self.sla.lease_secs == 0 {
            return Err("sla.tick_ms must be at least 50 and sla.lease_secs positive".into());
        }
        if !(1..=64).contains(&self.routing.parallelism) {
            return Err("routing.parallelism must be 1 to 64".into());
        }
        if self.routing.roster_sync_secs == 0 || self.routing.ack_wait_secs == 0 {
            return Err(
                "routing.roster_sync_secs and routing.ack_wait_secs must be positive".into(),
            );
        }
        for (key, endpoint) in [
            ("message_store.endpoint", &self.message_store.endpoint),
            ("auth_service.endpoint", &self.auth_service.endpoint),
        ] {
            if !(endpoint.is_empty()
                || endpoint.starts_with("http://")
                || endpoint.starts_with("https://"))
            {
                return Err(format!("{key} must start with http:// or https://"));
            }
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
pub struct Assignment {
    config: Config,
    listeners: Listeners,
    database: Database,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment").finish_non_exhaustive()
    }
}

pub async fn bind(config: Config) -> anyhow::Result<Assignment> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = Listeners::bind(&config.grpc, &config.metrics).await?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the assignment database")?;
    let bus = giao_bus::connect(&config.bus).await?;
    Ok(Assignment {
        config,
        listeners,
        database,
        bus,
    })
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

impl Assignment {
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
        let message_store = if self.config.message_store.endpoint.is_empty() {
            None
        } else {
            Some(
                giao_platform::grpc::channel(
                    &self.config.message_store.endpoint,
                    Duration::from_millis(self.config.message_store.timeout_ms.max(100)),
                )
                .context("invalid message_store.endpoint")?,
            )
        };
        let auth = if self.config.auth_service.endpoint.is_empty() {
            None
        } else {
            Some(
                giao_platform::grpc::channel(
                    &self.config.auth_service.endpoint,
                    Duration::from_millis(self.config.message_store.timeout_ms.max(100)),
                )
                .context("invalid auth_service.endpoint")?,
            )
        };
        let publisher = EventPublisher::new(self.bus.clone(), SERVICE);
        let routing = &self.config.routing;
        let router = router::Router::new(
            self.database.clone(),
            publisher.clone(),
            message_store.clone(),
            auth.clone(),
            router::RouterSettings {
                tenant_api_keys: routing.tenant_api_keys.clone(),
                api_key: self.config.message_store.api_key.clone(),
                drain_interval: Duration::from_millis(routing.drain_interval_ms),
                roster_sync_interval: Duration::from_secs(routing.roster_sync_secs),
                // SQLite has one writer (and so, in `giao dev`, does message-store): more
                // pullers there only wait on each other's locks.
                parallelism: if matches!(self.database, giao_storage::Database::Sqlite(_)) {
                    routing.parallelism.min(2)
                } else {
                    routing.parallelism
                },
                ack_wait: Duration::from_secs(routing.ack_wait_secs),
            },
        );
        let timers = timers::Timers::new(
            self.database.clone(),
            publisher.clone(),
            router.clone(),
            Duration::from_millis(self.config.sla.tick_ms),
            Duration::from_secs(self.config.sla.lease_secs),
        );
        let api = api::Api::new(
            self.database.clone(),
            publisher,
            message_store,
            auth,
            router.clone(),
        );
        let mut tasks: Vec<giao_platform::service::BackgroundTask> =
            installed.task.into_iter().collect();
        if routing.enabled {
            let (consumer, drain, roster) = (router.clone(), router.clone(), router);
            let bus = self.bus.clone();
            tasks.push(Box::new(move |stop| Box::pin(consumer.consume(bus, stop))));
            tasks.push(Box::new(move |stop| Box::pin(drain.run_drain(stop))));
            tasks.push(Box::new(move |stop| Box::pin(roster.run_roster_sync(stop))));
        }
        if self.config.sla.enabled {
            let (consumer, scheduler) = (timers.clone(), timers);
            let bus = self.bus.clone();
            let ack_wait = Duration::from_secs(routing.ack_wait_secs);
            tasks.push(Box::new(move |stop| {
                Box::pin(consumer.consume(bus, ack_wait, stop))
            }));
            tasks.push(Box::new(move |stop| {
                Box::pin(scheduler.run_scheduler(stop))
            }));
        }
        let server = GrpcServer::new(&self.config.grpc)
            .add_service(AssignmentServiceServer::new(api))
            .with_authenticator(installed.authenticator);
        giao_platform::service::run(
            ServiceParts {
                name: SERVICE,
                listeners: self.listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes: vec![self.database.probe(), giao_bus::probe(&self.bus)],
                health_interval: Duration::from_millis(self.config.health_interval_ms),
                tasks,
            },
            shutdown,
        )
        .await
    }
}
