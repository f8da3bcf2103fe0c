//! The auth service as its callers see it, on both backends: login and lockout, refresh
//! rotation and reuse detection, key rotation and the JWKS, API keys, immediate rejection
//! after deactivation, attacks on tokens, the tamper-evident audit chain, and logs free of
//! secrets.

use std::time::Duration;

use futures::StreamExt;
use giao_authz::token::{self, AccessClaims, TokenSigner};
use giao_bus::{ConsumerSpec, envelope};
use giao_proto::{
    auth::{
        AuthenticateApiKeyRequest, CreateApiKeyRequest, CreateUserRequest, GetJwksRequest,
        GetUserRequest, ListApiKeysRequest, ListAuditRequest, ListUsersRequest, LoginRequest,
        LoginResponse, LogoutRequest, RefreshRequest, RevokeApiKeyRequest, RotateSigningKeyRequest,
        SetUserRoleRequest, SetUserStatusRequest, SetUserTeamsRequest, UserStatus,
        VerifyAuditChainRequest, auth_service_client::AuthServiceClient,
    },
    common::Role,
    events::{AuditRequested, Envelope, envelope::Payload},
};
use giao_tests::{Authed, Backend, BackendKind, Running, auth_client, auth_config, start_auth};
use prost::Message;

const TENANT: &str = "acme";
const ADMIN_EMAIL: &str = "boss@acme.vn";
const ADMIN_PASSWORD: &str = "correct horse battery";

struct Fixture {
    backend: Backend,
    config: giao_auth::Config,
    auth: Running,
}

impl Fixture {
    async fn start(kind: BackendKind, tune: impl FnOnce(&mut giao_auth::Config)) -> Self {
        let mut backend = Backend::new(kind).await;
        let mut config = auth_config(&mut backend).await;
        tune(&mut config);
        giao_auth::admin::create_tenant(
            &config,
            TENANT,
            "Acme",
            ADMIN_EMAIL,
            Some(ADMIN_PASSWORD.into()),
        )
        .await
        .expect("tenant created");
        let auth = start_auth(config.clone()).await;
        Self {
            backend,
            config,
            auth,
        }
    }

    async fn public(&self) -> AuthServiceClient<Authed> {
        auth_client(&self.auth, None).await
    }

    async fn client(&self, bearer: &str) -> AuthServiceClient<Authed> {
        auth_client(&self.auth, Some(bearer)).await
    }

    async fn login(
        &self,
        tenant: &str,
        login: &str,
        password: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        self.public()
            .await
            .login(LoginRequest {
                tenant: tenant.into(),
                login: login.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn admin(&self) -> (LoginResponse, AuthServiceClient<Authed>) {
        let session = self
            .login(TENANT, ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .expect("admin logs in");
        let client = self.client(&session.access_token).await;
        (session, client)
    }

    async fn actions(&self, admin: &mut AuthServiceClient<Authed>) -> Vec<String> {
        admin
            .list_audit(ListAuditRequest {
                oldest_first: true,
                page: Some(giao_proto::common::PageRequest {
                    page_size: 500,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("audit lists")
            .into_inner()
            .records
            .into_iter()
            .map(|record| record.action)
            .collect()
    }
}

fn new_user(email: &str, role: Role) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        display_name: format!("User {email}"),
        role: role as i32,
        initial_password: "a long enough password".into(),
        ..Default::default()
    }
}

fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

async fn login_refresh_and_logout(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    // Emails are case-insensitive.
    let session = fixture
        .login(TENANT, "Boss@ACME.vn", ADMIN_PASSWORD)
        .await
        .expect("logs in");
    let user = session.user.clone().expect("user");
    assert_eq!(user.role, Role::Admin as i32);
    assert_eq!(user.tenant_id, TENANT);
    assert!(session.refresh_token.starts_with("rt_"));

    // Wrong password and unknown user look the same.
    let wrong = assert_code(
        fixture.login(TENANT, ADMIN_EMAIL, "wrong password!").await,
        tonic::Code::Unauthenticated,
    );
    let unknown = assert_code(
        fixture
            .login(TENANT, "nobody@acme.vn", ADMIN_PASSWORD)
            .await,
        tonic::Code::Unauthenticated,
    );
    assert_eq!(wrong.message(), unknown.message());
    let other_tenant = assert_code(
        fixture.login("globex", ADMIN_EMAIL, ADMIN_PASSWORD).await,
        tonic::Code::Unauthenticated,
    );
    assert_eq!(other_tenant.message(), wrong.message());

    // Refresh rotates; the access token works.
    let mut public = fixture.public().await;
    let rotated = public
        .refresh(RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .expect("refreshes")
        .into_inner();
    assert_ne!(rotated.refresh_token, session.refresh_token);
    let mut admin = fixture.client(&rotated.access_token).await;
    admin
        .get_user(GetUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("new access token works");
    let newer = public
        .refresh(RefreshRequest {
            refresh_token: rotated.refresh_token.clone(),
        })
        .await
        .expect("refreshes again")
        .into_inner();

    // Replaying the first (used) refresh token revokes the whole family.
    assert_code(
        public
            .refresh(RefreshRequest {
                refresh_token: session.refresh_token.clone(),
            })
            .await,
        tonic::Code::Unauthenticated,
    );
    assert_code(
        public
            .refresh(RefreshRequest {
                refresh_token: newer.refresh_token.clone(),
            })
            .await,
        tonic::Code::Unauthenticated,
    );

    // Logout ends another session.
    let second = fixture
        .login(TENANT, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("logs in again");
    public
        .logout(LogoutRequest {
            refresh_token: second.refresh_token.clone(),
        })
        .await
        .expect("logs out");
    assert_code(
        public
            .refresh(RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await,
        tonic::Code::Unauthenticated,
    );

    let mut admin = fixture.client(&second.access_token).await;
    let actions = fixture.actions(&mut admin).await;
    for expected in [
        "auth.login",
        "auth.login_failed",
        "auth.refresh_reuse",
        "auth.logout",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    fixture.auth.stop().await.expect("stops");
}

async fn lockout_after_repeated_failures(kind: BackendKind) {
    let fixture = Fixture::start(kind, |config| config.lockout_threshold = 3).await;
    for _ in 0..3 {
        assert_code(
            fixture.login(TENANT, ADMIN_EMAIL, "not the password").await,
            tonic::Code::Unauthenticated,
        );
    }
    let locked = assert_code(
        fixture.login(TENANT, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        tonic::Code::Unauthenticated,
    );
    assert_eq!(locked.message(), "account locked");

    // Another admin reads the audit log: the lockout is there.
    let store = store_of(&fixture.config).await;
    let audit = store
        .list_audit(
            TENANT,
            &giao_auth::domain::AuditFilter {
                action: Some("auth.lockout".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    let failures = store
        .list_audit(
            TENANT,
            &giao_auth::domain::AuditFilter {
                action: Some("auth.login_failed".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("audit");
    assert_eq!(
        failures.len(),
        4,
        "three wrong passwords and one locked attempt"
    );
    fixture.auth.stop().await.expect("stops");
}

async fn store_of(config: &giao_auth::Config) -> std::sync::Arc<dyn giao_auth::store::Store> {
    let database = giao_storage::Database::connect(&config.database)
        .await
        .expect("database");
    giao_auth::store::for_database(&database)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (head.to_string(), body.to_string())
}

async fn key_rotation_keeps_old_tokens_valid(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    let (before, mut admin) = fixture.admin().await;
    let old_kid = token::header_kid(&before.access_token).expect("kid");
    let jwks = admin
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .expect("rotates")
        .into_inner();
    let kids: Vec<_> = jwks.keys.iter().map(|key| key.kid.clone()).collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&old_kid));

    // The old token still works; a new login is signed by the new key.
    admin
        .list_users(ListUsersRequest::default())
        .await
        .expect("old token still valid");
    let (after, _) = fixture.admin().await;
    let new_kid = token::header_kid(&after.access_token).expect("kid");
    assert_ne!(new_kid, old_kid);
    assert!(kids.contains(&new_kid));

    // Both verify against the published keys.
    let grpc = fixture
        .public()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    let keys: Vec<_> = grpc
        .keys
        .iter()
        .map(|jwk| token::from_jwk(jwk).expect("ed25519 jwk"))
        .collect();
    let now = chrono::Utc::now().timestamp();
    token::verify(&before.access_token, &keys, now).expect("old verifies");
    let claims = token::verify(&after.access_token, &keys, now).expect("new verifies");
    assert_eq!(claims.tid, TENANT);
    assert_eq!(claims.role, "admin");

    // The HTTP endpoint publishes the same keys.
    let (head, body) = http_get(
        fixture.auth.metrics_addr.expect("http listener"),
        "/.well-known/jwks.json",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let http_keys: Vec<(String, String)> = json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| {
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            (
                key["kid"].as_str().expect("kid").to_string(),
                key["x"].as_str().expect("x").to_string(),
            )
        })
        .collect();
    let grpc_keys: Vec<(String, String)> = grpc
        .keys
        .iter()
        .map(|key| (key.kid.clone(), key.x.clone()))
        .collect();
    assert_eq!(http_keys, grpc_keys);
    fixture.auth.stop().await.expect("stops");
}

async fn api_keys_are_shown_once_scoped_and_revocable(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    let (_, mut admin) = fixture.admin().await;
    let unknown = assert_code(
        admin
            .create_api_key(CreateApiKeyRequest {
                name: "ingest".into(),
                scopes: vec!["messages.everything".into()],
            })
            .await,
        tonic::Code::InvalidArgument,
    );
    assert!(
        unknown.message().contains("scopes"),
        "{}",
        unknown.message()
    );

    let created = admin
        .create_api_key(CreateApiKeyRequest {
            name: "connector ingest".into(),
            scopes: vec!["messages.ingest".into()],
        })
        .await
        .expect("created")
        .into_inner();
    let secret = created.secret.clone();
    let key = created.key.expect("key");
    assert!(secret.starts_with(&format!("gk_{}_", key.api_key_id)));
    let listed = admin
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert!(!format!("{listed:?}").contains(&secret[key.api_key_id.len() + 4..]));

    let mut public = fixture.public().await;
    let principal = public
        .authenticate_api_key(AuthenticateApiKeyRequest {
            api_key: secret.clone(),
        })
        .await
        .expect("authenticates")
        .into_inner();
    assert_eq!(principal.tenant_id, TENANT);
    assert_eq!(principal.scopes, vec!["messages.ingest".to_string()]);
    let used = admin
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .expect("lists")
        .into_inner();
    assert!(used.keys[0].last_used_at.is_some());

    // Outside its scope: the key cannot manage users.
    let mut service = fixture.client(&secret).await;
    assert_code(
        service.list_users(ListUsersRequest::default()).await,
        tonic::Code::PermissionDenied,
    );
    // A key with a changed secret is not the key.
    let mut tampered = secret.clone();
    tampered.pop();
    tampered.push(if secret.ends_with('A') { 'B' } else { 'A' });
    assert_code(
        public
            .authenticate_api_key(AuthenticateApiKeyRequest { api_key: tampered })
            .await,
        tonic::Code::Unauthenticated,
    );

    admin
        .revoke_api_key(RevokeApiKeyRequest {
            api_key_id: key.api_key_id.clone(),
        })
        .await
        .expect("revokes");
    assert_code(
        public
            .authenticate_api_key(AuthenticateApiKeyRequest {
                api_key: secret.clone(),
            })
            .await,
        tonic::Code::Unauthenticated,
    );
    assert_code(
        service.list_users(ListUsersRequest::default()).await,
        tonic::Code::Unauthenticated,
    );
    let actions = fixture.actions(&mut admin).await;
    for expected in ["api_key.created", "api_key.revoked", "access.denied"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    fixture.auth.stop().await.expect("stops");
}

async fn deactivated_users_are_rejected_at_once(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    let bus = giao_bus::connect(&fixture.backend.bus).await.expect("bus");
    let mut events = bus
        .subscribe(ConsumerSpec {
            durable_name: "test-deactivated".into(),
            filter_subjects: vec![envelope::subject_filter("user_deactivated")],
            ack_wait: Duration::from_secs(5),
            max_deliver: None,
            inactive_threshold: None,
        })
        .await
        .expect("subscribes");

    let (_, mut admin) = fixture.admin().await;
    let deputy = admin
        .create_user(CreateUserRequest {
            team_ids: vec!["north".into()],
            ..new_user("deputy@acme.vn", Role::Admin)
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(deputy.team_ids, vec!["north".to_string()]);
    let teams = admin
        .set_user_teams(SetUserTeamsRequest {
            user_id: deputy.user_id.clone(),
            team_ids: vec!["south".into(), "north".into()],
        })
        .await
        .expect("teams set")
        .into_inner();
    assert_eq!(
        teams.team_ids,
        vec!["north".to_string(), "south".to_string()]
    );
    let by_team = admin
        .list_users(ListUsersRequest {
            team_id: "south".into(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(by_team.users.len(), 1);

    let session = fixture
        .login(TENANT, "deputy@acme.vn", "a long enough password")
        .await
        .expect("deputy logs in");
    let claims = token::verify(
        &session.access_token,
        &fixture
            .public()
            .await
            .get_jwks(GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
            .keys
            .iter()
            .map(|jwk| token::from_jwk(jwk).expect("jwk"))
            .collect::<Vec<_>>(),
        chrono::Utc::now().timestamp(),
    )
    .expect("verifies");
    assert_eq!(claims.teams, vec!["north".to_string(), "south".to_string()]);
    let mut deputy_client = fixture.client(&session.access_token).await;
    deputy_client
        .list_users(ListUsersRequest::default())
        .await
        .expect("deputy works");

    admin
        .set_user_status(SetUserStatusRequest {
            user_id: deputy.user_id.clone(),
            status: UserStatus::Suspended as i32,
            reason: "investigation".into(),
        })
        .await
        .expect("suspended");
    // The unexpired token is refused at once, and the refresh token is dead.
    assert_code(
        deputy_client.list_users(ListUsersRequest::default()).await,
        tonic::Code::Unauthenticated,
    );
    assert_code(
        fixture
            .public()
            .await
            .refresh(RefreshRequest {
                refresh_token: session.refresh_token,
            })
            .await,
        tonic::Code::Unauthenticated,
    );
    assert_code(
        fixture
            .login(TENANT, "deputy@acme.vn", "a long enough password")
            .await,
        tonic::Code::Unauthenticated,
    );

    let delivery = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("delivery");
    let event = Envelope::decode(delivery.payload.as_ref()).expect("envelope");
    assert_eq!(event.tenant_id, TENANT);
    let Some(Payload::UserDeactivated(deactivated)) = event.payload else {
        panic!("unexpected payload {:?}", event.payload);
    };
    assert_eq!(deactivated.user_id, deputy.user_id);
    assert_eq!(deactivated.reason, "suspended");
    assert_eq!(deactivated.session_version, claims.sv + 1);

    // A role change also ends the sessions of the user.
    let agent = admin
        .create_user(new_user("agent@acme.vn", Role::Agent))
        .await
        .expect("agent")
        .into_inner();
    let agent_session = fixture
        .login(TENANT, "agent@acme.vn", "a long enough password")
        .await
        .expect("agent logs in");
    let mut agent_client = fixture.client(&agent_session.access_token).await;
    // Agents do not manage users: denied, and audited.
    assert_code(
        agent_client.list_users(ListUsersRequest::default()).await,
        tonic::Code::PermissionDenied,
    );
    admin
        .set_user_role(SetUserRoleRequest {
            user_id: agent.user_id.clone(),
            role: Role::Supervisor as i32,
        })
        .await
        .expect("role set");
    assert_code(
        agent_client.list_users(ListUsersRequest::default()).await,
        tonic::Code::Unauthenticated,
    );
    let actions = fixture.actions(&mut admin).await;
    for expected in [
        "user.created",
        "user.teams_changed",
        "user.status_changed",
        "user.role_changed",
        "access.denied",
        "auth.token_rejected",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    fixture.auth.stop().await.expect("stops");
}

fn b64(value: &str) -> String {
    token::encode_secret(value.as_bytes())
}

async fn token_attacks_are_rejected(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    let (session, mut admin) = fixture.admin().await;
    let user_id = session.user.clone().expect("user").user_id;
    let kid = token::header_kid(&session.access_token).expect("kid");
    let now = chrono::Utc::now().timestamp();
    let claims = AccessClaims {
        iss: "giao".into(),
        sub: user_id.clone(),
        tid: TENANT.into(),
        role: "admin".into(),
        sv: 1,
        teams: Vec::new(),
        iat: now,
        exp: now + 600,
        jti: "attack".into(),
    };

    // Forged: right kid, wrong key.
    let forger = TokenSigner::new(kid.clone(), ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let forged = forger.sign(&claims);
    let forged_signature = forged.rsplit('.').next().expect("signature").to_string();
    // alg none, and HS256 with the public key as the secret.
    let body = b64(&serde_json::to_string(&claims).expect("json"));
    let none = format!(
        "{}.{body}.",
        b64(&format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#))
    );
    let hs256 = format!(
        "{}.{body}.{}",
        b64(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#)),
        b64("mac")
    );
    // Expired: signed with the real key (read from the database with the configured key).
    let store = store_of(&fixture.config).await;
    let ring = giao_auth::keys::KeyRing::new(
        store,
        fixture.config.key_encryption_key().expect("kek"),
        chrono::Duration::seconds(600),
    );
    ring.reload().await.expect("keys load");
    let signer = ring.signer().expect("signer");
    let expired = signer.sign(&AccessClaims {
        iat: now - 1200,
        exp: now - 600,
        ..claims.clone()
    });
    // Sanity: the same signer with a live expiry is accepted.
    let genuine = signer.sign(&claims);
    fixture
        .client(&genuine)
        .await
        .list_users(ListUsersRequest::default())
        .await
        .expect("a genuine token works");

    for (what, token) in [
        ("forged signature", forged),
        ("alg none", none),
        ("hs256", hs256),
        ("expired", expired),
        ("garbage", "not.a.token".to_string()),
        (
            "dev token without dev mode",
            format!("dev.{TENANT}.{user_id}.admin"),
        ),
    ] {
        let status = fixture
            .client(&token)
            .await
            .list_users(ListUsersRequest::default())
            .await
            .expect_err(what);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
        assert!(!status.message().contains(&token), "{what}");
    }
    assert_code(
        fixture
            .public()
            .await
            .list_users(ListUsersRequest::default())
            .await,
        tonic::Code::Unauthenticated,
    );

    // Tenant B's user id with tenant A's token: not found, never a leak.
    giao_auth::admin::create_tenant(&fixture.config, "globex", "Globex", "ceo@globex.vn", None)
        .await
        .expect("second tenant");
    let globex = fixture
        .login("globex", "ceo@globex.vn", "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(globex.code(), tonic::Code::Unauthenticated);
    let store = store_of(&fixture.config).await;
    let globex_admin = store
        .user_by_login("globex", "ceo@globex.vn")
        .await
        .expect("reads")
        .expect("exists");
    for result in [
        admin
            .get_user(GetUserRequest {
                user_id: globex_admin.id.clone(),
            })
            .await,
        admin
            .set_user_status(SetUserStatusRequest {
                user_id: globex_admin.id.clone(),
                status: UserStatus::Suspended as i32,
                reason: String::new(),
            })
            .await,
    ] {
        assert_code(result, tonic::Code::NotFound);
    }
    let listed = admin
        .list_users(ListUsersRequest::default())
        .await
        .expect("lists")
        .into_inner();
    assert!(listed.users.iter().all(|user| user.tenant_id == TENANT));

    let actions = fixture.actions(&mut admin).await;
    assert!(
        actions.iter().any(|a| a == "auth.token_rejected"),
        "expired token audited: {actions:?}"
    );
    // Forged, alg none and HS256 tokens name this tenant: recorded there as claims.
    let rejected = admin
        .list_audit(giao_proto::auth::ListAuditRequest {
            action: "auth.token_rejected".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .records;
    let claimed = rejected
        .iter()
        .filter(|record| record.details_json.contains("\"claimed\":true"))
        .count();
    assert!(
        claimed >= 3,
        "forged tokens audited as claims: {rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .all(|record| !record.details_json.contains(&forged_signature)),
        "no token in the audit log"
    );
    fixture.auth.stop().await.expect("stops");
}

async fn tamper(config: &giao_auth::Config, kind: BackendKind, seq: i64) {
    let sql = "UPDATE audit_log SET details_json = '{\"role\":\"admin\"}' WHERE tenant_id = 'acme' AND seq = ";
    let statement = format!("{sql}{seq}");
    match kind {
        BackendKind::Postgres => {
            let pool = sqlx::PgPool::connect(&config.database.url)
                .await
                .expect("pg");
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .expect("tampers");
        }
        BackendKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&config.database.url)
                .await
                .expect("sqlite");
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .expect("tampers");
        }
    }
}

async fn audit_chain_detects_tampering(kind: BackendKind) {
    let fixture = Fixture::start(kind, |_| {}).await;
    let (_, mut admin) = fixture.admin().await;
    admin
        .create_user(new_user("a1@acme.vn", Role::Agent))
        .await
        .expect("created");

    // Another service asks for an audit record; a redelivered event appends once.
    let bus = giao_bus::connect(&fixture.backend.bus).await.expect("bus");
    let publisher = giao_bus::envelope::EventPublisher::new(bus, "message-store");
    let request = Payload::AuditRequested(AuditRequested {
        actor: "sup-1".into(),
        action: "conversation.opened_by_supervisor".into(),
        target: "conv-9".into(),
        details_json: r#"{"owner":"agent-2"}"#.into(),
        at: None,
    });
    for _ in 0..2 {
        publisher
            .publish(TENANT, "audit-evt-1".into(), request.clone())
            .await
            .expect("published");
    }
    let store = store_of(&fixture.config).await;
    giao_testkit::wait_until(Duration::from_secs(15), "the audit request", || {
        let store = store.clone();
        async move {
            store
                .list_audit(
                    TENANT,
                    &giao_auth::domain::AuditFilter {
                        action: Some("conversation.opened_by_supervisor".into()),
                        limit: 10,
                        ..Default::default()
                    },
                )
                .await
                .is_ok_and(|records| !records.is_empty())
        }
    })
    .await;
    // The same event id appended directly again is still one record.
    let again = giao_auth::domain::audit::NewAudit {
        event_id: Some("audit-evt-1".into()),
        ..giao_auth::domain::audit::NewAudit::new("x", "y", "z", serde_json::json!({}))
    };
    store
        .append_audit(TENANT, &again)
        .await
        .expect("idempotent");

    let newest_first = admin
        .list_audit(ListAuditRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .records;
    let seqs: Vec<u64> = newest_first.iter().map(|record| record.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seqs, sorted, "newest first");
    assert_eq!(
        newest_first
            .iter()
            .filter(|record| record.action == "conversation.opened_by_supervisor")
            .count(),
        1
    );
    assert!(newest_first.iter().all(|record| record.action != "y"));
    let first = newest_first.last().expect("records");
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, "0".repeat(64));
    // Pages follow the cursor.
    let page = admin
        .list_audit(ListAuditRequest {
            page: Some(giao_proto::common::PageRequest {
                page_size: 2,
                ..Default::default()
            }),
            oldest_first: true,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let next = admin
        .list_audit(ListAuditRequest {
            page: Some(giao_proto::common::PageRequest {
                page_size: 2,
                cursor: page.page.expect("page").next_cursor,
            }),
            oldest_first: true,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        next.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );

    let verdict = admin
        .verify_audit_chain(VerifyAuditChainRequest {})
        .await
        .expect("verifies")
        .into_inner();
    assert!(verdict.ok, "{verdict:?}");

    tamper(&fixture.config, kind, 2).await;
    let verdict = admin
        .verify_audit_chain(VerifyAuditChainRequest {})
        .await
        .expect("verifies")
        .into_inner();
    assert!(!verdict.ok);
    assert_eq!(verdict.first_broken_seq, 2);
    fixture.auth.stop().await.expect("stops");
}

async fn logs_never_contain_secrets(kind: BackendKind) {
    let logs = giao_testkit::capture_logs();
    let fixture = Fixture::start(kind, |_| {}).await;
    let session = fixture
        .login(TENANT, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("logs in");
    assert_code(
        fixture
            .login(TENANT, ADMIN_EMAIL, "wrong-password-123")
            .await,
        tonic::Code::Unauthenticated,
    );
    let mut public = fixture.public().await;
    let rotated = public
        .refresh(RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .expect("refreshes")
        .into_inner();
    // A replay, logged as a warning.
    assert_code(
        public
            .refresh(RefreshRequest {
                refresh_token: session.refresh_token.clone(),
            })
            .await,
        tonic::Code::Unauthenticated,
    );
    let session = fixture
        .login(TENANT, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("logs in");
    let mut admin = fixture.client(&session.access_token).await;
    let key = admin
        .create_api_key(CreateApiKeyRequest {
            name: "ingest".into(),
            scopes: vec!["messages.ingest".into()],
        })
        .await
        .expect("created")
        .into_inner()
        .secret;
    public
        .authenticate_api_key(AuthenticateApiKeyRequest {
            api_key: key.clone(),
        })
        .await
        .expect("authenticates");
    assert_code(
        fixture
            .client(&key)
            .await
            .list_users(ListUsersRequest::default())
            .await,
        tonic::Code::PermissionDenied,
    );
    fixture.auth.stop().await.expect("stops");

    let captured = logs.contents();
    assert!(captured.contains("rpc"), "logs were captured");
    // The secret is base64url and may hold '_' itself, so split as the server does.
    let (_, secret_of_key) = token::parse_api_key(&key).expect("a well-formed key");
    for (what, secret) in [
        ("password", ADMIN_PASSWORD),
        ("wrong password", "wrong-password-123"),
        ("access token", session.access_token.as_str()),
        ("refresh token", session.refresh_token.as_str()),
        ("rotated refresh token", rotated.refresh_token.as_str()),
        ("rotated access token", rotated.access_token.as_str()),
        ("api key", key.as_str()),
        ("api key secret", secret_of_key),
    ] {
        assert!(!captured.contains(secret), "{what} leaked into the logs");
    }
    // Nor the signature part of a token alone.
    let signature = session.access_token.rsplit('.').next().expect("signature");
    assert!(!captured.contains(signature));
}

giao_tests::on_both_backends!(
    login_refresh_and_logout,
    lockout_after_repeated_failures,
    key_rotation_keeps_old_tokens_valid,
    api_keys_are_shown_once_scoped_and_revocable,
    deactivated_users_are_rejected_at_once,
    token_attacks_are_rejected,
    audit_chain_detects_tampering,
    logs_never_contain_secrets,
);
