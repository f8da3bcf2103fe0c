//! The gRPC surface: request validation, the permission each RPC requires (denials are
//! audited), then [`crate::core`] and the store. Every read and write is scoped to the
//! caller's tenant, so another tenant's ids answer NotFound.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use giao_authz::{Permission, Principal, Role, principal, token};
use giao_platform::error::invalid_field;
use giao_proto::{
    auth::{
        self as pb, ApiKeyPrincipal, AuthenticateApiKeyRequest, CreateApiKeyRequest,
        CreateApiKeyResponse, CreateUserRequest, GetJwksRequest, GetUserRequest, Jwks,
        ListApiKeysRequest, ListApiKeysResponse, ListAuditRequest, ListAuditResponse,
        ListUsersRequest, ListUsersResponse, LoginRequest, LoginResponse, LogoutRequest,
        LogoutResponse, RefreshRequest, RevokeApiKeyRequest, RotateSigningKeyRequest,
        SetUserRoleRequest, SetUserStatusRequest, SetUserTeamsRequest, VerifyAuditChainRequest,
        VerifyAuditChainResponse, auth_service_server::AuthService,
    },
    common::{self, PageRequest, PageResponse},
};
use prost_types::Timestamp;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::{
    authn,
    core::{Core, Issued, hash_password},
    domain::{
        self, ApiKeyRecord, AuditFilter, UserFilter, UserRecord, UserStatus,
        audit::{AuditRecord, ChainVerifier, NewAudit},
    },
    error::Error,
    store::Store,
};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Clone, Debug)]
pub struct Api {
    core: Arc<Core>,
}

impl Api {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The caller, when they hold `permission`; a denial is audited in their tenant.
    async fn caller<T>(
        &self,
        request: &Request<T>,
        permission: Permission,
        rpc: &'static str,
    ) -> Result<Principal, Status> {
        let caller = principal(request)?;
        if let Err(status) = caller.require(permission) {
            self.core
                .audit_best_effort(
                    &caller.tenant_id,
                    NewAudit::new(
                        &caller.user_id,
                        "access.denied",
                        rpc,
                        json!({"permission": permission.0, "role": caller.role.as_str()}),
                    ),
                )
                .await;
            return Err(status);
        }
        Ok(caller)
    }

    async fn tenant_user(&self, caller: &Principal, raw_id: &str) -> Result<UserRecord, Error> {
        if raw_id.is_empty() {
            return Err(Error::InvalidArgument("missing user_id: required".into()));
        }
        self.core
            .store
            .user(&caller.tenant_id, raw_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "user",
                id: raw_id.chars().take(64).collect(),
            })
    }
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

fn from_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>, Error> {
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| Error::InvalidArgument(format!("invalid {field}: out of range")))
}

fn role_to_proto(role: Role) -> common::Role {
    match role {
        Role::Admin => common::Role::Admin,
        Role::Supervisor => common::Role::Supervisor,
        Role::Agent => common::Role::Agent,
        Role::Auditor => common::Role::Auditor,
        Role::Service => common::Role::Service,
    }
}

/// A staff role (API keys, not users, have the service role).
fn staff_role(field: &str, value: i32) -> Result<Role, Error> {
    match common::Role::try_from(value) {
        Ok(common::Role::Admin) => Ok(Role::Admin),
        Ok(common::Role::Supervisor) => Ok(Role::Supervisor),
        Ok(common::Role::Agent) => Ok(Role::Agent),
        Ok(common::Role::Auditor) => Ok(Role::Auditor),
        Ok(common::Role::Unspecified) => {
            Err(Error::InvalidArgument(format!("missing {field}: required")))
        }
        _ => Err(Error::InvalidArgument(invalid_field(
            field,
            &value.to_string(),
            "expected admin, supervisor, agent or auditor",
        ))),
    }
}

fn status_to_proto(status: UserStatus) -> pb::UserStatus {
    match status {
        UserStatus::Active => pb::UserStatus::Active,
        UserStatus::Suspended => pb::UserStatus::Suspended,
        UserStatus::Offboarded => pb::UserStatus::Offboarded,
    }
}

fn status_from_proto(field: &str, value: i32) -> Result<UserStatus, Error> {
    match pb::UserStatus::try_from(value) {
        Ok(pb::UserStatus::Active) => Ok(UserStatus::Active),
        Ok(pb::UserStatus::Suspended) => Ok(UserStatus::Suspended),
        Ok(pb::UserStatus::Offboarded) => Ok(UserStatus::Offboarded),
        Ok(pb::UserStatus::Unspecified) => {
            Err(Error::InvalidArgument(format!("missing {field}: required")))
        }
        Err(_) => Err(Error::InvalidArgument(invalid_field(
            field,
            &value.to_string(),
            "expected active, suspended or offboarded",
        ))),
    }
}

pub fn user_to_proto(user: &UserRecord) -> pb::User {
    pb::User {
        user_id: user.id.clone(),
        tenant_id: user.tenant_id.clone(),
        email: user.email.clone().unwrap_or_default(),
        phone: user.phone.clone().unwrap_or_default(),
        display_name: user.display_name.clone(),
        role: role_to_proto(user.role) as i32,
        status: status_to_proto(user.status) as i32,
        created_at: Some(timestamp(user.created_at)),
        team_ids: user.team_ids.clone(),
    }
}

fn api_key_to_proto(key: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        api_key_id: key.id.clone(),
        name: key.name.clone(),
        scopes: key.scopes.clone(),
        created_at: Some(timestamp(key.created_at)),
        last_used_at: key.last_used_at.map(timestamp),
        revoked: key.revoked_at.is_some(),
    }
}

fn audit_to_proto(record: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: u64::try_from(record.seq).unwrap_or_default(),
        at: Some(timestamp(record.at)),
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        details_json: record.details_json.clone(),
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    }
}

fn login_response(issued: Issued) -> LoginResponse {
    LoginResponse {
        access_token: issued.access_token,
        access_expires_at: Some(timestamp(issued.access_expires_at)),
        refresh_token: issued.refresh_token,
        user: Some(user_to_proto(&issued.user)),
    }
}

fn page_size(page: Option<&PageRequest>) -> i64 {
    let size = page.map(|page| page.page_size).unwrap_or_default();
    i64::from(if size == 0 {
        DEFAULT_PAGE
    } else {
        size.min(MAX_PAGE)
    })
}

fn cursor(page: Option<&PageRequest>) -> Option<String> {
    page.map(|page| page.cursor.clone())
        .filter(|cursor| !cursor.is_empty())
}

fn next_cursor(returned: usize, limit: i64, last: Option<String>) -> Option<PageResponse> {
    let full = i64::try_from(returned).unwrap_or(i64::MAX) >= limit;
    Some(PageResponse {
        next_cursor: if full {
            last.unwrap_or_default()
        } else {
            String::new()
        },
    })
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("missing {field}: required")));
    }
    Ok(value)
}

#[tonic::async_trait]
impl AuthService for Api {
    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest {
            tenant,
            login,
            password,
        } = request.into_inner();
        let tenant = required("tenant", tenant.trim())?.to_string();
        required("login", login.trim())?;
        required("password", &password)?;
        if password.len() > domain::MAX_PASSWORD_BYTES || login.len() > 320 || tenant.len() > 64 {
            return Err(Error::unauthenticated(crate::error::BAD_LOGIN).into());
        }
        let issued = self.core.login(&tenant, &login, password).await?;
        Ok(Response::new(login_response(issued)))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let token = request.into_inner().refresh_token;
        required("refresh_token", &token)?;
        let issued = self.core.refresh(&token).await?;
        Ok(Response::new(login_response(issued)))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let token = request.into_inner().refresh_token;
        required("refresh_token", &token)?;
        self.core.logout(&token).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.core.keys.jwks()))
    }

    #[tracing::instrument(skip_all)]
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "CreateUser")
            .await?;
        let input = request.into_inner();
        let user = create_user(
            self.core.store.as_ref(),
            &caller.tenant_id,
            &caller.user_id,
            input,
        )
        .await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "GetUser")
            .await?;
        let user = self
            .tenant_user(&caller, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "ListUsers")
            .await?;
        let input = request.into_inner();
        let filter = UserFilter {
            role: match input.role {
                0 => None,
                role => Some(staff_role("role", role)?),
            },
            status: match input.status {
                0 => None,
                status => Some(status_from_proto("status", status)?),
            },
            team_id: match non_empty(&input.team_id) {
                Some(team) => Some(domain::validate_ref_id("team_id", &team)?),
                None => None,
            },
            after: cursor(input.page.as_ref()),
            limit: page_size(input.page.as_ref()),
        };
        let users = self
            .core
            .store
            .list_users(&caller.tenant_id, &filter)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ListUsersResponse {
            page: next_cursor(
                users.len(),
                filter.limit,
                users.last().map(|user| user.id.clone()),
            ),
            users: users.iter().map(user_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_user_role(
        &self,
        request: Request<SetUserRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "SetUserRole")
            .await?;
        let input = request.into_inner();
        let role = staff_role("role", input.role)?;
        let mut user = self.tenant_user(&caller, &input.user_id).await?;
        if user.id == caller.user_id {
            return Err(Error::FailedPrecondition("cannot change your own role".into()).into());
        }
        if user.role == role {
            return Ok(Response::new(user_to_proto(&user)));
        }
        let previous = user.role;
        user.role = role;
        // A new role must not ride on tokens issued for the old one.
        self.core.deactivate(&mut user, "role_changed").await?;
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(
                    &caller.user_id,
                    "user.role_changed",
                    &user.id,
                    json!({"from": previous.as_str(), "to": role.as_str()}),
                ),
            )
            .await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    #[tracing::instrument(skip_all)]
    async fn set_user_status(
        &self,
        request: Request<SetUserStatusRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "SetUserStatus")
            .await?;
        let input = request.into_inner();
        let status = status_from_proto("status", input.status)?;
        if input.reason.chars().count() > 500 {
            return Err(
                Error::InvalidArgument("invalid reason: at most 500 characters".into()).into(),
            );
        }
        let mut user = self.tenant_user(&caller, &input.user_id).await?;
        if user.id == caller.user_id {
            return Err(Error::FailedPrecondition("cannot change your own status".into()).into());
        }
        if user.status == status {
            return Ok(Response::new(user_to_proto(&user)));
        }
        let previous = user.status;
        user.status = status;
        if status == UserStatus::Active {
            self.core.store.update_user(&user).await?;
        } else {
            self.core.deactivate(&mut user, status.as_str()).await?;
        }
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(
                    &caller.user_id,
                    "user.status_changed",
                    &user.id,
                    json!({"from": previous.as_str(), "to": status.as_str(), "reason": input.reason}),
                ),
            )
            .await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    #[tracing::instrument(skip_all)]
    async fn set_user_teams(
        &self,
        request: Request<SetUserTeamsRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "SetUserTeams")
            .await?;
        let input = request.into_inner();
        let teams = domain::validate_teams("team_ids", &input.team_ids)?;
        let mut user = self.tenant_user(&caller, &input.user_id).await?;
        let previous = std::mem::replace(&mut user.team_ids, teams);
        self.core.store.update_user(&user).await?;
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(
                    &caller.user_id,
                    "user.teams_changed",
                    &user.id,
                    json!({"from": previous, "to": user.team_ids}),
                ),
            )
            .await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "CreateApiKey")
            .await?;
        let input = request.into_inner();
        let name = input.name.trim();
        if name.is_empty() {
            return Err(Error::InvalidArgument("missing name: required".into()).into());
        }
        if name.chars().count() > domain::MAX_NAME_CHARS {
            return Err(Error::InvalidArgument(format!(
                "invalid name: at most {} characters",
                domain::MAX_NAME_CHARS
            ))
            .into());
        }
        let scopes = domain::validate_scopes(&input.scopes)?;
        let id = uuid::Uuid::now_v7().to_string();
        let secret = token::format_api_key(&id, &domain::random_secret());
        let record = ApiKeyRecord {
            id: id.clone(),
            tenant_id: caller.tenant_id.clone(),
            name: name.to_string(),
            scopes,
            key_hash: domain::sha256_hex(&secret),
            created_by: caller.user_id.clone(),
            created_at: domain::audit::truncate_to_micros(Utc::now()),
            last_used_at: None,
            revoked_at: None,
        };
        self.core.store.insert_api_key(&record).await?;
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(
                    &caller.user_id,
                    "api_key.created",
                    &id,
                    json!({"name": record.name, "scopes": record.scopes}),
                ),
            )
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            key: Some(api_key_to_proto(&record)),
            secret,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "ListApiKeys")
            .await?;
        let page = request.into_inner().page;
        let limit = page_size(page.as_ref());
        let after = cursor(page.as_ref());
        let keys = self
            .core
            .store
            .list_api_keys(&caller.tenant_id, after.as_deref(), limit)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ListApiKeysResponse {
            page: next_cursor(keys.len(), limit, keys.last().map(|key| key.id.clone())),
            keys: keys.iter().map(api_key_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "RevokeApiKey")
            .await?;
        let id = request.into_inner().api_key_id;
        required("api_key_id", &id)?;
        let key = self
            .core
            .store
            .revoke_api_key(&caller.tenant_id, &id, Utc::now())
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "api key",
                id: id.chars().take(64).collect(),
            })?;
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(
                    &caller.user_id,
                    "api_key.revoked",
                    &key.id,
                    json!({"name": key.name}),
                ),
            )
            .await?;
        Ok(Response::new(api_key_to_proto(&key)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let caller = self
            .caller(&request, Permission::AUDIT_READ, "ListAudit")
            .await?;
        let input = request.into_inner();
        let after_seq = match cursor(input.page.as_ref()) {
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                Error::InvalidArgument(invalid_field(
                    "page.cursor",
                    &raw,
                    "expected a cursor from a previous page",
                ))
            })?),
            None => None,
        };
        let range = input.range.unwrap_or_default();
        let filter = AuditFilter {
            actor: non_empty(&input.actor),
            action: non_empty(&input.action),
            from: range
                .start
                .as_ref()
                .map(|at| from_timestamp("range.start", at))
                .transpose()?,
            until: range
                .end
                .as_ref()
                .map(|at| from_timestamp("range.end", at))
                .transpose()?,
            after_seq,
            oldest_first: input.oldest_first,
            limit: page_size(input.page.as_ref()),
        };
        let records = self
            .core
            .store
            .list_audit(&caller.tenant_id, &filter)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ListAuditResponse {
            page: next_cursor(
                records.len(),
                filter.limit,
                records.last().map(|record| record.seq.to_string()),
            ),
            records: records.iter().map(audit_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_audit_chain(
        &self,
        request: Request<VerifyAuditChainRequest>,
    ) -> Result<Response<VerifyAuditChainResponse>, Status> {
        let caller = self
            .caller(&request, Permission::AUDIT_READ, "VerifyAuditChain")
            .await?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let batch = self
                .core
                .store
                .audit_chain(&caller.tenant_id, after, 1000)
                .await
                .map_err(Status::from)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for record in &batch {
                if let Err(seq) = verifier.check(record) {
                    tracing::warn!(tenant_id = %caller.tenant_id, seq, "audit chain broken");
                    return Ok(Response::new(VerifyAuditChainResponse {
                        ok: false,
                        first_broken_seq: u64::try_from(seq).unwrap_or_default(),
                    }));
                }
            }
        }
        Ok(Response::new(VerifyAuditChainResponse {
            ok: true,
            first_broken_seq: 0,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate_api_key(
        &self,
        request: Request<AuthenticateApiKeyRequest>,
    ) -> Result<Response<ApiKeyPrincipal>, Status> {
        let key = request.into_inner().api_key;
        required("api_key", &key)?;
        let record = authn::principal_from_api_key(&self.core, &key).await?;
        Ok(Response::new(ApiKeyPrincipal {
            tenant_id: record.tenant_id,
            api_key_id: record.id,
            scopes: record.scopes,
            name: record.name,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_signing_key(
        &self,
        request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<Jwks>, Status> {
        let caller = self
            .caller(&request, Permission::USERS_MANAGE, "RotateSigningKey")
            .await?;
        let kid = self.core.keys.rotate().await?;
        self.core
            .audit(
                &caller.tenant_id,
                NewAudit::new(&caller.user_id, "signing_key.rotated", &kid, json!({})),
            )
            .await?;
        Ok(Response::new(self.core.keys.jwks()))
    }
}

/// Validates and creates a user; shared by CreateUser and the bootstrap commands.
pub async fn create_user(
    store: &dyn Store,
    tenant_id: &str,
    actor: &str,
    input: CreateUserRequest,
) -> Result<UserRecord, Error> {
    let email = domain::normalize_email("email", &input.email)?;
    let phone = domain::normalize_phone("phone", &input.phone)?;
    if email.is_none() && phone.is_none() {
        return Err(Error::InvalidArgument(
            "missing email: an email or a phone is required".into(),
        ));
    }
    let display_name = domain::validate_display_name(&input.display_name)?;
    let role = staff_role("role", input.role)?;
    domain::validate_password("initial_password", &input.initial_password)?;
    let team_ids = domain::validate_teams("team_ids", &input.team_ids)?;
    let idempotency_key = non_empty(&input.idempotency_key);
    if idempotency_key.as_ref().is_some_and(|key| key.len() > 128) {
        return Err(Error::InvalidArgument(
            "invalid idempotency_key: at most 128 bytes".into(),
        ));
    }
    if store.tenant(tenant_id).await?.is_none() {
        return Err(Error::NotFound {
            what: "tenant",
            id: tenant_id.to_string(),
        });
    }
    let user = UserRecord {
        tenant_id: tenant_id.to_string(),
        id: uuid::Uuid::now_v7().to_string(),
        email,
        phone,
        display_name,
        role,
        status: UserStatus::Active,
        team_ids,
        session_version: 1,
        password_hash: Some(hash_password(input.initial_password).await?),
        failed_logins: 0,
        locked_until: None,
        idempotency_key: idempotency_key.clone(),
        created_at: domain::audit::truncate_to_micros(Utc::now()),
    };
    if let Err(error) = store.insert_user(&user).await {
        // A retried create with the same idempotency key returns the user it made.
        if let (Error::AlreadyExists(_), Some(key)) = (&error, &idempotency_key) {
            let login = user
                .email
                .as_deref()
                .or(user.phone.as_deref())
                .unwrap_or_default();
            if let Some(existing) = store.user_by_login(tenant_id, login).await?
                && existing.idempotency_key.as_ref() == Some(key)
            {
                return Ok(existing);
            }
        }
        return Err(error);
    }
    store
        .append_audit(
            tenant_id,
            &NewAudit::new(
                actor,
                "user.created",
                &user.id,
                json!({"role": user.role.as_str(), "teams": user.team_ids}),
            ),
        )
        .await?;
    Ok(user)
}
