//! Harness for cross-service tests: starts real services on 127.0.0.1:0 against a real
//! backend — PostgreSQL + NATS JetStream, or SQLite + the embedded bus — each test with its
//! own databases and its own bus stream/prefix, and gives typed gRPC clients.

use std::{net::SocketAddr, time::Duration};

use giao_bus::{BusConfig, BusKind};
use giao_platform::config::{GrpcConfig, MetricsConfig};
use giao_proto::{
    connector::connector_service_client::ConnectorServiceClient,
    messagestore::message_store_service_client::MessageStoreServiceClient,
};
use giao_storage::DatabaseConfig;
use giao_testkit::{TestDatabase, TestSqlite};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub use giao_platform::grpc::TraceInterceptor;

/// Declares each named `async fn(BackendKind)` as two tests: `postgres::<name>` (PostgreSQL +
/// NATS JetStream) and `sqlite::<name>` (SQLite + the embedded bus).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::BackendKind::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::BackendKind::Sqlite).await;
                }
            )*
        }
    };
}

/// Which real components a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL + NATS JetStream, as in production.
    Postgres,
    /// SQLite + the embedded bus, as in `giao dev`.
    Sqlite,
}

/// Databases and a bus for one test; dropped with the test.
pub struct Backend {
    pub kind: BackendKind,
    pub bus: BusConfig,
    postgres: Vec<TestDatabase>,
    sqlite: Vec<TestSqlite>,
    _bus_dir: Option<tempfile::TempDir>,
    /// Attachment files of this test's message store.
    pub files: tempfile::TempDir,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("kind", &self.kind).finish()
    }
}

impl Backend {
    pub async fn new(kind: BackendKind) -> Self {
        if kind == BackendKind::Postgres {
            // Once per test process (each nextest test is one).
            static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
            SWEPT.get_or_init(giao_testkit::sweep_streams).await;
        }
        let name = giao_testkit::unique_name("t");
        let (bus, dir) = match kind {
            BackendKind::Postgres => (
                BusConfig {
                    kind: BusKind::Nats,
                    url: giao_testkit::nats_url(),
                    stream: name.to_uppercase(),
                    prefix: name.clone(),
                    ..Default::default()
                },
                None,
            ),
            BackendKind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir for the embedded bus");
                (
                    BusConfig {
                        kind: BusKind::Embedded,
                        embedded_path: dir.path().join("bus.db").display().to_string(),
                        prefix: name.clone(),
                        ..Default::default()
                    },
                    Some(dir),
                )
            }
        };
        Self {
            kind,
            bus,
            postgres: Vec::new(),
            sqlite: Vec::new(),
            _bus_dir: dir,
            files: tempfile::tempdir().expect("temp dir for attachments"),
        }
    }

    /// Drops this backend's PostgreSQL databases and its JetStream stream now (benchmarks,
    /// whose books are large, clean up after themselves).
    pub async fn drop_databases(&mut self) {
        for database in self.postgres.drain(..) {
            giao_testkit::drop_postgres(&database).await;
        }
        if self.bus.kind == BusKind::Nats
            && let Ok(bus) = giao_bus::nats::NatsBus::connect(&self.bus).await
            && let Err(error) = bus.delete_stream().await
        {
            eprintln!(
                "cannot delete the bench's stream {}: {error}",
                self.bus.stream
            );
        }
    }

    /// A fresh, empty database for one service.
    pub async fn database(&mut self) -> DatabaseConfig {
        let url = match self.kind {
            BackendKind::Postgres => {
                let database = giao_testkit::fresh_postgres().await;
                let url = database.url.clone();
                self.postgres.push(database);
                url
            }
            BackendKind::Sqlite => {
                let database = giao_testkit::fresh_sqlite();
                let url = database.url.clone();
                self.sqlite.push(database);
                url
            }
        };
        DatabaseConfig {
            url,
            ..Default::default()
        }
    }
}

/// Port 0 on loopback, no metrics listener: tests never race for ports.
pub fn ephemeral_grpc() -> GrpcConfig {
    GrpcConfig::with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub fn no_metrics() -> MetricsConfig {
    MetricsConfig { listen: None }
}

pub fn dev_auth() -> giao_authz::AuthConfig {
    giao_authz::AuthConfig {
        dev_tokens: true,
        ..Default::default()
    }
}

/// A running service: its address and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The Prometheus endpoint, when the config enabled one.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish()
    }
}

impl Running {
    /// Graceful stop: drains and returns the service's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .map_err(|_| anyhow::anyhow!("service did not stop within 30s"))??
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects to the service")
    }
}

impl Running {
    /// Runs a bound service in the background until stopped.
    fn spawn<F>(
        addr: SocketAddr,
        metrics_addr: Option<SocketAddr>,
        run: impl FnOnce(CancellationToken) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            metrics_addr,
            shutdown,
            handle,
        }
    }
}

pub async fn start_message_store(config: giao_message_store::Config) -> Running {
    let service = giao_message_store::bind(config)
        .await
        .expect("message-store binds");
    let addr = service.grpc_addr();
    let metrics_addr = service.metrics_addr();
    Running::spawn(addr, metrics_addr, |shutdown| service.run(shutdown))
}

pub async fn start_connector(config: giao_connector::Config) -> Running {
    let service = giao_connector::bind(config).await.expect("connector binds");
    let addr = service.grpc_addr();
    service
        .simulator()
        .ensure_demo_account("acme")
        .await
        .expect("simulator account");
    Running::spawn(addr, None, |shutdown| service.run(shutdown))
}

/// Config of a message store on `backend`, on port 0.
pub async fn start_assignment(config: giao_assignment::Config) -> Running {
    let service = giao_assignment::bind(config)
        .await
        .expect("assignment binds");
    let addr = service.grpc_addr();
    Running::spawn(addr, None, |shutdown| service.run(shutdown))
}

pub async fn start_reporting(config: giao_reporting::Config) -> Running {
    let service = giao_reporting::bind(config).await.expect("reporting binds");
    let addr = service.grpc_addr();
    Running::spawn(addr, None, |shutdown| service.run(shutdown))
}

pub async fn message_store_config(backend: &mut Backend) -> giao_message_store::Config {
    giao_message_store::Config {
        grpc: ephemeral_grpc(),
        metrics: no_metrics(),
        database: backend.database().await,
        bus: backend.bus.clone(),
        auth: dev_auth(),
        health_interval_ms: 200,
        // A stopped replica's pulled messages come back quickly in tests.
        inbound_ack_wait_secs: 3,
        attachments_dir: backend.files.path().display().to_string(),
        max_attachment_bytes: 64 * 1024,
        ..Default::default()
    }
}

pub async fn connector_config(backend: &mut Backend) -> giao_connector::Config {
    giao_connector::Config {
        grpc: ephemeral_grpc(),
        metrics: no_metrics(),
        database: backend.database().await,
        bus: backend.bus.clone(),
        auth: dev_auth(),
        health_interval_ms: 200,
        ..Default::default()
    }
}

/// A client that sends the laptop-only token of `role` for tenant `tenant`.
pub type Authed = InterceptedService<Channel, TraceInterceptor>;

pub fn as_user(tenant: &str, user: &str, role: &str) -> TraceInterceptor {
    TraceInterceptor::with_bearer(&format!("dev.{tenant}.{user}.{role}")).expect("valid token")
}

pub async fn message_store_client(
    running: &Running,
    tenant: &str,
    role: &str,
) -> MessageStoreServiceClient<Authed> {
    MessageStoreServiceClient::with_interceptor(
        running.channel().await,
        as_user(tenant, &format!("u-{role}"), role),
    )
}

pub async fn connector_client(
    running: &Running,
    tenant: &str,
    role: &str,
) -> ConnectorServiceClient<Authed> {
    ConnectorServiceClient::with_interceptor(
        running.channel().await,
        as_user(tenant, &format!("u-{role}"), role),
    )
}

/// Config of an auth service on `backend`, on port 0, with an HTTP listener on port 0 (for
/// `/.well-known/jwks.json`) and a fresh key-encryption key. No developer tokens: callers
/// log in.
pub async fn auth_config(backend: &mut Backend) -> giao_auth::Config {
    giao_auth::Config {
        grpc: ephemeral_grpc(),
        metrics: MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        },
        database: backend.database().await,
        bus: backend.bus.clone(),
        health_interval_ms: 200,
        key_encryption_key: giao_auth::Secret(
            giao_auth::keys::KeyEncryptionKey::generate().to_base64(),
        ),
        audit_ack_wait_secs: 3,
        ..Default::default()
    }
}

pub async fn start_auth(config: giao_auth::Config) -> Running {
    let service = giao_auth::bind(config).await.expect("auth binds");
    let addr = service.grpc_addr();
    let metrics_addr = service.metrics_addr();
    Running::spawn(addr, metrics_addr, |shutdown| service.run(shutdown))
}

/// An auth client sending `authorization: Bearer <bearer>` when given (an access token, an
/// API key or a developer token), nothing otherwise.
pub async fn auth_client(
    running: &Running,
    bearer: Option<&str>,
) -> giao_proto::auth::auth_service_client::AuthServiceClient<Authed> {
    let interceptor = match bearer {
        Some(bearer) => TraceInterceptor::with_bearer(bearer).expect("valid bearer"),
        None => TraceInterceptor::default(),
    };
    giao_proto::auth::auth_service_client::AuthServiceClient::with_interceptor(
        running.channel().await,
        interceptor,
    )
}

/// A connector whose HTTP listener (metrics and the Zalo webhooks) is on port 0; the
/// returned `metrics_addr` is that listener.
pub async fn start_connector_with_http(mut config: giao_connector::Config) -> Running {
    config.metrics = MetricsConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    let service = giao_connector::bind(config).await.expect("connector binds");
    let addr = service.grpc_addr();
    let http_addr = service.http_addr();
    Running::spawn(addr, http_addr, |shutdown| service.run(shutdown))
}

/// One HTTP/1.1 request on a fresh connection; returns the status code and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects to the HTTP listener");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    // The server may answer 413 and close before reading a large body.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Config of an assignment service on `backend`, on port 0, calling the message store at
/// `message_store_endpoint`.
pub async fn assignment_config(
    backend: &mut Backend,
    message_store_endpoint: &str,
) -> giao_assignment::Config {
    giao_assignment::Config {
        grpc: ephemeral_grpc(),
        metrics: no_metrics(),
        database: backend.database().await,
        bus: backend.bus.clone(),
        auth: dev_auth(),
        health_interval_ms: 200,
        message_store: giao_assignment::MessageStoreLink {
            endpoint: message_store_endpoint.to_string(),
            api_key: None,
            timeout_ms: 10_000,
        },
        ..Default::default()
    }
}

/// A durable subscription named `durable` to every `event_type` event on `bus`, for a test to
/// read what the services published (unacknowledged deliveries come back after 30 s).
pub async fn subscribe_events(
    bus: &dyn giao_bus::EventBus,
    durable: &str,
    event_type: &str,
) -> giao_bus::DeliveryStream {
    bus.subscribe(giao_bus::ConsumerSpec {
        durable_name: durable.into(),
        filter_subjects: vec![giao_bus::envelope::subject_filter(event_type)],
        ack_wait: Duration::from_secs(30),
        max_deliver: None,
        inactive_threshold: None,
    })
    .await
    .expect("subscribes")
}
