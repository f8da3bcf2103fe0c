//! How the auth service verifies its own callers. Login, Refresh, Logout, GetJwks and
//! AuthenticateApiKey are public; everything else needs a signed access token (verified
//! in-process against this service's keys, with the session version checked against the
//! database so a deactivated user is rejected at once), an API key, or — on a laptop with
//! `auth.dev_tokens` — a developer token.
//!
//! The pieces are small functions ([`principal_from_bearer`], [`principal_from_api_key`]) so
//! that the shared verification layer for the other services can reuse them.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::future::BoxFuture;
use giao_authz::{
    DevTokenAuthenticator, Principal, Role, bearer,
    token::{self, AccessClaims, PublicKey, TokenError},
};
use giao_platform::grpc::Authenticator;
use serde_json::json;

use crate::{
    core::Core,
    domain::{ApiKeyRecord, UserStatus, audit::NewAudit, sha256_hex},
    error::Error,
};

/// RPCs anyone may call: they carry their own credential (password, refresh token, API key)
/// or publish only public keys.
pub const PUBLIC_RPCS: &[&str] = &[
    "/giao.auth.v1.AuthService/Login",
    "/giao.auth.v1.AuthService/Refresh",
    "/giao.auth.v1.AuthService/Logout",
    "/giao.auth.v1.AuthService/GetJwks",
    "/giao.auth.v1.AuthService/AuthenticateApiKey",
];

pub fn is_public(rpc_path: &str) -> bool {
    PUBLIC_RPCS.contains(&rpc_path)
}

/// Verifies an access token against `keys` and turns it into a principal. Does not check the
/// session version: the caller compares `claims.sv` with the user's current one.
pub fn principal_from_bearer(
    token: &str,
    keys: &[PublicKey],
    now_unix: i64,
) -> Result<(Principal, AccessClaims), TokenError> {
    let claims = token::verify(token, keys, now_unix)?;
    let principal = Principal::from_claims(&claims).ok_or(TokenError::Malformed)?;
    Ok((principal, claims))
}

/// The principal of an API key record: the service role with exactly the key's scopes.
pub fn principal_of_api_key(record: &ApiKeyRecord) -> Principal {
    let mut principal = Principal::user(record.tenant_id.clone(), record.id.clone(), Role::Service);
    principal.scopes = record.scopes.iter().cloned().collect::<BTreeSet<_>>();
    principal
}

/// Resolves `gk_<id>_<secret>` against the store; unknown, revoked and malformed keys are
/// all Unauthenticated with one message.
pub async fn principal_from_api_key(core: &Core, key: &str) -> Result<ApiKeyRecord, Error> {
    let invalid = || Error::unauthenticated("invalid API key");
    let (id, _secret) = token::parse_api_key(key).ok_or_else(invalid)?;
    let record = core.store.api_key(id).await?.ok_or_else(invalid)?;
    if record.key_hash != sha256_hex(key) || record.revoked_at.is_some() {
        return Err(invalid());
    }
    core.store.touch_api_key(&record.id, Utc::now()).await?;
    Ok(record)
}

/// The claims of a token whose signature has been verified but which was refused for its
/// expiry, to attribute the refusal to a tenant in the audit log.
fn claims_without_expiry(token: &str, keys: &[PublicKey]) -> Option<AccessClaims> {
    token::verify(token, keys, i64::MIN / 2).ok()
}

/// The auth service's authenticator.
pub struct AuthServiceAuthenticator {
    core: Arc<Core>,
    dev_tokens: bool,
    last_miss_reload: Arc<Mutex<Option<Instant>>>,
}

impl AuthServiceAuthenticator {
    pub fn new(core: Arc<Core>, dev_tokens: bool) -> Self {
        if dev_tokens {
            tracing::warn!(
                service = crate::SERVICE,
                "auth.dev_tokens is on: unsigned developer tokens are accepted, never use this in production"
            );
        }
        Self {
            core,
            dev_tokens,
            last_miss_reload: Arc::new(Mutex::new(None)),
        }
    }
}

/// At most one reload per this interval for tokens naming an unknown key id, so garbage
/// kids cannot hammer the database.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

async fn verify_access_token(
    core: &Core,
    token: &str,
    last_miss_reload: &Mutex<Option<Instant>>,
) -> Result<Principal, Error> {
    let now = Utc::now().timestamp();
    let mut keys = core.keys.public_keys();
    let mut outcome = principal_from_bearer(token, &keys, now);
    if matches!(outcome, Err(TokenError::UnknownKid(_))) {
        // Another replica may have rotated: reload once, then retry.
        let due = last_miss_reload.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| at.elapsed() >= MISS_RELOAD_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        });
        if due {
            core.keys.reload().await?;
            keys = core.keys.public_keys();
            outcome = principal_from_bearer(token, &keys, now);
        }
    }
    let (principal, claims) = match outcome {
        Ok(verified) => verified,
        Err(error) => {
            tracing::info!(reason = %error, "access token refused");
            if error == TokenError::Expired
                && let Some(claims) = claims_without_expiry(token, &keys)
            {
                core.audit_best_effort(
                    &claims.tid,
                    NewAudit::new(
                        &claims.sub,
                        "auth.token_rejected",
                        &claims.sub,
                        json!({"reason": "expired", "jti": claims.jti}),
                    ),
                )
                .await;
            } else if let Some(claims) = giao_authz::verify::unverified_claims(token)
                && !claims.tid.is_empty()
                && core
                    .store
                    .tenant(&claims.tid)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            {
                // A forged or malformed token naming a real tenant: recorded there, marked
                // as a claim, so the tenant sees attempts against it.
                core.audit_best_effort(
                    &claims.tid,
                    NewAudit::new(
                        &claims.sub,
                        "auth.token_rejected",
                        &claims.sub,
                        json!({"reason": error.to_string(), "claimed": true}),
                    ),
                )
                .await;
            }
            return Err(Error::unauthenticated("invalid or expired access token"));
        }
    };
    let user = core.store.user(&claims.tid, &claims.sub).await?;
    let current = user.is_some_and(|user| {
        user.status == UserStatus::Active
            && u64::try_from(user.session_version).ok() == Some(claims.sv)
    });
    if !current {
        core.audit_best_effort(
            &claims.tid,
            NewAudit::new(
                &claims.sub,
                "auth.token_rejected",
                &claims.sub,
                json!({"reason": "session_revoked", "jti": claims.jti}),
            ),
        )
        .await;
        return Err(Error::unauthenticated("session revoked"));
    }
    Ok(principal)
}

impl Authenticator for AuthServiceAuthenticator {
    fn authenticate(
        &self,
        rpc_path: &str,
        headers: &http::HeaderMap,
    ) -> BoxFuture<'static, Result<http::Extensions, tonic::Status>> {
        if is_public(rpc_path) {
            return Box::pin(async { Ok(http::Extensions::new()) });
        }
        let credential = bearer(headers).map(str::to_string);
        let path = rpc_path.to_string();
        let core = self.core.clone();
        let dev_tokens = self.dev_tokens;
        let last_miss_reload = self.last_miss_reload.clone();
        Box::pin(async move {
            let credential = credential
                .ok_or_else(|| tonic::Status::unauthenticated("missing or invalid credentials"))?;
            let principal = if credential.starts_with(token::API_KEY_PREFIX) {
                principal_from_api_key(&core, &credential)
                    .await
                    .map(|record| principal_of_api_key(&record))?
            } else if dev_tokens && credential.starts_with("dev.") {
                DevTokenAuthenticator::parse(&credential).ok_or_else(|| {
                    tonic::Status::unauthenticated("missing or invalid credentials")
                })?
            } else {
                verify_access_token(&core, &credential, &last_miss_reload).await?
            };
            if let Err(status) = giao_authz::rpcs::authorize(&path, &principal) {
                core.audit_best_effort(
                    &principal.tenant_id,
                    NewAudit::new(
                        &principal.user_id,
                        "access.denied",
                        &path,
                        json!({"service": crate::SERVICE, "reason": status.message()}),
                    ),
                )
                .await;
                return Err(status);
            }
            let mut extensions = http::Extensions::new();
            extensions.insert(principal);
            Ok(extensions)
        })
    }
}
