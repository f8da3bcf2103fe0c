//! Logs and traces. Logs are structured JSON (or human-readable in `giao dev`); traces are
//! OpenTelemetry spans built from `tracing` spans, exported over OTLP when an endpoint is
//! configured. Trace context crosses process boundaries as W3C `traceparent`/`tracestate`:
//! in gRPC metadata (see [`crate::grpc`]) and in bus message headers (see [`inject_into_map`]
//! and [`extract_from_map`]), so one customer message can be followed from the webhook to the
//! report.
//!
//! Never log secrets: tokens, passwords, cookies and keys stay out of span fields and messages.

use std::collections::BTreeMap;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanExporter},
};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,giao_bus=debug`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`. Unset: no export,
    /// but trace context is still propagated.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: None,
        }
    }
}

/// Flushes and shuts down the trace pipeline when dropped; keep it alive in `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryGuard")
    }
}

impl TelemetryGuard {
    /// Exports every finished span now (tests read their exporter after this).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            eprintln!("trace pipeline flush failed: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("trace pipeline shutdown failed: {error}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid telemetry.log_level {0:?}: {1}")]
    Filter(String, String),
    #[error("cannot build the OTLP exporter for telemetry.otlp_endpoint {0}: {1}")]
    Exporter(String, String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber for a process. Call once, from a binary's `main`.
pub fn init(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let exporter = match &config.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|error| TelemetryError::Exporter(endpoint.clone(), error.to_string()))?;
            Some(exporter)
        }
        None => None,
    };
    init_with_exporter(service_name, config, exporter)
}

/// Like [`init`], with the span exporter supplied by the caller (tests pass an in-memory one).
pub fn init_with_exporter<E: SpanExporter + 'static>(
    service_name: &str,
    config: &TelemetryConfig,
    exporter: Option<E>,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(&directive)
            .map_err(|error| TelemetryError::Filter(directive.clone(), error.to_string()))?,
        _ => EnvFilter::try_new(&config.log_level)
            .map_err(|error| TelemetryError::Filter(config.log_level.clone(), error.to_string()))?,
    };

    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.to_string())
            .build(),
    );
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("giao");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// Writes the current span's trace context into a string map (bus headers, event envelopes).
pub fn inject_into_map(map: &mut BTreeMap<String, String>) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MapCarrier(map));
}

/// Reads a trace context from a string map written by [`inject_into_map`].
pub fn extract_from_map(map: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(map))
}

/// Writes the current span's trace context into HTTP/gRPC headers.
pub fn inject_into_headers(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderCarrier(headers));
}

/// Reads a trace context from HTTP/gRPC headers.
pub fn extract_from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the remote `context` when it carries a valid trace.
pub fn set_remote_parent(span: &tracing::Span, context: Context) {
    if context.span().span_context().is_valid() {
        // Fails only if the span is disabled, in which case there is nothing to link.
        let _ = span.set_parent(context);
    }
}

/// The W3C trace id (32 hex digits) of `span`, or `None` when tracing is not installed.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct MapCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HeaderCarrier<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_a_map() {
        let mut map = BTreeMap::new();
        map.insert(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        );
        let context = extract_from_map(&map);
        let span = context.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = BTreeMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut MapCarrier(&mut out));
        assert_eq!(out.get("traceparent"), map.get("traceparent"));
    }
}
