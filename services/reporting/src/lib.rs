//! reporting: real-time scorecards per staff, team, account and lead source.
//!
//! Folds every domain event (idempotent by event id) into per-hour aggregates and
//! per-conversation response clocks, and answers scorecards, dashboards, funnels, SLA
//! compliance, drill-downs and CSV exports from them. The metric definitions are in
//! docs/reporting.md; the storage choices in docs/decisions/0008-reporting-aggregates.md.
//!
//! Layout: [`api`] (the gRPC service) → [`domain`] (the response clock, histograms, time
//! zones and business hours, scopes and visibility) → [`store`] (PostgreSQL and SQLite);
//! [`consumer`] is the bus consumer and the rebuild from the bus; [`history`] the rebuild
//! from message-store.

pub mod api;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod export;
pub mod history;
pub mod store;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use domain::time::BusinessHours;
use giao_authz::AuthConfig;
use giao_bus::{BusConfig, EventBus};
use giao_platform::{
    config::{GrpcConfig, MetricsConfig, Validate},
    grpc::GrpcServer,
    metrics::Metrics,
    service::{BackgroundTask, Listeners, ServiceConfig, ServiceParts},
    telemetry::TelemetryConfig,
};
use giao_proto::reporting::reporting_service_server::ReportingServiceServer;
use giao_storage::{Database, DatabaseConfig, Migrations};
use serde::{Deserialize, Serialize};
use store::ApplySettings;
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
    /// IANA time zone of business hours and report labels for tenants without their own
    /// (`SetReportSettings`).
    pub time_zone: String,
    /// When staff are expected to answer (the business-hours variants of response times).
    pub business_hours: BusinessHours,
    /// Care statuses that count as a conversion when a contact enters one.
    pub won_statuses: Vec<String>,
    /// Patterns that flag an outbound message as possible customer poaching.
    pub care_quality: CareQualityConfig,
    /// A customer waiting longer than this at the cut-off is a long silence.
    pub long_silence_minutes: u64,
    /// How long an event pulled by a replica that died stays invisible to the others.
    pub consumer_ack_wait_secs: u64,
    /// Applied event ids are kept this long for deduplication; longer than the bus keeps
    /// events (`bus.max_age_days`), after which they cannot be delivered again.
    pub processed_events_days: u32,
    /// Only for `giao-reporting rebuild --from message-store`.
    pub message_store: history::MessageStoreLink,
}

/// Care-quality patterns (regular expressions) matched against outbound human messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CareQualityConfig {
    /// Used for every tenant without its own list.
    pub patterns: Vec<String>,
    /// Per tenant id: replaces `patterns` for that tenant (an empty list turns flagging off).
    pub tenants: BTreeMap<String, Vec<String>>,
}

impl Default for CareQualityConfig {
    fn default() -> Self {
        Self {
            patterns: vec![
                // A Vietnamese mobile number in any common spelling.
                r"(?:\+?84[\s.\-]?|\b0)[35789](?:[\s.\-]?\d){8}\b".into(),
                // A bank account number announced as one.
                r"(?i)\b(?:stk|số tài khoản|so tai khoan|tài khoản|tai khoan|account)\b\D{0,20}\d{6,}".into(),
                // Moving the customer to another channel.
                r"(?i)\b(?:zalo\.me|facebook\.com|fb\.com|m\.me|t\.me|telegram|viber)\b".into(),
            ],
            tenants: BTreeMap::new(),
        }
    }
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
            time_zone: "Asia/Ho_Chi_Minh".into(),
            business_hours: BusinessHours::default(),
            won_statuses: vec!["won".into()],
            care_quality: CareQualityConfig::default(),
            long_silence_minutes: 60,
            consumer_ack_wait_secs: 30,
            processed_events_days: 14,
            message_store: history::MessageStoreLink::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        if self.health_interval_ms < 100 {
            return Err("health_interval_ms must be at least 100".into());
        }
        if self.consumer_ack_wait_secs == 0 {
            return Err("consumer_ack_wait_secs must be at least 1".into());
        }
        if u64::from(self.processed_events_days) <= self.bus.max_age_days {
            return Err(format!(
                "processed_events_days must be longer than bus.max_age_days ({})",
                self.bus.max_age_days
            ));
        }
        self.settings().map(|_| ())
    }
}

/// Everything the consumer and the API derive from the configuration, checked once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub zone: chrono_tz::Tz,
    pub apply: ApplySettings,
    pub long_silence_micros: i64,
}

impl Config {
    pub fn settings(&self) -> Result<Settings, String> {
        let zone = domain::time::parse_zone(&self.time_zone).ok_or_else(|| {
            format!(
                "invalid time_zone \"{}\": expected an IANA time zone such as Asia/Ho_Chi_Minh",
                self.time_zone
            )
        })?;
        let schedule = domain::time::Schedule::new(zone, &self.business_hours)?;
        let compile = |field: &str, patterns: &[String]| {
            patterns
                .iter()
                .enumerate()
                .map(|(index, pattern)| {
                    regex::Regex::new(pattern)
                        .map_err(|error| format!("invalid {field}[{index}]: {error}"))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let default = compile("care_quality.patterns", &self.care_quality.patterns)?;
        let mut tenants = std::collections::HashMap::new();
        for (tenant, patterns) in &self.care_quality.tenants {
            tenants.insert(
                tenant.clone(),
                compile(&format!("care_quality.tenants.{tenant}"), patterns)?,
            );
        }
        Ok(Settings {
            zone,
            apply: ApplySettings {
                fold: domain::clock::FoldSettings { schedule },
                won_statuses: self.won_statuses.clone(),
                poaching: store::Patterns { default, tenants },
            },
            long_silence_micros: i64::try_from(self.long_silence_minutes)
                .unwrap_or(i64::MAX / 60_000_000)
                .saturating_mul(60_000_000),
        })
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
        let settings = Arc::new(self.config.settings().map_err(anyhow::Error::msg)?);
        let store = store::Store::new(self.database.clone());
        let server = GrpcServer::new(&self.config.grpc)
            .add_service(ReportingServiceServer::new(api::Api::new(
                store.clone(),
                settings.clone(),
            )))
            .with_authenticator(installed.authenticator);
        let housekeeping: BackgroundTask = {
            let store = store.clone();
            let days = self.config.processed_events_days;
            Box::new(move |stop| {
                Box::pin(async move {
                    loop {
                        match store.forget_processed(days).await {
                            Ok(removed) if removed > 0 => {
                                tracing::info!(removed, "forgot old applied event ids");
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "cannot forget old event ids"),
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(6 * 3600)) => {}
                        }
                    }
                })
            })
        };
        let consumer: BackgroundTask = {
            let bus = self.bus.clone();
            let apply = Arc::new(settings.apply.clone());
            let ack_wait = Duration::from_secs(self.config.consumer_ack_wait_secs);
            Box::new(move |stop| Box::pin(consumer::consume(bus, store, apply, ack_wait, stop)))
        };
        giao_platform::service::run(
            ServiceParts {
                name: SERVICE,
                listeners: self.listeners,
                server,
                metrics: Metrics::new(SERVICE),
                probes: vec![self.database.probe(), giao_bus::probe(&self.bus)],
                health_interval: Duration::from_millis(self.config.health_interval_ms),
                tasks: [consumer, housekeeping]
                    .into_iter()
                    .chain(installed.task)
                    .collect(),
            },
            shutdown,
        )
        .await
    }
}

/// Where `giao-reporting rebuild` reads the history from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildSource {
    /// The bus stream (the last `bus.max_age_days`, every event type).
    Bus,
    /// message-store's lifetime record (messages, conversations and contacts only).
    MessageStore,
}

impl RebuildSource {
    /// `--from bus` (the default) or `--from message-store`.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        match args
            .iter()
            .skip_while(|arg| *arg != "--from")
            .nth(1)
            .map(String::as_str)
        {
            None | Some("bus") => Ok(Self::Bus),
            Some("message-store") => Ok(Self::MessageStore),
            Some(other) => Err(format!(
                "invalid --from \"{other}\": expected bus or message-store"
            )),
        }
    }
}

/// `giao-reporting rebuild [--from bus|message-store]`: folds the history into the
/// configured database (which should be fresh) and returns when done.
pub async fn rebuild(
    config: Config,
    source: RebuildSource,
    _shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let settings = config.settings().map_err(anyhow::Error::msg)?;
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the reporting database")?;
    let store = store::Store::new(database);
    match source {
        RebuildSource::Bus => {
            let bus = giao_bus::connect(&config.bus).await?;
            let applied =
                consumer::rebuild(bus, store, Arc::new(settings.apply), Duration::from_secs(5))
                    .await?;
            tracing::info!(applied, "reporting rebuilt from the bus");
            println!("reporting rebuilt from the bus: {applied} events applied");
        }
        RebuildSource::MessageStore => {
            let applied = history::rebuild(&config.message_store, &store, &settings.apply).await?;
            tracing::info!(applied, "reporting rebuilt from message-store");
            println!("reporting rebuilt from message-store: {applied} events applied");
        }
    }
    Ok(())
}

/// `giao-reporting rollup`: recomputes the daily roll-ups from the hourly tables, for once
/// the last replica older than the roll-ups has stopped (see docs/operations.md).
pub async fn rollup(config: Config, _shutdown: CancellationToken) -> anyhow::Result<()> {
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the reporting database")?;
    store::Store::new(database)
        .rollup()
        .await
        .context("cannot recompute the daily roll-ups")?;
    tracing::info!("daily roll-ups recomputed from the hourly tables");
    println!("daily roll-ups recomputed from the hourly tables");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_care_quality_patterns_catch_phones_accounts_and_other_channels() {
        let settings = Config::default().settings().expect("defaults are valid");
        let flagged = |tenant: &str, text: &str| {
            settings
                .apply
                .poaching
                .for_tenant(tenant)
                .iter()
                .any(|pattern| pattern.is_match(text))
        };
        assert!(flagged("acme", "chị gọi em số 0912.345.678 nhé"));
        assert!(flagged("acme", "liên hệ +84 912 345 678"));
        assert!(flagged("acme", "chuyển khoản vào stk: 0123456789 giúp em"));
        assert!(flagged("acme", "add zalo.me/0912345678 của em"));
        assert!(!flagged("acme", "Dạ đơn hàng KH000123 giao ngày 12/3 ạ"));
        assert!(!flagged("acme", "giá 1.250.000 đồng"));
    }

    #[test]
    fn tenants_can_replace_the_patterns_and_bad_settings_are_named() {
        let mut config = Config::default();
        config
            .care_quality
            .tenants
            .insert("globex".into(), vec!["(?i)hotline".into()]);
        let settings = config.settings().expect("valid");
        assert_eq!(settings.apply.poaching.for_tenant("globex").len(), 1);
        assert_eq!(settings.apply.poaching.for_tenant("acme").len(), 3);

        config
            .care_quality
            .tenants
            .insert("bad".into(), vec!["(".into()]);
        let error = config.settings().expect_err("bad pattern");
        assert!(error.contains("care_quality.tenants.bad[0]"), "{error}");
        let args = |list: &[&str]| list.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();
        assert_eq!(
            RebuildSource::from_args(&args(&["rebuild"])),
            Ok(RebuildSource::Bus)
        );
        assert_eq!(
            RebuildSource::from_args(&args(&["rebuild", "--from", "message-store"])),
            Ok(RebuildSource::MessageStore)
        );
        assert!(
            RebuildSource::from_args(&args(&["rebuild", "--from", "tape"]))
                .expect_err("unknown source")
                .contains("--from")
        );
        let zone = Config {
            time_zone: "Moon/Base".into(),
            ..Config::default()
        };
        assert!(zone.validate().expect_err("bad zone").contains("time_zone"));
    }
}
