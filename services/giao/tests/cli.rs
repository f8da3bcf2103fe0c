//! The `giao` binary as an operator and a developer meet it.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use giao_proto::{
    auth::{GetUserRequest, auth_service_client::AuthServiceClient},
    messagestore::{
        GetHistoryRequest, ListConversationsRequest,
        message_store_service_client::MessageStoreServiceClient,
    },
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const GIAO: &str = env!("CARGO_BIN_EXE_giao");

#[test]
fn a_service_without_its_database_exits_non_zero_and_says_why() {
    let output = Command::new(GIAO)
        .args(["serve", "message-store"])
        .env(
            "GIAO_DATABASE__URL",
            "postgres://giao:hunter2@127.0.0.1:1/msg",
        )
        .env("GIAO_DATABASE__CONNECT_TIMEOUT_SECS", "2")
        .env("GIAO_GRPC__LISTEN", "127.0.0.1:0")
        .env("GIAO_METRICS__LISTEN", "127.0.0.1:0")
        .env("GIAO_AUTH__DEV_TOKENS", "true")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to database postgres://giao:***@127.0.0.1:1/msg"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_bad_setting_names_the_key() {
    let output = Command::new(GIAO)
        .args(["serve", "connector"])
        .env("GIAO_GRPC__REQUEST_TIMEOUT_SECS", "0")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc.request_timeout_secs"), "{stderr}");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `giao dev` brings the five services up, each SERVING, and demo messages can be read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_the_suite_with_demo_conversations() {
    let data = tempfile::tempdir().expect("data dir");
    // Ports away from the defaults so a developer's `make run` does not collide.
    let base = 27_100 + (std::process::id() % 500) as u16 * 10;
    let _child = Child(
        Command::new(GIAO)
            .args([
                "dev",
                "--data",
                &data.path().display().to_string(),
                "--demo-interval-ms",
                "100",
                "--grpc-port-base",
                &base.to_string(),
                "--metrics-port-base",
                &(base + 5).to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let services = [
        "giao.connector.v1.ConnectorService",
        "giao.messagestore.v1.MessageStoreService",
        "giao.assignment.v1.AssignmentService",
        "giao.reporting.v1.ReportingService",
        "giao.auth.v1.AuthService",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (offset, service) in services.iter().enumerate() {
        let endpoint = format!("http://127.0.0.1:{}", base + 1 + offset as u16);
        loop {
            let status = async {
                let channel = tonic::transport::Channel::from_shared(endpoint.clone())
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let response = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: (*service).into(),
                    })
                    .await
                    .ok()?;
                ServingStatus::try_from(response.into_inner().status).ok()
            }
            .await;
            if status == Some(ServingStatus::Serving) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service} never SERVING ({status:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", base + 2))
        .expect("endpoint")
        .connect()
        .await
        .expect("message-store");
    let token: tonic::metadata::MetadataValue<_> =
        "Bearer dev.demo.u-admin.admin".parse().expect("token");
    let mut client = MessageStoreServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        },
    );
    loop {
        let conversations = client
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        if let Some(conversation) = conversations.first() {
            let history = client
                .get_history(GetHistoryRequest {
                    conversation_id: conversation.conversation_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("history")
                .into_inner();
            if !history.messages.is_empty() {
                let text = history.messages[0]
                    .content
                    .as_ref()
                    .map(|content| content.text.clone())
                    .unwrap_or_default();
                assert!(!text.is_empty(), "demo message without text");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no demo message was stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Routing is wired: a demo customer's conversation gets the demo agent as owner.
    let routed_by = Instant::now() + Duration::from_secs(10);
    let owner = loop {
        let owners: Vec<String> = client
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations
            .into_iter()
            .map(|conversation| conversation.owner_user_id)
            .filter(|owner| !owner.is_empty())
            .collect();
        if let Some(owner) = owners.into_iter().next() {
            break owner;
        }
        assert!(
            Instant::now() < routed_by,
            "no demo conversation was routed to an owner"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let auth = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", base + 5))
        .expect("endpoint")
        .connect()
        .await
        .expect("auth");
    let token: tonic::metadata::MetadataValue<_> =
        "Bearer dev.demo.u-admin.admin".parse().expect("token");
    let user = AuthServiceClient::with_interceptor(auth, move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        Ok(request)
    })
    .get_user(GetUserRequest {
        user_id: owner.clone(),
    })
    .await
    .expect("owner is a user of the demo tenant")
    .into_inner();
    assert_eq!(user.email, "agent@demo.giao.vn", "routed to {owner}");
}
