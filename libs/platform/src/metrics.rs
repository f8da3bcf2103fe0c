//! Prometheus metrics. Each service owns one [`Metrics`] (so five services in one `giao dev`
//! process keep separate registries and ports) and registers its own collectors next to the
//! gRPC request metrics that the shared tower stack records.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Metric, Registry},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
}

type HistogramFamily = Family<GrpcLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// One service's registry plus the gRPC collectors every service has.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: HistogramFamily,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `service` becomes the `giao_<service>` prefix, e.g. `giao_message_store_…`.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix(format!("giao_{}", service.replace('-', "_")));
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        let grpc_duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request latency by method and status code",
            grpc_duration.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            grpc_requests,
            grpc_duration,
        }
    }

    /// Registers a service-specific collector.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    pub(crate) fn observe_grpc(&self, method: &str, code: tonic::Code, seconds: f64) {
        let labels = GrpcLabels {
            method: method.to_string(),
            code: format!("{code:?}"),
        };
        self.grpc_requests.get_or_create(&labels).inc();
        self.grpc_duration.get_or_create(&labels).observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock()
            && let Err(error) = encode(&mut out, &registry)
        {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    readiness: Readiness,
}

/// Serves `/metrics` (Prometheus), `/livez` and `/readyz` (for plain HTTP probes; the gRPC
/// health service is the primary probe) until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_routes(listener, metrics, readiness, Router::new(), shutdown).await
}

/// [`serve`] plus a service's own HTTP routes (the auth service's
/// `/.well-known/jwks.json`) on the same listener.
pub async fn serve_with_routes(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, readiness })
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the metrics listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen for metrics on {addr}: {error}"),
        )
    })
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", state.readiness.reason()),
        )
    }
}
