//! connector: channel accounts, live sessions and the bridge between Zalo and the bus.
//!
//! Every captured message is published as `MessageReceived` with a dedupe id before anything
//! is acknowledged to the channel. Today the simulator channel feeds it; the Zalo OA and
//! personal adapters plug into the same path.
//!
//! Layout: [`api`] (gRPC) → [`simulator`] (the simulator channel), [`zalo`] (the OA
//! adapter: webhook, error table), [`personal`] (the personal-account adapter: listeners
//! following [`sessions`], capture, paced sends, QR logins) → [`store`] (accounts,
//! credentials sealed by [`credentials`]).

pub mod api;
pub mod credentials;
pub mod error;
pub mod personal;
pub mod sessions;
pub mod simulator;
pub mod store;
pub mod zalo;

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

pub use credentials::CredentialsConfig;
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
    /// AEAD keys sealing channel credentials at rest.
    pub credentials: CredentialsConfig,
    /// Zalo webhooks are served on the HTTP (metrics) listener.
    pub webhook: WebhookConfig,
    /// Session leases shared among replicas.
    pub sessions: sessions::SessionsConfig,
    /// The Zalo OA adapter: API hosts, the giao app for OAuth connects, pacing.
    pub zalo_oa: zalo::client::ZaloOaConfig,
    /// The personal-account adapter: Zalo's web hosts, QR logins, pacing, reconnects.
    pub zalo_personal: personal::ZaloPersonalConfig,
    /// Unacked outbound requests come back after this long.
    pub outbound_ack_wait_secs: u64,
    /// An outbound request is tried at most this many times (with growing backoff, about
    /// ten minutes for 30); then it ends as failed with the last reason.
    pub outbound_max_deliver: u32,
    /// giao's attachment store, the one message-store writes (read only here): outbound
    /// images and files are read from it by `storage_key` and uploaded to Zalo. Empty: such
    /// messages fail with a clear reason.
    pub attachments_dir: String,
    pub health_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Larger webhook bodies are refused with 413.
    pub max_body_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
        }
    }
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
            credentials: CredentialsConfig::default(),
            webhook: WebhookConfig::default(),
            sessions: sessions::SessionsConfig::default(),
            zalo_oa: zalo::client::ZaloOaConfig::default(),
            zalo_personal: personal::ZaloPersonalConfig::default(),
            outbound_ack_wait_secs: 30,
            outbound_max_deliver: 30,
            // message-store's default, so one machine's services share it unconfigured.
            attachments_dir: "data/attachments".into(),
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
        if self.outbound_max_deliver == 0 {
            return Err("outbound_max_deliver must be at least 1".into());
        }
        if self.webhook.max_body_bytes < 1024 {
            return Err("webhook.max_body_bytes must be at least 1024".into());
        }
        credentials::Sealer::from_config(&self.credentials)?;
        self.zalo_oa.extra_roots()?;
        self.sessions.validate()?;
        self.zalo_personal.validate()?;
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
    /// The HTTP listener: `/metrics` and the Zalo webhooks.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr()
    }

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
        let sealer =
            credentials::Sealer::from_config(&config.credentials).map_err(anyhow::Error::msg)?;
        let sealer_for_reseal = sealer.clone();
        let publisher = EventPublisher::new(bus.clone(), SERVICE);
        let objects = zalo::media::Objects::local(&config.attachments_dir);
        let personal = personal::PersonalRuntime::new(
            store::AccountStore::new(database.clone()),
            sealer.clone(),
            publisher.clone(),
            config.zalo_personal.clone(),
            objects.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        let oa = zalo::outbound::OaRuntime::new(
            store::AccountStore::new(database.clone()),
            sealer.clone(),
            config.zalo_oa.clone(),
            publisher.clone(),
            objects,
        )
        .with_personal(personal.clone());
        let api = api::Api::new(
            store::AccountStore::new(database.clone()),
            simulator.clone(),
            sealer.clone(),
            publisher.clone(),
            store::LeaseStore::new(database.clone()),
            oa.clone(),
            personal.clone(),
        );
        let metrics = Metrics::new(SERVICE);
        let rejected = zalo::webhook::Rejected::default();
        metrics.register(
            "connector_webhook_rejected",
            "Zalo webhooks not turned into events, by reason (unsigned, forged, malformed, unknown_account refused; incomplete kept raw)",
            rejected.clone(),
        );
        let webhooks = zalo::webhook::router(
            zalo::webhook::WebhookState {
                accounts: store::AccountStore::new(database.clone()),
                sealer,
                publisher,
                rejected,
                raw: zalo::RawEvents::new(database.clone()),
                oa: oa.clone(),
            },
            config.webhook.max_body_bytes,
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
        let oa_refresh = oa.clone();
        {
            let bus = bus.clone();
            let ack_wait = Duration::from_secs(config.outbound_ack_wait_secs.max(1));
            let max_deliver = config.outbound_max_deliver;
            tasks.push(Box::new(move |stop| {
                Box::pin(oa.consume(bus, ack_wait, max_deliver, stop))
            }));
        }
        {
            let seals = store::SealStore::new(database.clone());
            let sealer = sealer_for_reseal;
            tasks.push(Box::new(move |stop| {
                Box::pin(reseal_retired_keys(seals, sealer, stop))
            }));
        }
        if config.sessions.enabled {
            let sessions =
                sessions::Sessions::new(store::LeaseStore::new(database.clone()), &config.sessions);
            tracing::info!(replica = %sessions.replica(), "running account sessions");
            // The holder of an OA account's session keeps its token fresh, so an account
            // that sends nothing for weeks does not let its refresh token lapse.
            let refresher = sessions.clone();
            let accounts = store::AccountStore::new(database.clone());
            let oa = oa_refresh;
            tasks.push(Box::new(move |stop| {
                Box::pin(refresh_held_tokens(refresher, accounts, oa, stop))
            }));
            let supervised = sessions.clone();
            tasks.push(Box::new(move |stop| {
                Box::pin(personal.supervise(supervised, stop))
            }));
            tasks.push(Box::new(move |stop| Box::pin(sessions.run(stop))));
        }
        if config.simulator.demo {
            let demo = config.simulator.clone();
            tasks.push(Box::new(move |stop| {
                Box::pin(simulator::feed_demo(simulator, demo, stop))
            }));
        }
        giao_platform::service::run_with_http(
            ServiceParts {
                name: SERVICE,
                listeners,
                server,
                metrics,
                probes,
                health_interval: Duration::from_millis(config.health_interval_ms),
                tasks,
            },
            webhooks,
            shutdown,
        )
        .await
    }
}

/// Re-seals the rows still under a key listed in `credentials.retired_key_ids`: at start,
/// then every ten minutes (a replica still on the old configuration during a rolling restart
/// may write some). Once no row names a retired key, it can be removed from the config.
async fn reseal_retired_keys(
    seals: store::SealStore,
    sealer: credentials::Sealer,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match credentials::reseal_stale(&seals, &sealer, 200).await {
            Ok(done) if done != credentials::Resealed::default() => tracing::info!(
                resealed = done.resealed,
                unreadable = done.unreadable,
                key_id = sealer.key_id(),
                "credentials re-sealed under the current key"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "credentials not re-sealed, trying again later"),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

/// Every minute, refreshes the due OA tokens of the accounts whose sessions run here.
async fn refresh_held_tokens(
    sessions: sessions::Sessions,
    accounts: store::AccountStore,
    oa: zalo::outbound::OaRuntime,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        for (tenant, account) in sessions.held() {
            // Thousands of held accounts must not hold up a shutdown.
            if stop.is_cancelled() {
                return Ok(());
            }
            let is_oa = matches!(
                accounts.get(&tenant, &account).await,
                Ok(Some(found)) if found.kind == giao_proto::common::ChannelKind::ZaloOa as i32
            );
            if is_oa && let Err(error) = oa.access_token(&tenant, &account, false).await {
                tracing::warn!(account = %account, %error, "OA token not refreshed");
            }
        }
    }
}
