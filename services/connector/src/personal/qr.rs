//! QR logins behind `StartQrLogin` / `WatchQrLogin`.
//!
//! A login lives in the replica that started it (the long polls to Zalo run there), for
//! its QR's lifetime and a few minutes after it ended; `WatchQrLogin` replays its states from
//! the start, so a watcher that arrives late misses nothing. On confirmation the cookies are
//! checked by a cookie login (which also gives the account's Zalo uid), sealed and stored:
//! on the account named in the request, else on the tenant's personal account with that uid
//! (the same phone logging in again), else on a new account.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use giao_proto::{
    common::ChannelKind,
    connector::{QrLoginEvent, QrLoginState},
    events::AccountStatus,
};
use tokio::sync::watch;
use zalo_personal::client::{Credentials, QrConfig, QrEvent};

use super::PersonalRuntime;
use crate::{
    api::{audit_credentials, publish_status},
    error::Error,
    store::{Account, NewAccount},
};

/// Ended logins stay watchable this long.
const KEEP_ENDED: Duration = Duration::from_secs(300);

/// Where a confirmed login's credentials go.
#[derive(Debug, Clone)]
pub enum QrTarget {
    /// Log this existing account in again.
    Account(Account),
    /// A new account (or the tenant's account of the same Zalo uid).
    New {
        display_name: String,
        team_id: String,
    },
}

/// A started login: what `StartQrLogin` answers.
#[derive(Debug, Clone)]
pub struct Started {
    pub login_id: String,
    pub png: Vec<u8>,
    pub png_base64: String,
    /// Microseconds since the epoch.
    pub expires_at: i64,
}

#[derive(Debug)]
pub struct QrLogin {
    tenant: String,
    states: Mutex<Vec<QrLoginEvent>>,
    changed: watch::Sender<usize>,
}

impl QrLogin {
    fn push(&self, event: QrLoginEvent) {
        let count = self
            .states
            .lock()
            .map(|mut states| {
                states.push(event);
                states.len()
            })
            .unwrap_or_default();
        self.changed.send_replace(count);
    }

    /// The states from `from` on.
    pub fn since(&self, from: usize) -> Vec<QrLoginEvent> {
        self.states
            .lock()
            .map(|states| states.get(from..).map(<[_]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }
}

/// Whether `state` ends a login.
pub fn is_final(state: i32) -> bool {
    [
        QrLoginState::Confirmed,
        QrLoginState::Failed,
        QrLoginState::Expired,
    ]
    .iter()
    .any(|end| *end as i32 == state)
}

#[derive(Debug, Default)]
pub struct QrLogins {
    logins: Mutex<HashMap<String, Arc<QrLogin>>>,
}

impl QrLogins {
    /// The tenant's login `id`: another tenant's reads as absent.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<QrLogin>> {
        self.logins
            .lock()
            .ok()
            .and_then(|logins| logins.get(id).cloned())
            .filter(|login| login.tenant == tenant)
    }
}

fn event(state: QrLoginState, detail: &str, account: &str) -> QrLoginEvent {
    QrLoginEvent {
        state: state as i32,
        detail: detail.to_string(),
        channel_account_id: account.to_string(),
    }
}

impl PersonalRuntime {
    pub fn qr_login(&self, tenant: &str, id: &str) -> Option<Arc<QrLogin>> {
        self.inner.qr.get(tenant, id)
    }

    /// Starts a QR login and waits for its image.
    pub async fn start_qr(
        &self,
        tenant: &str,
        actor: &str,
        target: QrTarget,
    ) -> Result<Started, Error> {
        let config = self.config();
        let expiry = Duration::from_secs(config.qr_expiry_secs.max(1));
        let mut events = self.client().login_qr(QrConfig {
            user_agent: config.user_agent.clone(),
            language: config.language.clone(),
            expiry,
            ..QrConfig::default()
        });
        let first = tokio::time::timeout(
            Duration::from_millis(config.request_timeout_ms.max(1)),
            events.recv(),
        )
        .await;
        // The QR's code is how the phone side names it: not needed here.
        let png_base64 = match first {
            Ok(Some(QrEvent::QrReady {
                image_png_base64, ..
            })) => image_png_base64,
            Ok(Some(QrEvent::Failed(reason))) => {
                return Err(Error::Unavailable(format!(
                    "Zalo's QR login did not start: {reason}"
                )));
            }
            Ok(_) | Err(_) => {
                return Err(Error::Unavailable(
                    "Zalo's QR login did not start in time; try again".into(),
                ));
            }
        };
        let png = STANDARD.decode(png_base64.trim()).map_err(|_| {
            Error::Unavailable("Zalo answered a QR image that is not base64".into())
        })?;
        let login_id = format!("qr-{}", uuid::Uuid::now_v7());
        let expires_at = Utc::now().timestamp_micros() + expiry.as_micros() as i64;
        let (changed, _) = watch::channel(0);
        let login = Arc::new(QrLogin {
            tenant: tenant.to_string(),
            states: Mutex::new(Vec::new()),
            changed,
        });
        login.push(event(QrLoginState::WaitingScan, "", ""));
        if let Ok(mut logins) = self.inner.qr.logins.lock() {
            logins.insert(login_id.clone(), login.clone());
        }
        let runtime = self.clone();
        let (tenant, actor, id) = (tenant.to_string(), actor.to_string(), login_id.clone());
        tokio::spawn(async move {
            loop {
                let next = events.recv().await;
                let ended = match next {
                    Some(QrEvent::QrReady { .. }) => false,
                    Some(QrEvent::Scanned { display_name, .. }) => {
                        login.push(event(QrLoginState::Scanned, &display_name, ""));
                        false
                    }
                    Some(QrEvent::Confirmed(credentials)) => {
                        let done = runtime
                            .confirmed(&tenant, &actor, &id, &target, credentials)
                            .await;
                        login.push(match done {
                            Ok(account) => event(QrLoginState::Confirmed, "", &account),
                            Err(reason) => event(QrLoginState::Failed, &reason, ""),
                        });
                        true
                    }
                    Some(QrEvent::Declined) => {
                        login.push(event(QrLoginState::Failed, "declined on the phone", ""));
                        true
                    }
                    Some(QrEvent::Expired) => {
                        login.push(event(
                            QrLoginState::Expired,
                            "nobody scanned and confirmed the QR in time; start again",
                            "",
                        ));
                        true
                    }
                    Some(QrEvent::Failed(reason)) => {
                        login.push(event(QrLoginState::Failed, &reason, ""));
                        true
                    }
                    None => {
                        login.push(event(QrLoginState::Failed, "the login ended", ""));
                        true
                    }
                };
                if ended {
                    break;
                }
            }
            tokio::time::sleep(KEEP_ENDED).await;
            if let Ok(mut logins) = runtime.inner.qr.logins.lock() {
                logins.remove(&id);
            }
        });
        Ok(Started {
            login_id,
            png,
            png_base64,
            expires_at,
        })
    }

    /// Stores confirmed credentials; returns the account id or why it failed, in words.
    async fn confirmed(
        &self,
        tenant: &str,
        actor: &str,
        login_id: &str,
        target: &QrTarget,
        credentials: Credentials,
    ) -> Result<String, String> {
        // Proves the cookies work and names the Zalo account they belong to.
        let uid = self
            .client()
            .login(&credentials)
            .await
            .map_err(|error| format!("the new session does not log in: {error}"))?
            .uid;
        let existing = match target {
            QrTarget::Account(account) => Some(account.clone()),
            QrTarget::New { .. } => self
                .accounts()
                .list(tenant)
                .await
                .map_err(|error| error.to_string())?
                .into_iter()
                .find(|account| {
                    account.kind == ChannelKind::ZaloPersonal as i32 && account.external_id == uid
                }),
        };
        let account_id = match existing {
            Some(mut account) => {
                if !account.external_id.is_empty() && account.external_id != uid {
                    return Err(format!(
                        "the QR was confirmed by Zalo account {uid}, but this giao account \
                         captures Zalo account {}; log in with that phone",
                        account.external_id
                    ));
                }
                self.store_credentials(tenant, &account.id, &credentials)
                    .await
                    .map_err(|error| error.to_string())?;
                if account.external_id.is_empty() {
                    account.external_id = uid.clone();
                    self.accounts()
                        .update(&account)
                        .await
                        .map_err(|error| error.to_string())?;
                }
                // A listener on the old cookies (if any) restarts with the new ones at once.
                self.inner.running.stop(tenant, &account.id);
                self.inner.running.forget_ended(tenant, &account.id);
                self.set_status(tenant, &account.id, AccountStatus::Connected, "")
                    .await;
                account.id
            }
            None => {
                let QrTarget::New {
                    display_name,
                    team_id,
                } = target
                else {
                    return Err("no account to log in".into());
                };
                let id = format!("acc-{}", uuid::Uuid::now_v7());
                let plain = serde_json::to_vec(&credentials).map_err(|error| error.to_string())?;
                let (account, created) = self
                    .accounts()
                    .create(&NewAccount {
                        account: Account {
                            id: id.clone(),
                            tenant_id: tenant.to_string(),
                            kind: ChannelKind::ZaloPersonal as i32,
                            display_name: display_name.clone(),
                            status: AccountStatus::Connected as i32,
                            external_id: uid.clone(),
                            team_id: team_id.clone(),
                            ..Default::default()
                        },
                        credentials: Some(self.seal(tenant, &id, &plain)),
                        // One login creates at most one account.
                        idempotency_key: Some(login_id.to_string()),
                    })
                    .await
                    .map_err(|error| error.to_string())?;
                if created
                    && let Err(error) = publish_status(
                        &self.inner.publisher,
                        tenant,
                        &account.id,
                        AccountStatus::Unspecified as i32,
                        AccountStatus::Connected,
                        "",
                    )
                    .await
                {
                    tracing::warn!(%error, "account status not published");
                }
                account.id
            }
        };
        if let Err(error) = audit_credentials(
            &self.inner.publisher,
            tenant,
            actor,
            &account_id,
            "account.qr_login",
        )
        .await
        {
            tracing::warn!(%error, "QR login not audited");
        }
        tracing::info!(account = %account_id, "personal account logged in by QR");
        Ok(account_id)
    }
}
