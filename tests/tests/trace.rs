//! Trace context crosses a gRPC call and a bus hop: a caller's W3C trace id reaches the
//! connector's RPC span, the bus message headers, and the message-store consumer's span.

use std::time::Duration;

use giao_platform::telemetry::{self, LogFormat, TelemetryConfig};
use giao_proto::{
    common::{ChannelUser, ContentType, MessageContent},
    connector::SimulateInboundRequest,
    messagestore::ListConversationsRequest,
};
use giao_tests::{
    Backend, BackendKind, connector_client, connector_config, message_store_client,
    message_store_config, start_connector, start_message_store,
};
use opentelemetry_sdk::trace::InMemorySpanExporter;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn trace_crosses_grpc_and_bus(kind: BackendKind) {
    // Each test runs in its own process under nextest, so a global subscriber is ours alone.
    let exporter = InMemorySpanExporter::default();
    let guard = telemetry::init_with_exporter(
        "giao-tests",
        &TelemetryConfig {
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            otlp_endpoint: None,
        },
        Some(exporter.clone()),
    )
    .expect("telemetry installs");

    let mut backend = Backend::new(kind).await;
    let connector = start_connector(connector_config(&mut backend).await).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;

    let mut request = tonic::Request::new(SimulateInboundRequest {
        channel_account_id: giao_connector::simulator::DEMO_ACCOUNT.into(),
        customer: Some(ChannelUser {
            external_user_id: "cust-trace".into(),
            ..Default::default()
        }),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: "theo dõi".into(),
            ..Default::default()
        }),
        external_message_id: "traced-1".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .expect("metadata"),
    );
    let mut simulator = connector_client(&connector, "acme", "admin").await;
    simulator.simulate_inbound(request).await.expect("accepted");

    let mut reader = message_store_client(&store, "acme", "admin").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = reader
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner();
        if !listed.conversations.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.stop().await.expect("stops");
    connector.stop().await.expect("stops");
    guard.flush();

    let spans = exporter.get_finished_spans().expect("spans");
    let traced: Vec<String> = spans
        .iter()
        .filter(|span| span.span_context.trace_id().to_string() == TRACE_ID)
        .map(|span| span.name.to_string())
        .collect();
    assert!(
        traced
            .iter()
            .any(|name| name == "giao.connector.v1.ConnectorService/SimulateInbound"),
        "connector RPC span not in the caller's trace: {traced:?}"
    );
    assert!(
        traced.iter().any(|name| name == "consume message_received"),
        "message-store consumer span not in the caller's trace: {traced:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_crosses_grpc_and_jetstream() {
    trace_crosses_grpc_and_bus(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_crosses_grpc_and_the_embedded_bus() {
    trace_crosses_grpc_and_bus(BackendKind::Sqlite).await;
}
