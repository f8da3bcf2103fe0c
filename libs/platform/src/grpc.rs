//! The gRPC server every service runs and the client channel every caller uses.
//!
//! One tower stack wraps every service: a tracing span per request (parented on the caller's
//! W3C trace context), Prometheus request metrics, optional authentication (the token layer
//! plugs in through [`Authenticator`]), plus tonic's request timeout, load shedding and
//! concurrency limit. Every server also answers grpc.health.v1 and reflection (v1 and
//! v1alpha), restricted to the services it actually serves.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Interceptor, RoutesBuilder},
    transport::{Channel, Endpoint, server::TcpIncoming},
};
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{config::GrpcConfig, metrics::Metrics, telemetry};

/// Verifies the caller of an RPC. Implemented by the token layer in `giao-authz`; the
/// returned extensions (the verified principal) are added to the request so handlers can
/// read them. Health and reflection are never authenticated.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(
        &self,
        rpc_path: &str,
        headers: &http::HeaderMap,
    ) -> BoxFuture<'static, Result<http::Extensions, tonic::Status>>;
}

/// Builder for a service's gRPC server.
pub struct GrpcServer {
    config: GrpcConfig,
    routes: RoutesBuilder,
    service_names: Vec<String>,
    health_reporter: HealthReporter,
    authenticator: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("services", &self.service_names)
            .finish()
    }
}

impl GrpcServer {
    pub fn new(config: &GrpcConfig) -> Self {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Self {
            config: config.clone(),
            routes,
            service_names: Vec::new(),
            health_reporter,
            authenticator: None,
        }
    }

    /// Adds an API service. Its health entry starts NOT_SERVING until the health watcher
    /// has seen every dependency answer.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME.to_string());
        self.routes.add_service(service);
        self
    }

    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    pub fn health_reporter(&self) -> HealthReporter {
        self.health_reporter.clone()
    }

    pub fn service_names(&self) -> Vec<String> {
        self.service_names.clone()
    }

    /// Serves on `listener` until `shutdown`, then drains in-flight requests.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let mut reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for descriptor in registered_descriptor_sets() {
            reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(descriptor);
            reflection_v1alpha =
                reflection_v1alpha.register_encoded_file_descriptor_set(descriptor);
        }
        for name in self
            .service_names
            .iter()
            .map(String::as_str)
            .chain(["grpc.health.v1.Health"])
        {
            reflection_v1 = reflection_v1.with_service_name(name);
            reflection_v1alpha = reflection_v1alpha.with_service_name(name);
        }
        match (reflection_v1.build_v1(), reflection_v1alpha.build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                self.routes.add_service(v1);
                self.routes.add_service(v1alpha);
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "reflection disabled: descriptor set rejected");
            }
        }

        let stack = StackLayer {
            state: Arc::new(StackState {
                metrics,
                authenticator: self.authenticator.clone(),
            }),
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .timeout(Duration::from_secs(self.config.request_timeout_secs))
            .concurrency_limit_per_connection(self.config.concurrency_limit)
            .load_shed(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(stack)
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await
    }
}

static DESCRIPTOR_SETS: std::sync::OnceLock<std::sync::Mutex<Vec<&'static [u8]>>> =
    std::sync::OnceLock::new();

/// Registers an encoded descriptor set for reflection (the proto crate's set); done once by
/// each service before serving. Kept here so this crate does not depend on generated code.
pub fn register_descriptor_set(set: &'static [u8]) {
    let sets = DESCRIPTOR_SETS.get_or_init(Default::default);
    if let Ok(mut sets) = sets.lock()
        && !sets.iter().any(|known| std::ptr::eq(*known, set))
    {
        sets.push(set);
    }
}

fn registered_descriptor_sets() -> Vec<&'static [u8]> {
    DESCRIPTOR_SETS
        .get()
        .and_then(|sets| sets.lock().ok().map(|sets| sets.clone()))
        .unwrap_or_default()
}

/// Binds a gRPC listener, naming the address on failure.
pub async fn bind(config: &GrpcConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen for gRPC on {}: {error}", config.listen),
        )
    })
}

struct StackState {
    metrics: Metrics,
    authenticator: Option<Arc<dyn Authenticator>>,
}

#[derive(Clone)]
struct StackLayer {
    state: Arc<StackState>,
}

impl<S> Layer<S> for StackLayer {
    type Service = StackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StackService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
struct StackService<S> {
    inner: S,
    state: Arc<StackState>,
}

impl<S> Service<Request<Body>> for StackService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let path = request.uri().path().to_string();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::set_remote_parent(&span, telemetry::extract_from_headers(request.headers()));
        let infrastructure = service.starts_with("grpc.");

        Box::pin(
            async move {
                let started = Instant::now();
                if !infrastructure && let Some(authenticator) = &state.authenticator {
                    match authenticator.authenticate(&path, request.headers()).await {
                        Ok(extensions) => request.extensions_mut().extend(extensions),
                        Err(status) => {
                            finish(&state, &path, status.code(), started);
                            return Ok(status.into_http());
                        }
                    }
                }
                let response = inner.call(request).await?;
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok);
                if !infrastructure {
                    finish(&state, &path, code, started);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

fn finish(state: &StackState, path: &str, code: tonic::Code, started: Instant) {
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_grpc(path, code, elapsed.as_secs_f64());
    tracing::Span::current().record("rpc.grpc.status_code", code as i32);
    let elapsed_ms = elapsed.as_millis() as u64;
    match code {
        tonic::Code::Ok => tracing::debug!(elapsed_ms, "rpc finished"),
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            tracing::error!(elapsed_ms, code = ?code, "rpc failed")
        }
        _ => tracing::info!(elapsed_ms, code = ?code, "rpc rejected"),
    }
}

fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// A lazily connecting channel to another giao service (`http://host:port`). Calls through it
/// should wrap the client with [`TraceInterceptor`] so the trace continues.
pub fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Client interceptor that writes the current span's W3C trace context into the request
/// metadata, and an optional bearer credential.
#[derive(Clone, Default)]
pub struct TraceInterceptor {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for TraceInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential.
        f.write_str("TraceInterceptor")
    }
}

impl TraceInterceptor {
    /// Adds `authorization: Bearer <token>` to every call.
    pub fn with_bearer(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self {
            authorization: Some(format!("Bearer {token}").parse()?),
        })
    }
}

impl Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let mut carrier = BTreeMap::new();
        telemetry::inject_into_map(&mut carrier);
        for (key, value) in carrier {
            if let (Ok(key), Ok(value)) = (
                key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                value.parse(),
            ) {
                request.metadata_mut().insert(key, value);
            }
        }
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}
