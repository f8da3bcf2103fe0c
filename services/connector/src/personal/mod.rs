//! The `zalo_personal` adapter: personal Zalo accounts through the web protocol
//! (`zalo-personal` crate).
//!
//! - [`supervisor`]: one listener per account across replicas. Every tick it compares the
//!   session leases this replica holds with the listeners it runs, starts one (cookie login,
//!   then the websocket) for a gained lease and stops one at once for a lost lease or a
//!   disabled account.
//! - [`capture`]: listener events → giao events, with the same dedupe ids as the OA webhook.
//! - [`outbound`]: the outbound consumer queues personal sends in `outbound_messages`; the
//!   lease holder sends them (text, images, files, stickers), paced per account by a token
//!   bucket.
//! - [`position`]: the newest captured msgIds per account, where the next listener resumes.
//! - [`qr`]: QR logins for `StartQrLogin` / `WatchQrLogin`.
//!
//! Every failure the listener or a call reports becomes an account status
//! (AccountStatusChanged, which assignment turns into alerts).

pub mod capture;
pub mod outbound;
pub mod position;
pub mod qr;
pub mod supervisor;

use std::{sync::Arc, time::Duration};

use giao_bus::envelope::EventPublisher;
use giao_proto::events::AccountStatus;
use serde::{Deserialize, Serialize};
use zalo_personal::client::{Client, ClientError, Credentials, Endpoints, ListenerConfig};

use crate::{
    api::publish_status,
    credentials::{SealError, Sealer},
    store::{AccountStore, SealedCredentials},
    zalo::{RawEvents, media::Objects, outbound::Ledger},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZaloPersonalConfig {
    /// QR login host (Zalo: `https://id.zalo.me`).
    pub id_base_url: String,
    /// Cookie login host, `getLoginInfo`/`getServerInfo` (Zalo: `https://wpa.chat.zalo.me`).
    pub wpa_base_url: String,
    /// `jr/userinfo` after a QR login (Zalo: `https://jr.chat.zalo.me`).
    pub jr_base_url: String,
    /// Extra PEM root certificates (a private CA or a simulator's test certificate).
    pub extra_root_certs_pem: String,
    /// Gives up on one HTTP call after this long.
    pub request_timeout_ms: u64,
    /// The user agent QR logins bind the new cookies to.
    pub user_agent: String,
    pub language: String,
    /// A QR code is good for about 100 s.
    pub qr_expiry_secs: u64,
    /// Outbound pacing per account: a bucket of `send_burst` messages refilled at one per
    /// `send_interval_ms` (an account's `send_rate_per_minute` overrides the interval).
    pub send_burst: u32,
    pub send_interval_ms: u64,
    /// How long an account's sends pause after Zalo's rate limit (-69, 221); doubles on each
    /// further limit in a row, up to `rate_limit_max_pause_ms`.
    pub rate_limit_pause_ms: u64,
    pub rate_limit_max_pause_ms: u64,
    /// The web client's keep-alive call; keeps the cookies alive longer.
    pub keepalive_secs: u64,
    /// Listener reconnect backoff when the server gives no delays.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// A listener that ended (not kicked, not needing a login) starts again after this.
    pub restart_after_ms: u64,
    /// How often held leases and running listeners are reconciled.
    pub supervise_ms: u64,
    /// How often a listener's sender looks for queued messages it was not told about (a
    /// request consumed by another replica).
    pub outbound_poll_ms: u64,
}

impl Default for ZaloPersonalConfig {
    fn default() -> Self {
        let zalo = Endpoints::default();
        Self {
            id_base_url: zalo.id_base,
            wpa_base_url: zalo.wpa_base,
            jr_base_url: zalo.jr_base,
            extra_root_certs_pem: String::new(),
            request_timeout_ms: 20_000,
            user_agent: zalo_personal::client::DEFAULT_USER_AGENT.into(),
            language: "vi".into(),
            qr_expiry_secs: 100,
            send_burst: 5,
            send_interval_ms: 3_000,
            rate_limit_pause_ms: 60_000,
            rate_limit_max_pause_ms: 15 * 60_000,
            keepalive_secs: 120,
            reconnect_initial_ms: 1_000,
            reconnect_max_ms: 60_000,
            restart_after_ms: 30_000,
            supervise_ms: 500,
            outbound_poll_ms: 1_000,
        }
    }
}

impl ZaloPersonalConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (field, url) in [
            ("zalo_personal.id_base_url", &self.id_base_url),
            ("zalo_personal.wpa_base_url", &self.wpa_base_url),
            ("zalo_personal.jr_base_url", &self.jr_base_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{field} must be an http(s) URL"));
            }
        }
        if self.send_burst == 0 {
            return Err("zalo_personal.send_burst must be at least 1".into());
        }
        if self.send_interval_ms < 10 {
            return Err("zalo_personal.send_interval_ms must be at least 10".into());
        }
        if self.supervise_ms < 10 || self.outbound_poll_ms < 10 {
            return Err(
                "zalo_personal.supervise_ms and outbound_poll_ms must be at least 10".into(),
            );
        }
        if self.user_agent.trim().is_empty() {
            return Err("zalo_personal.user_agent must not be empty".into());
        }
        self.client().map(|_| ())
    }

    /// The protocol client for these hosts.
    pub fn client(&self) -> Result<Client, String> {
        let client = Client::with_timeout(
            Endpoints {
                id_base: self.id_base_url.clone(),
                wpa_base: self.wpa_base_url.clone(),
                jr_base: self.jr_base_url.clone(),
            },
            Duration::from_millis(self.request_timeout_ms.max(1)),
        );
        if self.extra_root_certs_pem.trim().is_empty() {
            return Ok(client);
        }
        client
            .trusting(self.extra_root_certs_pem.as_bytes())
            .map_err(|error| format!("zalo_personal.extra_root_certs_pem: {error}"))
    }

    fn listener(&self) -> ListenerConfig {
        ListenerConfig {
            backoff_initial: Duration::from_millis(self.reconnect_initial_ms.max(1)),
            backoff_max: Duration::from_millis(self.reconnect_max_ms.max(1)),
            ..ListenerConfig::default()
        }
    }
}

/// Checks a `zalo_personal` account's `credentials_json` (the four fields a cookie login
/// needs); the error names the field and never quotes a value.
pub fn parse_credentials(json: &str) -> Result<Credentials, String> {
    let credentials: Credentials =
        serde_json::from_str(json).map_err(|error| crate::zalo::json_error(&error))?;
    for (field, value) in [
        ("imei", &credentials.imei),
        ("user_agent", &credentials.user_agent),
    ] {
        if value.trim().is_empty() {
            return Err(format!("invalid credentials_json: missing {field}"));
        }
    }
    if credentials.cookies.is_empty() {
        return Err("invalid credentials_json: missing cookies".into());
    }
    if let Some(index) = credentials
        .cookies
        .iter()
        .position(|cookie| cookie.name.trim().is_empty())
    {
        return Err(format!(
            "invalid credentials_json: cookies[{index}].name is empty"
        ));
    }
    Ok(credentials)
}

/// What the adapter shares among the supervisor, the API and the outbound consumer.
#[derive(Debug, Clone)]
pub struct PersonalRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    accounts: AccountStore,
    sealer: Sealer,
    publisher: EventPublisher,
    ledger: Ledger,
    raw: RawEvents,
    /// Attachment bytes of outbound images and files (message-store's object store).
    objects: Objects,
    client: Client,
    config: ZaloPersonalConfig,
    running: supervisor::Running,
    qr: qr::QrLogins,
}

impl PersonalRuntime {
    pub fn new(
        accounts: AccountStore,
        sealer: Sealer,
        publisher: EventPublisher,
        config: ZaloPersonalConfig,
        objects: Objects,
    ) -> Result<Self, String> {
        let client = config.client()?;
        let database = accounts.database().clone();
        Ok(Self {
            inner: Arc::new(Inner {
                ledger: Ledger::new(database.clone(), publisher.clone()),
                raw: RawEvents::new(database),
                accounts,
                sealer,
                publisher,
                objects,
                client,
                config,
                running: supervisor::Running::default(),
                qr: qr::QrLogins::default(),
            }),
        })
    }

    pub fn config(&self) -> &ZaloPersonalConfig {
        &self.inner.config
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn accounts(&self) -> &AccountStore {
        &self.inner.accounts
    }

    /// The account's credentials, opened; `Err` says why in words.
    pub(crate) async fn credentials(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Credentials, Unopened> {
        let sealed = self
            .inner
            .accounts
            .credentials(tenant, account)
            .await
            .map_err(|error| Unopened::NotNow(format!("credentials not readable now: {error}")))?
            .ok_or_else(|| Unopened::NeedsLogin("no credentials: log in by QR code".into()))?;
        let plain = self
            .inner
            .sealer
            .open(tenant, account, &sealed.key_id, &sealed.sealed)
            .map_err(|error| match error {
                // Sealed by a replica already on a newer key: this one tries again later.
                SealError::UnknownKey(_) => Unopened::NotNow(error.to_string()),
                SealError::Corrupt => Unopened::NeedsLogin(error.to_string()),
            })?;
        serde_json::from_slice(&plain).map_err(|_| {
            Unopened::NeedsLogin(
                "stored credentials are not a personal session: log in by QR".into(),
            )
        })
    }

    /// Seals and stores `credentials` on the account.
    pub(crate) async fn store_credentials(
        &self,
        tenant: &str,
        account: &str,
        credentials: &Credentials,
    ) -> Result<(), crate::error::Error> {
        let plain = serde_json::to_vec(credentials)
            .map_err(|error| crate::error::Error::InvalidArgument(error.to_string()))?;
        Ok(self
            .inner
            .accounts
            .set_credentials(tenant, account, &self.seal(tenant, account, &plain))
            .await
            .map(|_| ())?)
    }

    pub(crate) fn seal(&self, tenant: &str, account: &str, plain: &[u8]) -> SealedCredentials {
        let (key_id, sealed) = self.inner.sealer.seal(tenant, account, plain);
        SealedCredentials { key_id, sealed }
    }

    /// Moves the account to `status` and publishes AccountStatusChanged when it changed. A
    /// disabled account keeps its status (the store refuses the change).
    pub(crate) async fn set_status(
        &self,
        tenant: &str,
        account: &str,
        status: AccountStatus,
        reason: &str,
    ) {
        match self
            .inner
            .accounts
            .set_status(tenant, account, status as i32, reason, false)
            .await
        {
            Ok(Some(previous)) => {
                if matches!(
                    status,
                    AccountStatus::Kicked | AccountStatus::NeedsLogin | AccountStatus::RateLimited
                ) {
                    tracing::warn!(account = %account, status = status.as_str_name(), %reason,
                        "personal account needs attention");
                } else {
                    tracing::info!(account = %account, status = status.as_str_name(),
                        "personal account status");
                }
                if let Err(error) = publish_status(
                    &self.inner.publisher,
                    tenant,
                    account,
                    previous,
                    status,
                    reason,
                )
                .await
                {
                    tracing::warn!(%error, "account status change not published");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "account status not stored"),
        }
    }

    /// Like [`Self::set_status`] for what a session (logged in with `used`) found. A refusal
    /// of credentials that were replaced meanwhile (a QR login elsewhere) is not reported:
    /// the listener ends and the supervisor starts one with the new credentials.
    pub(crate) async fn set_session_status(
        &self,
        tenant: &str,
        account: &str,
        used: &Credentials,
        status: AccountStatus,
        reason: &str,
    ) {
        if matches!(status, AccountStatus::NeedsLogin | AccountStatus::Kicked)
            && let Ok(current) = self.credentials(tenant, account).await
            && &current != used
        {
            tracing::info!(account = %account, "old session refused; new credentials are stored");
            return;
        }
        self.set_status(tenant, account, status, reason).await;
    }

    /// The status a failed login or call leaves the account in, with a reason in words.
    pub(crate) fn status_of(error: &ClientError) -> (AccountStatus, String) {
        if error.needs_login() {
            (
                AccountStatus::NeedsLogin,
                format!("Zalo refused the saved session ({error}): log in again by QR code"),
            )
        } else if error.is_rate_limit() {
            (
                AccountStatus::RateLimited,
                format!("Zalo rate limit ({error}): sending paused"),
            )
        } else {
            (
                AccountStatus::Disconnected,
                format!("cannot reach Zalo: {error}"),
            )
        }
    }

    /// Stops the account's listener now (the account was disabled).
    pub fn stop_account(&self, tenant: &str, account: &str) {
        self.inner.running.stop(tenant, account);
    }

    /// Lets the account's listener start at the next tick, not after `restart_after_ms`.
    pub fn retry_soon(&self, tenant: &str, account: &str) {
        self.inner.running.forget_ended(tenant, account);
    }
}

/// Why an account's credentials could not be opened.
#[derive(Debug)]
pub(crate) enum Unopened {
    /// Only a new QR login helps.
    NeedsLogin(String),
    /// Passing (the database, or a key this replica does not know yet): try again later.
    NotNow(String),
}
