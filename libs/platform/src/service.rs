//! The run loop every service shares: bound listeners, the gRPC server, the metrics endpoint,
//! the health watcher and the service's background tasks (bus consumers, schedulers), all
//! stopped together by one cancellation token.
//!
//! Binding is separate from running so that a process learns its real addresses (port 0 in
//! tests) and fails at start, with a clear message, when a port is taken.

use std::{net::SocketAddr, time::Duration};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{GrpcConfig, MetricsConfig},
    grpc::GrpcServer,
    health::{self, Probe, Readiness},
    metrics::{self, Metrics},
};

/// Listeners bound before any dependency is touched.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(grpc: &GrpcConfig, metrics_config: &MetricsConfig) -> std::io::Result<Self> {
        let grpc = crate::grpc::bind(grpc).await?;
        let metrics = match metrics_config.listen {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        Ok(Self { grpc, metrics })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }
}

/// A long-running task of a service; it must return once the token is cancelled, after
/// finishing (and acking) what it was doing.
pub type BackgroundTask =
    Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// Everything a service runs.
pub struct ServiceParts {
    pub name: &'static str,
    pub listeners: Listeners,
    pub server: GrpcServer,
    pub metrics: Metrics,
    pub probes: Vec<Probe>,
    pub health_interval: Duration,
    pub tasks: Vec<BackgroundTask>,
}

impl std::fmt::Debug for ServiceParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceParts")
            .field("name", &self.name)
            .finish()
    }
}

/// Runs the service until `shutdown`: health turns NOT_SERVING, the server drains, background
/// tasks finish their in-flight work, then it returns. A background task that fails stops the
/// whole service (and so the process), rather than leaving it half alive.
pub async fn run(parts: ServiceParts, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_http(parts, axum::Router::new(), shutdown).await
}

/// [`run`] with extra HTTP routes served next to `/metrics` on the metrics listener (when
/// one is configured).
pub async fn run_with_http(
    parts: ServiceParts,
    http_routes: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ServiceParts {
        name,
        listeners,
        server,
        metrics,
        probes,
        health_interval,
        tasks,
    } = parts;
    let readiness = Readiness::default();
    let stop = shutdown.child_token();
    let mut set = tokio::task::JoinSet::new();

    set.spawn({
        let reporter = server.health_reporter();
        let services = server.service_names();
        let readiness = readiness.clone();
        let stop = stop.clone();
        async move {
            health::watch(reporter, services, probes, readiness, health_interval, stop).await;
            Ok(())
        }
    });
    if let Some(listener) = listeners.metrics {
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let stop = stop.clone();
        set.spawn(async move {
            metrics::serve_with_routes(listener, metrics, readiness, http_routes, stop)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    for task in tasks {
        set.spawn(task(stop.clone()));
    }
    {
        let stop = stop.clone();
        let listener = listeners.grpc;
        set.spawn(async move {
            server
                .serve(listener, metrics, stop)
                .await
                .map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
        });
    }
    tracing::info!(service = name, "started");

    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(error) => Err(anyhow::anyhow!("task panicked: {error}")),
        };
        if let Err(error) = outcome {
            tracing::error!(service = name, error = %format!("{error:#}"), "stopping after a task failed");
            first_error.get_or_insert(error);
        }
        // Whatever ended first (a failure or the shutdown), stop the rest.
        stop.cancel();
    }
    tracing::info!(service = name, "stopped");
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What the thin binaries need from a service's configuration.
pub trait ServiceConfig:
    serde::Serialize + serde::de::DeserializeOwned + Default + crate::config::Validate
{
    fn telemetry(&self) -> &crate::telemetry::TelemetryConfig;
}

/// The whole `main` of a service binary: `--config FILE` (optional) plus `GIAO_*` variables,
/// telemetry, signals, and an exit code that tells an orchestrator what happened.
pub fn main<C, F, Fut>(name: &'static str, serve: F) -> std::process::ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config_path = std::env::args().skip_while(|arg| arg != "--config").nth(1);
    let config: C = match crate::config::load(config_path.as_deref().map(std::path::Path::new)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _guard = match crate::telemetry::init(name, config.telemetry()) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{name}: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match serve(config, crate::shutdown::on_signal()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "{name} failed");
                eprintln!("{name}: {error:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
