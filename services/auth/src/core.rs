//! What the auth service does, independent of gRPC: logins and lockout, token issuance and
//! refresh rotation, deactivation, and appending to the audit chain. [`crate::api`] validates
//! requests and checks permissions, then calls this.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use giao_authz::token::{AccessClaims, ISSUER};
use giao_bus::envelope::EventPublisher;
use giao_proto::events::{UserDeactivated, envelope::Payload};
use serde_json::json;

use crate::{
    domain::{
        RefreshRecord, UserRecord, UserStatus, audit::NewAudit, new_refresh_token, normalize_login,
        password, sha256_hex,
    },
    error::{BAD_LOGIN, Error},
    keys::KeyRing,
    store::Store,
};

/// Token lifetimes and lockout policy, from the service config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub lockout_threshold: i64,
    pub lockout: Duration,
}

/// A fresh access + refresh token pair.
#[derive(Clone)]
pub struct Issued {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub user: UserRecord,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Core {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    pub publisher: EventPublisher,
    pub policy: Policy,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// Appends to the tenant's audit chain. A failure is logged and returned.
    pub async fn audit(&self, tenant_id: &str, record: NewAudit) -> Result<(), Error> {
        match self.store.append_audit(tenant_id, &record).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(tenant_id, action = %record.action, %error, "cannot append to the audit log");
                Err(error)
            }
        }
    }

    /// For records whose loss must not fail the request that caused them (denials).
    pub async fn audit_best_effort(&self, tenant_id: &str, record: NewAudit) {
        let _ = self.audit(tenant_id, record).await;
    }

    /// Password login. Unknown users and wrong passwords answer the same; a locked account
    /// answers "account locked" whatever the password.
    pub async fn login(
        &self,
        tenant_id: &str,
        login: &str,
        secret: String,
    ) -> Result<Issued, Error> {
        let now = Utc::now();
        let user = match normalize_login(login) {
            Some(login) => self.store.user_by_login(tenant_id, &login).await?,
            None => None,
        };
        let Some(user) = user else {
            // Spend the same time as a real check so timing does not tell users apart.
            let _ = verify_password(secret, password::decoy().to_string()).await;
            if self.store.tenant(tenant_id).await?.is_some() {
                self.audit(
                    tenant_id,
                    NewAudit::new(
                        "anonymous",
                        "auth.login_failed",
                        "",
                        json!({"reason": "unknown_user"}),
                    ),
                )
                .await?;
            }
            return Err(Error::unauthenticated(BAD_LOGIN));
        };
        if user.is_locked(now) {
            self.audit(
                tenant_id,
                NewAudit::new(
                    &user.id,
                    "auth.login_failed",
                    &user.id,
                    json!({"reason": "locked"}),
                ),
            )
            .await?;
            return Err(Error::unauthenticated("account locked"));
        }
        let stored = user
            .password_hash
            .clone()
            .unwrap_or_else(|| password::decoy().to_string());
        if !verify_password(secret, stored).await? {
            let locked_until = now + self.policy.lockout;
            let updated = self
                .store
                .record_login_failure(
                    tenant_id,
                    &user.id,
                    self.policy.lockout_threshold,
                    locked_until,
                )
                .await?
                .unwrap_or(user);
            self.audit(
                tenant_id,
                NewAudit::new(
                    &updated.id,
                    "auth.login_failed",
                    &updated.id,
                    json!({"reason": "wrong_password", "consecutive_failures": updated.failed_logins}),
                ),
            )
            .await?;
            if updated.failed_logins >= self.policy.lockout_threshold {
                tracing::warn!(tenant_id, user_id = %updated.id, "account locked after repeated login failures");
                self.audit(
                    tenant_id,
                    NewAudit::new(
                        "system",
                        "auth.lockout",
                        &updated.id,
                        json!({"locked_until": locked_until.to_rfc3339(), "consecutive_failures": updated.failed_logins}),
                    ),
                )
                .await?;
            }
            return Err(Error::unauthenticated(BAD_LOGIN));
        }
        if user.status != UserStatus::Active {
            self.audit(
                tenant_id,
                NewAudit::new(
                    &user.id,
                    "auth.login_failed",
                    &user.id,
                    json!({"reason": user.status.as_str()}),
                ),
            )
            .await?;
            return Err(Error::unauthenticated(BAD_LOGIN));
        }
        if user.failed_logins > 0 || user.locked_until.is_some() {
            self.store.reset_login_failures(tenant_id, &user.id).await?;
        }
        let family = uuid::Uuid::new_v4().to_string();
        let issued = self.issue(user, &family, now).await?;
        self.audit(
            tenant_id,
            NewAudit::new(&issued.user.id, "auth.login", &issued.user.id, json!({})),
        )
        .await?;
        Ok(issued)
    }

    /// Signs an access token and stores a new refresh token in `family`.
    pub async fn issue(
        &self,
        user: UserRecord,
        family: &str,
        now: DateTime<Utc>,
    ) -> Result<Issued, Error> {
        let expires = now + self.policy.access_ttl;
        let claims = AccessClaims {
            iss: ISSUER.into(),
            sub: user.id.clone(),
            tid: user.tenant_id.clone(),
            role: user.role.as_str().into(),
            sv: u64::try_from(user.session_version).unwrap_or_default(),
            teams: user.team_ids.clone(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let access_token = self.keys.signer()?.sign(&claims);
        let refresh_token = new_refresh_token();
        self.store
            .insert_refresh(&RefreshRecord {
                token_hash: sha256_hex(&refresh_token),
                tenant_id: user.tenant_id.clone(),
                user_id: user.id.clone(),
                family_id: family.to_string(),
                session_version: user.session_version,
                created_at: now,
                expires_at: now + self.policy.refresh_ttl,
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(Issued {
            access_token,
            access_expires_at: DateTime::from_timestamp(expires.timestamp(), 0).unwrap_or(expires),
            refresh_token,
            user,
        })
    }

    /// Rotates a refresh token. Presenting one that was already used revokes its whole
    /// family: either the holder or a thief replays it, and neither may go on.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, Error> {
        let now = Utc::now();
        let record = self
            .refresh_record(refresh_token)
            .await?
            .ok_or_else(|| Error::unauthenticated("invalid refresh token"))?;
        if record.revoked_at.is_some() {
            return Err(Error::unauthenticated("refresh token revoked"));
        }
        if record.used_at.is_some()
            || !self
                .store
                .mark_refresh_used(&record.token_hash, now)
                .await?
        {
            return Err(self.reused(&record, now).await);
        }
        if record.expires_at <= now {
            return Err(Error::unauthenticated("refresh token expired"));
        }
        let user = self.store.user(&record.tenant_id, &record.user_id).await?;
        let current = user.filter(|user| {
            user.status == UserStatus::Active && user.session_version == record.session_version
        });
        let Some(user) = current else {
            self.store.revoke_family(&record.family_id, now).await?;
            return Err(Error::unauthenticated("session revoked"));
        };
        self.issue(user, &record.family_id, now).await
    }

    async fn reused(&self, record: &RefreshRecord, now: DateTime<Utc>) -> Error {
        let revoked = match self.store.revoke_family(&record.family_id, now).await {
            Ok(revoked) => revoked,
            Err(error) => return error,
        };
        tracing::warn!(tenant_id = %record.tenant_id, user_id = %record.user_id, family_id = %record.family_id, "refresh token reused, session family revoked");
        if let Err(error) = self
            .audit(
                &record.tenant_id,
                NewAudit::new(
                    &record.user_id,
                    "auth.refresh_reuse",
                    &record.user_id,
                    json!({"family_id": record.family_id, "tokens_revoked": revoked}),
                ),
            )
            .await
        {
            return error;
        }
        Error::unauthenticated("refresh token already used: session revoked")
    }

    async fn refresh_record(&self, token: &str) -> Result<Option<RefreshRecord>, Error> {
        if !token.starts_with("rt_") || token.len() > 256 {
            return Ok(None);
        }
        self.store.refresh(&sha256_hex(token)).await
    }

    /// Ends the session the refresh token belongs to; unknown tokens are ignored.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), Error> {
        let Some(record) = self.refresh_record(refresh_token).await? else {
            return Ok(());
        };
        let now = Utc::now();
        self.store.revoke_family(&record.family_id, now).await?;
        self.audit(
            &record.tenant_id,
            NewAudit::new(
                &record.user_id,
                "auth.logout",
                &record.user_id,
                json!({"family_id": record.family_id}),
            ),
        )
        .await
    }

    /// Bumps the session version (every token the user holds stops working), revokes their
    /// refresh tokens and tells the other services.
    pub async fn deactivate(&self, user: &mut UserRecord, reason: &str) -> Result<(), Error> {
        user.session_version += 1;
        self.store.update_user(user).await?;
        self.store
            .revoke_user_refresh(&user.tenant_id, &user.id, Utc::now())
            .await?;
        let session_version = u64::try_from(user.session_version).unwrap_or_default();
        self.publisher
            .publish(
                &user.tenant_id,
                format!(
                    "user-deactivated-{}-{}-{session_version}",
                    user.tenant_id, user.id
                ),
                Payload::UserDeactivated(UserDeactivated {
                    user_id: user.id.clone(),
                    session_version,
                    reason: reason.to_string(),
                }),
            )
            .await?;
        Ok(())
    }
}

async fn verify_password(secret: String, stored: String) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || password::verify(&secret, &stored))
        .await
        .map_err(|error| Error::Inconsistent(format!("password check panicked: {error}")))
}

/// Hashes off the async runtime.
pub async fn hash_password(secret: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|error| Error::Inconsistent(format!("password hashing panicked: {error}")))?
}
