//! Platform pieces every giao service is built from, so that all five behave the same way
//! in a cluster and on a laptop.
//!
//! Layout:
//! - [`config`]: layered configuration (defaults → TOML file → `GIAO_*` environment).
//! - [`telemetry`]: JSON logs, OpenTelemetry traces (OTLP when configured) and W3C trace
//!   context propagation through gRPC metadata and bus headers.
//! - [`grpc`]: the gRPC server builder (health, reflection, one tower stack) and client
//!   channels that carry trace context.
//! - [`health`]: a watcher that turns dependency probes into grpc.health.v1 status.
//! - [`metrics`]: the Prometheus registry and the `/metrics` HTTP endpoint.
//! - [`error`]: the error-code enum that maps every service error onto gRPC and HTTP.
//! - [`shutdown`]: SIGINT/SIGTERM into a cancellation token.

pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
