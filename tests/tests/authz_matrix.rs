//! Every RPC of every service, called as every role, with an API key, with no credential and
//! from another tenant, against the real auth service and real signed tokens: the outcome
//! must match the documented table (giao_authz::rpcs and the role → permission table).
//!
//! Calls carry an empty request: what matters here is whether the call gets past
//! authentication and authorisation (then it may fail validation, or be Unimplemented), or is
//! refused with Unauthenticated / PermissionDenied.

use std::time::Duration;

use bytes::{Buf, BufMut};
use giao_authz::{
    Role, role_permissions,
    rpcs::{Access, RPCS},
};
use giao_proto::{
    auth::{
        CreateApiKeyRequest, CreateUserRequest, LoginRequest,
        auth_service_client::AuthServiceClient,
    },
    common::{ChannelUser, ContentType, MessageContent},
    messagestore::{
        AddNoteRequest, AppendInboundRequest, ExportHistoryRequest, GetContactRequest,
        GetConversationRequest, GetHistoryRequest, InboundMessage, ListNotesRequest,
        RecordOutboundRequest, SetConversationOwnerRequest, UpdateContactRequest,
        export_history_request::Selector, message_store_service_client::MessageStoreServiceClient,
    },
};
use giao_tests::{Backend, BackendKind, Running, TraceInterceptor};
use prost::Message;
use tonic::{
    Code,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

const TENANT: &str = "acme";
const OTHER: &str = "globex";
const PASSWORD: &str = "a long enough password";

/// Sends and receives raw protobuf bytes, so one client can call any method.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawEncoder;

#[derive(Debug, Clone, Default)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The status code of calling `path` with an empty request (Ok when the call got through
/// and is still streaming after a while).
async fn call(channel: &Channel, path: &str, bearer: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(futures::stream::iter(vec![Vec::<u8>::new()]));
    if let Some(bearer) = bearer {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {bearer}").parse().expect("header"),
        );
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match grpc.streaming(request, path, RawCodec).await {
            Err(status) => status.code(),
            Ok(response) => match response.into_inner().message().await {
                Err(status) => status.code(),
                Ok(_) => Code::Ok,
            },
        }
    })
    .await;
    outcome.unwrap_or(Code::Ok)
}

fn refused(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

struct Suite {
    _backend: Backend,
    auth: std::net::SocketAddr,
    services: Vec<(String, std::net::SocketAddr)>,
    _running: Vec<Running>,
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

impl Suite {
    async fn start() -> Self {
        let mut backend = Backend::new(BackendKind::Postgres).await;
        let auth_config = giao_tests::auth_config(&mut backend).await;
        for tenant in [TENANT, OTHER] {
            giao_auth::admin::create_tenant(
                &auth_config,
                tenant,
                tenant,
                &format!("admin@{tenant}.vn"),
                Some(PASSWORD.into()),
            )
            .await
            .expect("tenant created");
        }
        let auth = giao_tests::start_auth(auth_config).await;
        let verify = giao_authz::AuthConfig {
            endpoint: auth.endpoint(),
            dev_tokens: false,
            // Short, so that the revocation test does not wait long.
            api_key_cache_secs: 1,
        };
        let mut store_config = giao_tests::message_store_config(&mut backend).await;
        store_config.auth = verify.clone();
        let mut connector_config = giao_tests::connector_config(&mut backend).await;
        connector_config.auth = verify.clone();
        let store = giao_tests::start_message_store(store_config).await;
        let connector = giao_tests::start_connector(connector_config).await;
        let assignment = giao_tests::start_assignment(giao_assignment::Config {
            grpc: giao_tests::ephemeral_grpc(),
            metrics: giao_tests::no_metrics(),
            database: backend.database().await,
            bus: backend.bus.clone(),
            auth: verify.clone(),
            ..Default::default()
        })
        .await;
        let reporting = giao_tests::start_reporting(giao_reporting::Config {
            grpc: giao_tests::ephemeral_grpc(),
            metrics: giao_tests::no_metrics(),
            database: backend.database().await,
            bus: backend.bus.clone(),
            auth: verify,
            ..Default::default()
        })
        .await;
        Self {
            _backend: backend,
            services: vec![
                (
                    "giao.messagestore.v1.MessageStoreService".into(),
                    store.addr,
                ),
                ("giao.connector.v1.ConnectorService".into(), connector.addr),
                (
                    "giao.assignment.v1.AssignmentService".into(),
                    assignment.addr,
                ),
                ("giao.reporting.v1.ReportingService".into(), reporting.addr),
                ("giao.auth.v1.AuthService".into(), auth.addr),
            ],
            auth: auth.addr,
            _running: vec![store, connector, assignment, reporting, auth],
        }
    }

    async fn channel(&self, service: &str) -> Channel {
        let addr = self
            .services
            .iter()
            .find(|(name, _)| name == service)
            .unwrap_or_else(|| panic!("no {service}"))
            .1;
        channel(addr).await
    }

    async fn auth_client(&self, bearer: Option<&str>) -> AuthServiceClient<giao_tests::Authed> {
        let interceptor = match bearer {
            Some(bearer) => TraceInterceptor::with_bearer(bearer).expect("valid bearer"),
            None => TraceInterceptor::default(),
        };
        AuthServiceClient::with_interceptor(channel(self.auth).await, interceptor)
    }

    async fn login(&self, tenant: &str, login: &str) -> String {
        self.auth_client(None)
            .await
            .login(LoginRequest {
                tenant: tenant.into(),
                login: login.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("logs in")
            .into_inner()
            .access_token
    }

    /// An access token for a user of `role` in `tenant`, created by its admin.
    async fn token_for(&self, tenant: &str, role: Role) -> String {
        let admin = self.login(tenant, &format!("admin@{tenant}.vn")).await;
        if role == Role::Admin {
            return admin;
        }
        let email = format!("{}@{tenant}.vn", role.as_str());
        let proto_role = match role {
            Role::Supervisor => giao_proto::common::Role::Supervisor,
            Role::Agent => giao_proto::common::Role::Agent,
            Role::Auditor => giao_proto::common::Role::Auditor,
            other => panic!("no user role {other:?}"),
        };
        self.auth_client(Some(&admin))
            .await
            .create_user(CreateUserRequest {
                email: email.clone(),
                display_name: email.clone(),
                role: proto_role as i32,
                initial_password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .expect("user created");
        self.login(tenant, &email).await
    }

    async fn api_key(&self, tenant: &str, scopes: &[&str]) -> String {
        let admin = self.login(tenant, &format!("admin@{tenant}.vn")).await;
        self.auth_client(Some(&admin))
            .await
            .create_api_key(CreateApiKeyRequest {
                name: "matrix".into(),
                scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            })
            .await
            .expect("key created")
            .into_inner()
            .secret
    }
}

/// Every method in the served protos is declared in the table and the table names nothing
/// that does not exist.
fn served_methods() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(giao_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut methods = Vec::new();
    for file in set.file {
        let package = file.package.clone().unwrap_or_default();
        if !package.starts_with("giao.") {
            continue;
        }
        for service in &file.service {
            let full = format!("{package}.{}", service.name.clone().unwrap_or_default());
            for method in &service.method {
                methods.push((
                    full.clone(),
                    format!("/{full}/{}", method.name.clone().unwrap_or_default()),
                ));
            }
        }
    }
    methods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_as_every_role_matches_the_table() {
    let methods = served_methods();
    assert!(methods.len() > 60, "{} methods", methods.len());
    for (_, path) in &methods {
        assert!(
            RPCS.iter().any(|(declared, _)| declared == path),
            "{path} declares no permission"
        );
    }
    for (declared, _) in RPCS {
        assert!(
            methods.iter().any(|(_, path)| path == declared),
            "{declared} is declared but not served"
        );
    }

    let suite = Suite::start().await;
    let mut callers: Vec<(String, Option<Role>, Option<String>)> = Vec::new();
    for role in [Role::Admin, Role::Supervisor, Role::Agent, Role::Auditor] {
        callers.push((
            role.as_str().into(),
            Some(role),
            Some(suite.token_for(TENANT, role).await),
        ));
    }
    let key = suite.api_key(TENANT, &["messages.read"]).await;
    callers.push((
        "api key [messages.read]".into(),
        Some(Role::Service),
        Some(key),
    ));
    callers.push(("no credential".into(), None, None));
    callers.push(("garbage".into(), None, Some("not-a-token".into())));

    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (service, path) in &methods {
        let channel = suite.channel(service).await;
        let access = RPCS
            .iter()
            .find(|(declared, _)| declared == path)
            .map(|&(_, access)| access)
            .expect("declared");
        for (label, role, bearer) in &callers {
            let code = call(&channel, path, bearer.as_deref()).await;
            checked += 1;
            let ok = match (access, role) {
                (Access::Public, _) => code != Code::PermissionDenied,
                (Access::Requires(_), None) => code == Code::Unauthenticated,
                (Access::Requires(permission), Some(Role::Service)) => {
                    let allowed = permission.0 == "messages.read";
                    if allowed {
                        !refused(code)
                    } else {
                        code == Code::PermissionDenied
                    }
                }
                (Access::Requires(permission), Some(role)) => {
                    if role_permissions(*role).contains(&permission) {
                        !refused(code)
                    } else {
                        code == Code::PermissionDenied
                    }
                }
            };
            if !ok {
                mismatches.push(format!("{path} as {label}: {code:?} (table: {access:?})"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} calls disagree with the table:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_answer_not_found() {
    let suite = Suite::start().await;
    let owner = suite.token_for(TENANT, Role::Admin).await;
    let intruder = suite.token_for(OTHER, Role::Admin).await;
    let store = suite
        .channel("giao.messagestore.v1.MessageStoreService")
        .await;
    let client = |token: &str| {
        let interceptor = TraceInterceptor::with_bearer(token).expect("bearer");
        MessageStoreServiceClient::with_interceptor(store.clone(), interceptor)
    };
    let mut mine = client(&owner);
    let stored = mine
        .append_inbound(AppendInboundRequest {
            message: Some(InboundMessage {
                channel_account_id: "oa-1".into(),
                external_message_id: "m-1".into(),
                external_thread_id: "cust-1".into(),
                customer: Some(ChannelUser {
                    external_user_id: "cust-1".into(),
                    display_name: "Chị Lan".into(),
                    ..Default::default()
                }),
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: "Cho chị hỏi giá".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let conversation_id = stored.conversation_id.clone();
    let conversation = mine
        .get_conversation(GetConversationRequest {
            conversation_id: conversation_id.clone(),
        })
        .await
        .expect("the owner's tenant reads it")
        .into_inner();
    let contact_id = conversation.contact_id.clone();
    assert!(!contact_id.is_empty());

    let mut theirs = client(&intruder);
    let mut codes = Vec::new();
    codes.push((
        "GetConversation",
        theirs
            .get_conversation(GetConversationRequest {
                conversation_id: conversation_id.clone(),
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "GetHistory",
        theirs
            .get_history(GetHistoryRequest {
                conversation_id: conversation_id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "GetContact",
        theirs
            .get_contact(GetContactRequest {
                contact_id: contact_id.clone(),
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "UpdateContact",
        theirs
            .update_contact(UpdateContactRequest {
                contact_id: contact_id.clone(),
                display_name: "hijacked".into(),
                update_mask: vec!["display_name".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "AddNote",
        theirs
            .add_note(AddNoteRequest {
                contact_id: contact_id.clone(),
                text: "x".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "ListNotes",
        theirs
            .list_notes(ListNotesRequest {
                contact_id: contact_id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "SetConversationOwner",
        theirs
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![conversation_id.clone()],
                owner_user_id: "u-x".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "RecordOutbound",
        theirs
            .record_outbound(RecordOutboundRequest {
                conversation_id: conversation_id.clone(),
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: "spam".into(),
                    ..Default::default()
                }),
                idempotency_key: "k-1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "Search",
        theirs
            .search(giao_proto::messagestore::SearchRequest {
                query: "gia".into(),
                conversation_id: conversation_id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "AddTags",
        theirs
            .add_tags(giao_proto::messagestore::AddTagsRequest {
                contact_id: contact_id.clone(),
                tags: vec!["x".into()],
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "UpdateDelivery",
        theirs
            .update_delivery(giao_proto::messagestore::UpdateDeliveryRequest {
                message_id: stored.message_id.clone(),
                status: giao_proto::common::DeliveryStatus::Failed as i32,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    let export = theirs
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::ContactId(contact_id.clone())),
            ..Default::default()
        })
        .await;
    let export = match export {
        Err(status) => Err(status),
        Ok(stream) => stream.into_inner().message().await.map(|_| ()),
    };
    codes.push(("ExportHistory", export));

    // The auth service's own ids: a user of tenant A seen from tenant B.
    let user_id = {
        let mut admin = suite.auth_client(Some(&owner)).await;
        admin
            .list_users(giao_proto::auth::ListUsersRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .users[0]
            .user_id
            .clone()
    };
    let mut other_auth = suite.auth_client(Some(&intruder)).await;
    codes.push((
        "GetUser",
        other_auth
            .get_user(giao_proto::auth::GetUserRequest {
                user_id: user_id.clone(),
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "SetUserStatus",
        other_auth
            .set_user_status(giao_proto::auth::SetUserStatusRequest {
                user_id,
                status: giao_proto::auth::UserStatus::Suspended as i32,
                reason: "x".into(),
            })
            .await
            .map(|_| ()),
    ));

    // Reporting: once the owner's tenant sees the captured traffic on oa-1, the same account
    // from tenant B is NotFound in every report that names it.
    let reporting = suite.channel("giao.reporting.v1.ReportingService").await;
    let reports = |token: &str| {
        giao_proto::reporting::reporting_service_client::ReportingServiceClient::with_interceptor(
            reporting.clone(),
            TraceInterceptor::with_bearer(token).expect("bearer"),
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let scope = giao_proto::reporting::ReportScope {
        range: Some(giao_proto::common::TimeRange {
            start: Some(prost_types::Timestamp {
                seconds: now - 86_400,
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: now + 3_600,
                nanos: 0,
            }),
        }),
        ..Default::default()
    };
    let activity = giao_proto::reporting::AccountActivityRequest {
        scope: Some(scope.clone()),
        channel_account_id: "oa-1".into(),
    };
    giao_testkit::wait_until(
        Duration::from_secs(20),
        "reporting sees the captured message",
        || {
            let mut client = reports(&owner);
            let request = activity.clone();
            async move {
                client
                    .account_activity(request)
                    .await
                    .map(|reply| reply.into_inner().messages_in >= 1)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let mut their_reports = reports(&intruder);
    codes.push((
        "AccountActivity",
        their_reports
            .account_activity(activity.clone())
            .await
            .map(|_| ()),
    ));
    let by_account: std::collections::HashMap<String, String> =
        [("channel_account_id".to_string(), "oa-1".to_string())].into();
    codes.push((
        "DrillDown",
        their_reports
            .drill_down(giao_proto::reporting::DrillDownRequest {
                scope: Some(scope.clone()),
                metric: "messages_in".into(),
                dimensions: by_account.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    codes.push((
        "ExportReport",
        their_reports
            .export_report(giao_proto::reporting::ExportReportRequest {
                scope: Some(scope.clone()),
                per_conversation: true,
                dimensions: by_account,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));

    let wrong: Vec<String> = codes
        .iter()
        .filter(|(_, result)| !matches!(result, Err(status) if status.code() == Code::NotFound))
        .map(|(rpc, result)| format!("{rpc}: {result:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "another tenant's ids must be NotFound:\n{}",
        wrong.join("\n")
    );

    // Nothing changed for the owner.
    let contact = mine
        .get_contact(GetContactRequest { contact_id })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(contact.display_name, "Chị Lan");
}

/// The shared layer in another service: a suspended user's live token stops working there
/// without waiting for expiry, tokens signed by a rotated-in key are accepted, a call outside
/// an API key's scope is refused and audited, and a revoked key stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_services_honour_revocation_rotation_and_scopes() {
    let suite = Suite::start().await;
    let admin = suite.token_for(TENANT, Role::Admin).await;
    let agent = suite.token_for(TENANT, Role::Agent).await;
    let store = suite
        .channel("giao.messagestore.v1.MessageStoreService")
        .await;
    let as_bearer = |token: &str| {
        MessageStoreServiceClient::with_interceptor(
            store.clone(),
            TraceInterceptor::with_bearer(token).expect("bearer"),
        )
    };
    let list = giao_proto::messagestore::ListConversationsRequest::default;
    as_bearer(&agent)
        .list_conversations(list())
        .await
        .expect("the agent's token works");

    // Rotation: a token under the new key verifies in the message store too.
    let mut auth_admin = suite.auth_client(Some(&admin)).await;
    auth_admin
        .rotate_signing_key(giao_proto::auth::RotateSigningKeyRequest {})
        .await
        .expect("rotates");
    let fresh = suite.login(TENANT, &format!("admin@{TENANT}.vn")).await;
    assert_ne!(
        giao_authz::token::header_kid(&fresh).expect("kid"),
        giao_authz::token::header_kid(&admin).expect("kid")
    );
    as_bearer(&fresh)
        .list_conversations(list())
        .await
        .expect("a token of the new key works");
    as_bearer(&admin)
        .list_conversations(list())
        .await
        .expect("a token of the old key works until it expires");

    // Suspension: the agent's unexpired token is refused by the message store at once.
    let agent_id = auth_admin
        .list_users(giao_proto::auth::ListUsersRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .users
        .into_iter()
        .find(|user| user.role == giao_proto::common::Role::Agent as i32)
        .expect("agent")
        .user_id;
    auth_admin
        .set_user_status(giao_proto::auth::SetUserStatusRequest {
            user_id: agent_id,
            status: giao_proto::auth::UserStatus::Suspended as i32,
            reason: "left the company".into(),
        })
        .await
        .expect("suspends");
    giao_testkit::wait_until(Duration::from_secs(5), "the message store refuses the suspended agent", || {
        let mut client = as_bearer(&agent);
        async move {
            matches!(client.list_conversations(list()).await,
                Err(status) if status.code() == Code::Unauthenticated && status.message() == "session revoked")
        }
    })
    .await;

    // Scopes: a read-only key cannot ingest; the refusal lands in the audit log.
    let key = suite.api_key(TENANT, &["messages.read"]).await;
    as_bearer(&key)
        .list_conversations(list())
        .await
        .expect("in scope");
    let denied = as_bearer(&key)
        .append_inbound(AppendInboundRequest::default())
        .await
        .expect_err("out of scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("messages.ingest"),
        "{}",
        denied.message()
    );
    giao_testkit::wait_until(Duration::from_secs(10), "the refusal is audited", || {
        let mut auth_admin = auth_admin.clone();
        async move {
            auth_admin
                .list_audit(giao_proto::auth::ListAuditRequest {
                    action: "access.denied".into(),
                    ..Default::default()
                })
                .await
                .map(|audit| {
                    audit.into_inner().records.iter().any(|record| {
                        record.target == "/giao.messagestore.v1.MessageStoreService/AppendInbound"
                            && !record.details_json.contains("gk_")
                    })
                })
                .unwrap_or(false)
        }
    })
    .await;

    // Revocation of the key reaches the message store within its cache time.
    let key_id = auth_admin
        .list_api_keys(giao_proto::auth::ListApiKeysRequest::default())
        .await
        .expect("lists keys")
        .into_inner()
        .keys
        .into_iter()
        .next()
        .expect("one key")
        .api_key_id;
    auth_admin
        .revoke_api_key(giao_proto::auth::RevokeApiKeyRequest { api_key_id: key_id })
        .await
        .expect("revokes");
    giao_testkit::wait_until(Duration::from_secs(5), "the revoked key is refused", || {
        let mut client = as_bearer(&key);
        async move {
            matches!(client.list_conversations(list()).await,
                Err(status) if status.code() == Code::Unauthenticated)
        }
    })
    .await;
}

/// Exports, reads of conversations one does not own and channel credential changes land in
/// the tenant's audit chain, the export's record carrying the manifest's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_reads_and_credential_changes_are_audited() {
    let suite = Suite::start().await;
    let admin = suite.token_for(TENANT, Role::Admin).await;
    let store = suite
        .channel("giao.messagestore.v1.MessageStoreService")
        .await;
    let mut client = MessageStoreServiceClient::with_interceptor(
        store,
        TraceInterceptor::with_bearer(&admin).expect("bearer"),
    );
    let stored = client
        .append_inbound(AppendInboundRequest {
            message: Some(InboundMessage {
                channel_account_id: "oa-1".into(),
                external_message_id: "m-1".into(),
                external_thread_id: "cust-1".into(),
                customer: Some(ChannelUser {
                    external_user_id: "cust-1".into(),
                    display_name: "Anh Tuấn".into(),
                    ..Default::default()
                }),
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: "Báo giá giúp anh".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    client
        .get_history(GetHistoryRequest {
            conversation_id: stored.conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect("reads");
    let mut export = client
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::Tenant(true)),
            ..Default::default()
        })
        .await
        .expect("exports")
        .into_inner();
    let mut manifest = None;
    while let Some(chunk) = export.message().await.expect("chunk") {
        if let Some(giao_proto::messagestore::export_chunk::Chunk::Manifest(found)) = chunk.chunk {
            manifest = Some(found);
        }
    }
    let manifest = manifest.expect("a manifest ends the export");

    // A channel account's credentials set by an admin.
    let connector = suite.channel("giao.connector.v1.ConnectorService").await;
    let account = giao_proto::connector::connector_service_client::ConnectorServiceClient::with_interceptor(
        connector,
        TraceInterceptor::with_bearer(&admin).expect("bearer"),
    )
    .create_account(giao_proto::connector::CreateAccountRequest {
        kind: giao_proto::common::ChannelKind::ZaloOa as i32,
        display_name: "Shop OA".into(),
        credentials_json: r#"{"app_id":"app-1","app_secret":"s3cret-app","oa_secret_key":"s3cret-oa","oa_id":"oa-42"}"#.into(),
        ..Default::default()
    })
    .await
    .expect("account created")
    .into_inner();

    let auth_admin = suite.auth_client(Some(&admin)).await;
    let conversation_id = stored.conversation_id.clone();
    let sha256 = manifest.sha256.clone();
    let account_id = account.channel_account_id.clone();
    giao_testkit::wait_until(
        Duration::from_secs(10),
        "the read and the export are in the audit log",
        || {
            let mut auth_admin = auth_admin.clone();
            let conversation_id = conversation_id.clone();
            let sha256 = sha256.clone();
            let account_id = account_id.clone();
            async move {
                let Ok(audit) = auth_admin
                    .list_audit(giao_proto::auth::ListAuditRequest::default())
                    .await
                else {
                    return false;
                };
                let records = audit.into_inner().records;
                let read = records.iter().any(|record| {
                    record.action == "conversation.opened_by_non_owner"
                        && record.target == conversation_id
                });
                let exported = records.iter().any(|record| {
                    record.action == "history.exported" && record.details_json.contains(&sha256)
                });
                let credentials = records.iter().any(|record| {
                    record.action == "account.credentials_set"
                        && record.target == account_id
                        && !record.details_json.contains("s3cret")
                });
                read && exported && credentials
            }
        },
    )
    .await;
    let verified = auth_admin
        .clone()
        .verify_audit_chain(giao_proto::auth::VerifyAuditChainRequest {})
        .await
        .expect("verifies")
        .into_inner();
    assert!(verified.ok);
}
