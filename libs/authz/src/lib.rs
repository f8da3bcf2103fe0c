//! Who is calling, and what they may do.
//!
//! Every RPC handler reads the verified [`Principal`] that the gRPC stack put into the request
//! ([`principal`]) and checks one [`Permission`] ([`Principal::require`]). Tenant isolation and
//! visibility (agent: own conversations, supervisor: own teams, admin: tenant, auditor:
//! read-only) are decided from the principal by each service's domain code.
//!
//! Layout:
//! - [`Principal`], [`Role`], [`Permission`] and the role → permission table.
//! - [`DevTokenAuthenticator`]: the laptop-only credential scheme `giao dev` uses until
//!   signed tokens from the auth service verify through this same hook.
//! - [`token`]: EdDSA-signed access tokens (sign, verify, JWK) and API key strings.

pub mod rpcs;
pub mod token;
pub mod verify;

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use giao_platform::grpc::Authenticator;
use serde::{Deserialize, Serialize};

/// Staff roles; the service role is for internal callers with an API key or service token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Supervisor,
    Agent,
    Auditor,
    Service,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(Role::Admin),
            "supervisor" => Some(Role::Supervisor),
            "agent" => Some(Role::Agent),
            "auditor" => Some(Role::Auditor),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }
}

/// A permission an RPC requires, named `<area>.<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(pub &'static str);

impl Permission {
    pub const MESSAGES_READ: Permission = Permission("messages.read");
    pub const MESSAGES_WRITE: Permission = Permission("messages.write");
    pub const MESSAGES_INGEST: Permission = Permission("messages.ingest");
    pub const CONTACTS_READ: Permission = Permission("contacts.read");
    pub const CONTACTS_WRITE: Permission = Permission("contacts.write");
    pub const EXPORT: Permission = Permission("history.export");
    pub const ACCOUNTS_READ: Permission = Permission("accounts.read");
    pub const ACCOUNTS_MANAGE: Permission = Permission("accounts.manage");
    pub const SIMULATOR_DRIVE: Permission = Permission("simulator.drive");
    pub const ASSIGNMENT_READ: Permission = Permission("assignment.read");
    pub const ASSIGNMENT_MANAGE: Permission = Permission("assignment.manage");
    pub const REPORTS_READ: Permission = Permission("reports.read");
    pub const USERS_MANAGE: Permission = Permission("users.manage");
    pub const AUDIT_READ: Permission = Permission("audit.read");
}

/// The role → permission table (documented in docs/api/permissions.md). Visibility narrows
/// what a permission reaches: an agent's `messages.read` covers only their own conversations.
pub fn role_permissions(role: Role) -> &'static [Permission] {
    use Permission as P;
    match role {
        Role::Admin => &[
            P::MESSAGES_READ,
            P::MESSAGES_WRITE,
            P::MESSAGES_INGEST,
            P::CONTACTS_READ,
            P::CONTACTS_WRITE,
            P::EXPORT,
            P::ACCOUNTS_READ,
            P::ACCOUNTS_MANAGE,
            P::SIMULATOR_DRIVE,
            P::ASSIGNMENT_READ,
            P::ASSIGNMENT_MANAGE,
            P::REPORTS_READ,
            P::USERS_MANAGE,
            P::AUDIT_READ,
        ],
        Role::Supervisor => &[
            P::MESSAGES_READ,
            P::MESSAGES_WRITE,
            P::CONTACTS_READ,
            P::CONTACTS_WRITE,
            P::EXPORT,
            P::ACCOUNTS_READ,
            P::ASSIGNMENT_READ,
            P::ASSIGNMENT_MANAGE,
            P::REPORTS_READ,
        ],
        Role::Agent => &[
            P::MESSAGES_READ,
            P::MESSAGES_WRITE,
            P::CONTACTS_READ,
            P::CONTACTS_WRITE,
            P::ASSIGNMENT_READ,
            P::REPORTS_READ,
        ],
        Role::Auditor => &[
            P::MESSAGES_READ,
            P::CONTACTS_READ,
            P::ACCOUNTS_READ,
            P::ASSIGNMENT_READ,
            P::REPORTS_READ,
            P::AUDIT_READ,
        ],
        // Internal callers get exactly the scopes of their key, never a role's blanket set.
        Role::Service => &[],
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub user_id: String,
    pub role: Role,
    /// Teams the user belongs to (supervisors see their teams' conversations).
    pub team_ids: Vec<String>,
    /// Extra permissions of an API key (for `Role::Service`).
    pub scopes: BTreeSet<String>,
}

impl Principal {
    pub fn user(tenant_id: impl Into<String>, user_id: impl Into<String>, role: Role) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
            role,
            team_ids: Vec::new(),
            scopes: BTreeSet::new(),
        }
    }

    /// The principal of a verified access token; `None` when its role is not one giao knows.
    pub fn from_claims(claims: &token::AccessClaims) -> Option<Self> {
        let role = Role::parse(&claims.role)?;
        if claims.tid.is_empty() || claims.sub.is_empty() {
            return None;
        }
        let mut principal = Principal::user(claims.tid.clone(), claims.sub.clone(), role);
        principal.team_ids = claims.teams.clone();
        Some(principal)
    }

    pub fn has(&self, permission: Permission) -> bool {
        role_permissions(self.role).contains(&permission) || self.scopes.contains(permission.0)
    }

    /// PermissionDenied naming the permission when the caller lacks it.
    pub fn require(&self, permission: Permission) -> Result<(), tonic::Status> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "permission {} required",
                permission.0
            )))
        }
    }
}

/// The caller of `request`, or Unauthenticated when the stack did not verify one.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("missing or invalid credentials"))
}

/// Laptop-only credentials: `authorization: Bearer dev.<tenant>.<user>.<role>[.<team>+…]`.
/// Enabled only
/// by `auth.dev_tokens = true` (which `giao dev` sets and which logs a warning), so that the
/// whole suite can be driven with grpcurl before signed tokens exist on a laptop. Anything
/// else is Unauthenticated.
#[derive(Debug, Default, Clone)]
pub struct DevTokenAuthenticator;

impl DevTokenAuthenticator {
    /// `dev.<tenant>.<user>.<role>` with an optional `.<team>+<team>…` for supervisors.
    pub fn parse(token: &str) -> Option<Principal> {
        let mut parts = token.split('.');
        let (Some("dev"), Some(tenant), Some(user), Some(role)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let teams = parts.next();
        if parts.next().is_some() || tenant.is_empty() || user.is_empty() {
            return None;
        }
        let mut principal = Principal::user(tenant, user, Role::parse(role)?);
        if let Some(teams) = teams {
            principal.team_ids = teams
                .split('+')
                .filter(|team| !team.is_empty())
                .map(str::to_string)
                .collect();
        }
        Some(principal)
    }
}

impl Authenticator for DevTokenAuthenticator {
    fn authenticate(
        &self,
        _rpc_path: &str,
        headers: &http::HeaderMap,
    ) -> BoxFuture<'static, Result<http::Extensions, tonic::Status>> {
        let outcome = bearer(headers)
            .and_then(DevTokenAuthenticator::parse)
            .map(|principal| {
                let mut extensions = http::Extensions::new();
                extensions.insert(principal);
                extensions
            })
            .ok_or_else(|| tonic::Status::unauthenticated("missing or invalid credentials"));
        Box::pin(async move { outcome })
    }
}

/// How a service verifies its callers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The auth service's gRPC address (`http://auth:7105`): access tokens are verified
    /// against its JWKS, API keys are checked with it.
    pub endpoint: String,
    /// Accept laptop-only `dev.<tenant>.<user>.<role>` bearer tokens. Never in production.
    pub dev_tokens: bool,
    /// How long a checked API key is trusted before asking the auth service again (a
    /// revoked key stops working within this time).
    pub api_key_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            dev_tokens: false,
            api_key_cache_secs: 30,
        }
    }
}

/// What a service installs: the authenticator for its gRPC stack and, when it verifies
/// tokens, the task that follows session revocations.
pub struct Installed {
    pub authenticator: std::sync::Arc<dyn Authenticator>,
    pub task: Option<giao_platform::service::BackgroundTask>,
}

impl AuthConfig {
    /// The authenticator to install, or an error when none is configured: a service never
    /// starts open to the world by accident.
    pub fn install(
        &self,
        service: &'static str,
        bus: &std::sync::Arc<dyn giao_bus::EventBus>,
    ) -> Result<Installed, String> {
        if self.endpoint.is_empty() && !self.dev_tokens {
            return Err(format!(
                "no caller authentication configured for {service}: set auth.endpoint to the auth \
                 service's address (or auth.dev_tokens = true on a laptop)"
            ));
        }
        if self.dev_tokens {
            tracing::warn!(
                service,
                "auth.dev_tokens is on: unsigned developer tokens are accepted, never use this in production"
            );
        }
        let verifier = std::sync::Arc::new(verify::Verifier::new(
            service,
            &self.endpoint,
            self.dev_tokens,
            std::time::Duration::from_secs(self.api_key_cache_secs),
            Some(bus.clone()),
        )?);
        let task: Option<giao_platform::service::BackgroundTask> = if self.endpoint.is_empty() {
            None
        } else {
            let bus = bus.clone();
            let sessions = verifier.sessions.clone();
            Some(Box::new(move |stop| {
                Box::pin(verify::follow_sessions(bus, service, sessions, stop))
            }))
        };
        Ok(Installed {
            authenticator: std::sync::Arc::new(verify::TokenAuthenticator(verifier)),
            task,
        })
    }
}

/// The permission named `name` (`messages.ingest`, …), for validating API key scopes.
pub fn permission_named(name: &str) -> Option<Permission> {
    ALL_PERMISSIONS
        .iter()
        .copied()
        .find(|permission| permission.0 == name)
}

/// Every permission an RPC can require.
pub const ALL_PERMISSIONS: &[Permission] = &[
    Permission::MESSAGES_READ,
    Permission::MESSAGES_WRITE,
    Permission::MESSAGES_INGEST,
    Permission::CONTACTS_READ,
    Permission::CONTACTS_WRITE,
    Permission::EXPORT,
    Permission::ACCOUNTS_READ,
    Permission::ACCOUNTS_MANAGE,
    Permission::SIMULATOR_DRIVE,
    Permission::ASSIGNMENT_READ,
    Permission::ASSIGNMENT_MANAGE,
    Permission::REPORTS_READ,
    Permission::USERS_MANAGE,
    Permission::AUDIT_READ,
];

/// The credential of `authorization: Bearer <credential>`, when present.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tokens_parse_strictly() {
        let principal = DevTokenAuthenticator::parse("dev.acme.u1.agent").expect("valid");
        assert_eq!(principal.tenant_id, "acme");
        assert_eq!(principal.role, Role::Agent);
        assert!(DevTokenAuthenticator::parse("dev.acme.u1.root").is_none());
        assert!(DevTokenAuthenticator::parse("dev.acme.u1").is_none());
        assert!(DevTokenAuthenticator::parse("dev..u1.admin").is_none());
        assert!(DevTokenAuthenticator::parse("jwt.acme.u1.admin").is_none());
        assert!(DevTokenAuthenticator::parse("dev.acme.u1.admin.t1.extra").is_none());
        let supervisor =
            DevTokenAuthenticator::parse("dev.acme.s1.supervisor.t1+t2").expect("valid");
        assert_eq!(
            supervisor.team_ids,
            vec!["t1".to_string(), "t2".to_string()]
        );
    }

    #[test]
    fn auditors_read_but_never_write() {
        let auditor = Principal::user("t", "u", Role::Auditor);
        assert!(auditor.require(Permission::MESSAGES_READ).is_ok());
        let denied = auditor
            .require(Permission::MESSAGES_WRITE)
            .expect_err("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("messages.write"));
    }

    #[test]
    fn service_principals_have_only_their_scopes() {
        let mut service = Principal::user("t", "svc", Role::Service);
        assert!(!service.has(Permission::MESSAGES_INGEST));
        service.scopes.insert("messages.ingest".into());
        assert!(service.has(Permission::MESSAGES_INGEST));
        assert!(!service.has(Permission::MESSAGES_READ));
    }
}
