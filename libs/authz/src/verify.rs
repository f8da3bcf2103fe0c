//! The one authenticator every service installs in its gRPC stack.
//!
//! For each call it turns the bearer credential into a verified [`Principal`] and checks the
//! RPC's declared permission ([`crate::rpcs`]) before the handler runs:
//! - an access token (EdDSA JWT) is verified against the auth service's JWKS, cached and
//!   fetched again when a token names a key id it has not seen (keys rotate), at most once
//!   per [`JWKS_MISS_INTERVAL`];
//! - a token whose session version is older than the user's current one is refused: every
//!   replica follows `UserDeactivated` events on its own consumer, so a suspended or
//!   offboarded user is locked out at once rather than when the token expires;
//! - an API key (`gk_…`) is checked with the auth service and remembered for a short while;
//! - developer tokens only when `auth.dev_tokens` is on (laptops).
//!
//! Every refusal is answered Unauthenticated or PermissionDenied and recorded in the
//! tenant's audit log through an `AuditRequested` event (never with the credential itself).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::future::BoxFuture;
use giao_bus::{
    ConsumerSpec, EventBus, HandlerOutcome,
    envelope::{self, EventPublisher},
};
use giao_platform::grpc::Authenticator;
use giao_proto::{
    auth::{AuthenticateApiKeyRequest, GetJwksRequest, auth_service_client::AuthServiceClient},
    events::{self, envelope::Payload},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    DevTokenAuthenticator, Principal, Role,
    rpcs::{self, Access},
    token::{self, AccessClaims, PublicKey, TokenError},
};

/// Least time between two JWKS fetches caused by unknown key ids: a flood of forged kids
/// becomes at most one call to the auth service per interval (the callers wait their turn),
/// while a token of a freshly rotated key is accepted after at most this delay.
pub const JWKS_MISS_INTERVAL: Duration = Duration::from_secs(1);

/// Newest session version per (tenant, user), from `UserDeactivated` events.
#[derive(Debug, Default)]
pub struct SessionVersions {
    versions: RwLock<HashMap<(String, String), u64>>,
}

impl SessionVersions {
    pub fn bump(&self, tenant_id: &str, user_id: &str, version: u64) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        let entry = versions
            .entry((tenant_id.to_string(), user_id.to_string()))
            .or_default();
        *entry = (*entry).max(version);
    }

    /// Whether a token minted at `version` is still current.
    pub fn current(&self, tenant_id: &str, user_id: &str, version: u64) -> bool {
        let versions = self.versions.read().unwrap_or_else(|e| e.into_inner());
        versions
            .get(&(tenant_id.to_string(), user_id.to_string()))
            .is_none_or(|&newest| version >= newest)
    }
}

/// Why a call was refused, for the caller (status) and for the audit log (who, what).
struct Refusal {
    status: tonic::Status,
    tenant_id: Option<String>,
    actor: String,
}

impl Refusal {
    fn unauthenticated(message: &str, claimed: Option<(String, String)>) -> Self {
        let (tenant_id, actor) = match claimed {
            Some((tenant, actor)) => (Some(tenant), actor),
            None => (None, "anonymous".into()),
        };
        Self {
            status: tonic::Status::unauthenticated(message.to_string()),
            tenant_id,
            actor,
        }
    }
}

pub struct Verifier {
    service: &'static str,
    auth: Option<AuthServiceClient<Channel>>,
    dev_tokens: bool,
    keys: RwLock<Vec<PublicKey>>,
    /// When keys were last fetched because of an unknown kid; one fetch at a time.
    last_miss_fetch: tokio::sync::Mutex<Option<Instant>>,
    api_keys: Mutex<HashMap<String, (Principal, Instant)>>,
    api_key_ttl: Duration,
    pub sessions: Arc<SessionVersions>,
    audit: Option<EventPublisher>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("service", &self.service)
            .field("dev_tokens", &self.dev_tokens)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `auth_endpoint` empty means developer tokens only.
    pub fn new(
        service: &'static str,
        auth_endpoint: &str,
        dev_tokens: bool,
        api_key_ttl: Duration,
        bus: Option<Arc<dyn EventBus>>,
    ) -> Result<Self, String> {
        let auth = if auth_endpoint.is_empty() {
            None
        } else {
            let endpoint = tonic::transport::Endpoint::from_shared(auth_endpoint.to_string())
                .map_err(|error| format!("invalid auth.endpoint {auth_endpoint}: {error}"))?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5));
            Some(AuthServiceClient::new(endpoint.connect_lazy()))
        };
        Ok(Self {
            service,
            auth,
            dev_tokens,
            keys: RwLock::new(Vec::new()),
            last_miss_fetch: tokio::sync::Mutex::new(None),
            api_keys: Mutex::new(HashMap::new()),
            api_key_ttl,
            sessions: Arc::new(SessionVersions::default()),
            audit: bus.map(|bus| EventPublisher::new(bus, service)),
        })
    }

    async fn principal(&self, credential: &str) -> Result<Principal, Refusal> {
        if credential.starts_with("dev.") {
            if self.dev_tokens
                && let Some(principal) = DevTokenAuthenticator::parse(credential)
            {
                return Ok(principal);
            }
            return Err(Refusal::unauthenticated("invalid credentials", None));
        }
        if token::parse_api_key(credential).is_some() {
            return self.api_key(credential).await;
        }
        self.access_token(credential).await
    }

    async fn access_token(&self, credential: &str) -> Result<Principal, Refusal> {
        let claimed = unverified_claims(credential).map(|claims| (claims.tid, claims.sub));
        let kid = token::header_kid(credential)
            .map_err(|_| Refusal::unauthenticated("invalid token", claimed.clone()))?;
        let known =
            |verifier: &Self| verifier.with_keys(|keys| keys.iter().any(|key| key.kid == kid));
        if !known(self) {
            let mut last = self.last_miss_fetch.lock().await;
            if let Some(at) = *last {
                let since = at.elapsed();
                if since < JWKS_MISS_INTERVAL {
                    tokio::time::sleep(JWKS_MISS_INTERVAL - since).await;
                }
            }
            // Another caller may have fetched while this one waited.
            if !known(self) {
                self.refresh_keys().await;
                *last = Some(Instant::now());
            }
        }
        let now = chrono::Utc::now().timestamp();
        let verified = self.with_keys(|keys| token::verify(credential, keys, now));
        let claims = verified.map_err(|error| {
            let message = match error {
                TokenError::Expired => "token expired",
                _ => "invalid token",
            };
            Refusal::unauthenticated(message, claimed.clone())
        })?;
        let principal = Principal::from_claims(&claims)
            .ok_or_else(|| Refusal::unauthenticated("invalid token", claimed.clone()))?;
        if principal.role == Role::Service {
            // Service principals come from API keys only.
            return Err(Refusal::unauthenticated("invalid token", claimed));
        }
        if !self.sessions.current(&claims.tid, &claims.sub, claims.sv) {
            return Err(Refusal::unauthenticated("session revoked", claimed));
        }
        Ok(principal)
    }

    fn with_keys<T>(&self, f: impl FnOnce(&[PublicKey]) -> T) -> T {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        f(&keys)
    }

    /// Fetches the auth service's JWKS.
    async fn refresh_keys(&self) {
        let Some(auth) = self.auth.clone() else {
            return;
        };
        match auth.clone().get_jwks(GetJwksRequest {}).await {
            Ok(response) => {
                let keys: Vec<PublicKey> = response
                    .into_inner()
                    .keys
                    .iter()
                    .filter_map(|jwk| token::from_jwk(jwk).ok())
                    .collect();
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
            }
            Err(status) => {
                tracing::warn!(service = self.service, code = ?status.code(), "cannot fetch the auth service's signing keys");
            }
        }
    }

    async fn api_key(&self, credential: &str) -> Result<Principal, Refusal> {
        let cache_key = sha256_hex(credential);
        {
            let mut cache = self.api_keys.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&cache_key) {
                Some((principal, at)) if at.elapsed() < self.api_key_ttl => {
                    return Ok(principal.clone());
                }
                Some(_) => {
                    cache.remove(&cache_key);
                }
                None => {}
            }
        }
        let Some(auth) = self.auth.clone() else {
            return Err(Refusal::unauthenticated("invalid credentials", None));
        };
        let answer = auth
            .clone()
            .authenticate_api_key(AuthenticateApiKeyRequest {
                api_key: credential.to_string(),
            })
            .await;
        let key = match answer {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(Refusal::unauthenticated("invalid API key", None));
            }
            Err(status) => {
                tracing::warn!(service = self.service, code = ?status.code(), "cannot check an API key with the auth service");
                return Err(Refusal {
                    status: tonic::Status::unavailable("cannot verify credentials right now"),
                    tenant_id: None,
                    actor: "anonymous".into(),
                });
            }
        };
        let mut principal = Principal::user(key.tenant_id, key.api_key_id, Role::Service);
        principal.scopes = key.scopes.into_iter().collect();
        self.api_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    /// Records a refusal in the tenant's audit log, without waiting for the bus.
    fn audit_refusal(&self, rpc_path: &str, refusal: &Refusal) {
        tracing::info!(service = self.service, rpc = rpc_path, code = ?refusal.status.code(), "call refused");
        let (Some(publisher), Some(tenant_id)) = (self.audit.clone(), refusal.tenant_id.clone())
        else {
            return;
        };
        if !giao_bus::subject::is_valid_token(&tenant_id) {
            return;
        }
        // Who an unauthenticated caller claimed to be is unproven: the record says so.
        let details = serde_json::json!({
            "service": self.service,
            "code": format!("{:?}", refusal.status.code()),
            "reason": refusal.status.message(),
            "claimed": refusal.status.code() == tonic::Code::Unauthenticated,
        });
        let payload = Payload::AuditRequested(events::AuditRequested {
            actor: refusal.actor.clone(),
            action: "access.denied".into(),
            target: rpc_path.to_string(),
            details_json: details.to_string(),
            at: Some(now_timestamp()),
        });
        tokio::spawn(async move {
            let event_id = format!("access-denied-{}", uuid_like());
            if let Err(error) = publisher.publish(&tenant_id, event_id, payload).await {
                tracing::warn!(%error, "cannot record a refused call in the audit log");
            }
        });
    }
}

/// The shared authenticator: a [`Verifier`] behind the platform's hook.
#[derive(Debug, Clone)]
pub struct TokenAuthenticator(pub Arc<Verifier>);

impl Authenticator for TokenAuthenticator {
    fn authenticate(
        &self,
        rpc_path: &str,
        headers: &http::HeaderMap,
    ) -> BoxFuture<'static, Result<http::Extensions, tonic::Status>> {
        let verifier = self.0.clone();
        let path = rpc_path.to_string();
        let credential = crate::bearer(headers).map(str::to_string);
        Box::pin(async move {
            if rpcs::access(&path) == Some(Access::Public) {
                return Ok(http::Extensions::new());
            }
            let outcome = match credential {
                None => Err(Refusal::unauthenticated(
                    "missing or invalid credentials",
                    None,
                )),
                Some(credential) => verifier.principal(&credential).await,
            };
            let principal = outcome.and_then(|principal| {
                rpcs::authorize(&path, &principal)
                    .map(|()| principal.clone())
                    .map_err(|status| Refusal {
                        status,
                        tenant_id: Some(principal.tenant_id.clone()),
                        actor: principal.user_id.clone(),
                    })
            });
            match principal {
                Ok(principal) => {
                    let mut extensions = http::Extensions::new();
                    extensions.insert(principal);
                    Ok(extensions)
                }
                Err(refusal) => {
                    verifier.audit_refusal(&path, &refusal);
                    Err(refusal.status)
                }
            }
        })
    }
}

/// Follows `UserDeactivated` on a consumer of this replica's own (every replica must see
/// every event; the consumer is removed by the bus after an hour without this replica).
pub async fn follow_sessions(
    bus: Arc<dyn EventBus>,
    service: &'static str,
    sessions: Arc<SessionVersions>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let spec = ConsumerSpec {
        durable_name: format!("{service}-sessions-{}", uuid_like()),
        filter_subjects: vec![envelope::subject_filter("user_deactivated")],
        ack_wait: Duration::from_secs(30),
        max_deliver: Some(5),
        inactive_threshold: Some(Duration::from_secs(3600)),
    };
    giao_bus::run_consumer(bus, spec, shutdown, move |delivery| {
        let decoded = envelope::decode(delivery);
        let sessions = sessions.clone();
        async move {
            match decoded {
                Ok((envelope, _span)) => {
                    if let Some(Payload::UserDeactivated(event)) = envelope.payload {
                        sessions.bump(&envelope.tenant_id, &event.user_id, event.session_version);
                    }
                    HandlerOutcome::Done
                }
                Err(error) => HandlerOutcome::Poison(format!("undecodable event: {error}")),
            }
        }
    })
    .await?;
    Ok(())
}

/// The claims of a token read without checking anything, only to attribute a refusal to
/// the tenant and user it claims to be (the audit log says "claimed").
pub fn unverified_claims(credential: &str) -> Option<AccessClaims> {
    let payload = credential.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sha256_hex(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn now_timestamp() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_session_versions_revoke_older_tokens() {
        let sessions = SessionVersions::default();
        assert!(sessions.current("t", "u", 1));
        sessions.bump("t", "u", 3);
        assert!(!sessions.current("t", "u", 2));
        assert!(sessions.current("t", "u", 3));
        sessions.bump("t", "u", 2);
        assert!(!sessions.current("t", "u", 2), "versions never go back");
        assert!(sessions.current("other", "u", 1), "per tenant");
    }
}
