//! What every service promises operators and callers: health and reflection, clear errors
//! for malformed requests, a clear failure when dependencies are missing at start, and
//! NOT_SERVING (then recovery) when they are lost while running.

use std::time::Duration;

use giao_proto::{
    connector::SimulateInboundRequest, messagestore::GetHistoryRequest, service_names,
};
use giao_tests::{
    Backend, BackendKind, Running, connector_client, connector_config, dev_auth, ephemeral_grpc,
    message_store_client, message_store_config, no_metrics, start_connector, start_message_store,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn channel_to(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

async fn health_at(addr: std::net::SocketAddr, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::new(channel_to(addr).await);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

async fn wait_for_health(running: &Running, service: &str, wanted: ServingStatus) {
    wait_for_health_at(running.addr, service, wanted).await;
}

async fn wait_for_health_at(addr: std::net::SocketAddr, service: &str, wanted: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = health_at(addr, service).await;
        if status == Some(wanted) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never reported {wanted:?}, last {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reflected_services(addr: std::net::SocketAddr) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel_to(addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection stream")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_reflection() {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let connector = start_connector(connector_config(&mut backend).await).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let auth = giao_tests::start_auth(giao_tests::auth_config(&mut backend).await).await;

    macro_rules! start {
        ($krate:ident) => {{
            let service = $krate::bind($krate::Config {
                grpc: ephemeral_grpc(),
                metrics: no_metrics(),
                database: backend.database().await,
                bus: backend.bus.clone(),
                auth: dev_auth(),
                health_interval_ms: 200,
                ..Default::default()
            })
            .await
            .expect("binds");
            let addr = service.grpc_addr();
            let shutdown = tokio_util::sync::CancellationToken::new();
            let handle = tokio::spawn(service.run(shutdown.clone()));
            (addr, shutdown, handle)
        }};
    }
    let services = [
        (connector.addr, service_names::CONNECTOR),
        (store.addr, service_names::MESSAGE_STORE),
        (auth.addr, service_names::AUTH),
    ];
    let others = [
        (start!(giao_assignment), service_names::ASSIGNMENT),
        (start!(giao_reporting), service_names::REPORTING),
    ];
    for (addr, name) in services
        .iter()
        .copied()
        .chain(others.iter().map(|((addr, _, _), name)| (*addr, *name)))
    {
        wait_for_health_at(addr, name, ServingStatus::Serving).await;
        wait_for_health_at(addr, "", ServingStatus::Serving).await;
        let listed = reflected_services(addr).await;
        assert!(
            listed.contains(&name.to_string()),
            "{name} not in {listed:?}"
        );
        assert!(
            listed.contains(&"grpc.health.v1.Health".to_string()),
            "{listed:?}"
        );
        // Reflection shows what this process serves, not the whole suite.
        assert!(
            !listed
                .iter()
                .any(|other| other.starts_with("giao.") && other != name),
            "{listed:?}"
        );
    }
    for ((_, shutdown, handle), _) in others {
        shutdown.cancel();
        handle.await.expect("joins").expect("stops cleanly");
    }
    auth.stop().await.expect("stops");
    store.stop().await.expect("stops");
    connector.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_name_the_field() {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let connector = start_connector(connector_config(&mut backend).await).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;

    let mut client = message_store_client(&store, "acme", "admin").await;
    let error = client
        .get_history(GetHistoryRequest {
            conversation_id: "abc".into(),
            ..Default::default()
        })
        .await
        .expect_err("not a UUID");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "invalid conversation_id \"abc\": expected a UUID"
    );

    let error = client
        .get_history(GetHistoryRequest::default())
        .await
        .expect_err("missing id");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error.message(), "missing conversation_id: required");

    let mut simulator = connector_client(&connector, "acme", "admin").await;
    let error = simulator
        .simulate_inbound(SimulateInboundRequest {
            channel_account_id: "sim-demo".into(),
            ..Default::default()
        })
        .await
        .expect_err("no customer");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("customer.external_user_id"),
        "{}",
        error.message()
    );

    // No credentials at all, and a role without the permission.
    let mut anonymous =
        giao_proto::messagestore::message_store_service_client::MessageStoreServiceClient::new(
            store.channel().await,
        );
    let error = anonymous
        .get_history(GetHistoryRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    let mut agent = connector_client(&connector, "acme", "agent").await;
    let error = agent
        .simulate_inbound(SimulateInboundRequest::default())
        .await
        .expect_err("agents do not drive the simulator");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);

    store.stop().await.expect("stops");
    connector.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_dependencies_fail_the_start_clearly() {
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let mut config = message_store_config(&mut backend).await;
    config.database.url = "postgres://giao:secret@127.0.0.1:1/missing".into();
    config.database.connect_timeout_secs = 2;
    let error = giao_message_store::bind(config.clone())
        .await
        .expect_err("no database on port 1");
    let message = format!("{error:#}");
    assert!(
        message.contains("cannot connect to database postgres://giao:***@127.0.0.1:1/missing"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    let mut config = message_store_config(&mut backend).await;
    config.bus.url = "nats://127.0.0.1:1".into();
    config.bus.connect_timeout_secs = 2;
    let error = giao_message_store::bind(config)
        .await
        .expect_err("no NATS on port 1");
    let message = format!("{error:#}");
    assert!(
        message.contains("cannot reach NATS at nats://127.0.0.1:1"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_or_bus_reports_not_serving_then_recovers() {
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let mut config = message_store_config(&mut backend).await;
    let postgres = giao_testkit::FaultProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let nats = giao_testkit::FaultProxy::start("127.0.0.1:4222".parse().expect("addr")).await;
    config.database.url = config
        .database
        .url
        .replace("127.0.0.1:5432", &postgres.addr().to_string());
    config.database.connect_timeout_secs = 2;
    config.bus.url = format!("nats://{}", nats.addr());
    let store = start_message_store(config).await;
    let service = service_names::MESSAGE_STORE;
    wait_for_health(&store, service, ServingStatus::Serving).await;

    postgres.cut();
    wait_for_health(&store, service, ServingStatus::NotServing).await;
    postgres.restore();
    wait_for_health(&store, service, ServingStatus::Serving).await;

    nats.cut();
    wait_for_health(&store, service, ServingStatus::NotServing).await;
    nats.restore();
    wait_for_health(&store, service, ServingStatus::Serving).await;

    store.stop().await.expect("stops");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: giao\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_method_and_code() {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let mut config = message_store_config(&mut backend).await;
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let store = start_message_store(config).await;
    let metrics = store.metrics_addr.expect("metrics enabled");
    wait_for_health(&store, service_names::MESSAGE_STORE, ServingStatus::Serving).await;

    let mut client = message_store_client(&store, "acme", "admin").await;
    let _ = client
        .get_history(GetHistoryRequest {
            conversation_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid id");

    let body = http_get(metrics, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let line = body
        .lines()
        .find(|line| {
            line.starts_with("giao_message_store_grpc_requests_total")
                && line.contains("GetHistory")
                && line.contains("code=\"InvalidArgument\"")
        })
        .unwrap_or_else(|| panic!("no request counter in {body}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        http_get(metrics, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(metrics, "/livez")
            .await
            .starts_with("HTTP/1.1 200")
    );
    store.stop().await.expect("stops");
}
